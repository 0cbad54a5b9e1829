"""Database tables and engine: SQLAlchemy 2 (async), SQLite in WAL mode by default, or
PostgreSQL; the schema's revision and its upgrade through Alembic (app/migrations)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import stamina
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Update,
    bindparam,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 512
#: The shape of the tables, recorded in ``app_meta``. 2: ``movies`` carries its genres (JSON)
#: and its rating aggregates (count and sum), so a page needs neither a join nor a GROUP BY.
SCHEMA_VERSION = 2
SCHEMA_VERSION_KEY = "schema_version"
#: Alembic's scripts; revision 0001 is schema version 2 exactly as create_schema made it.
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: The revision a database made before migrations (schema version 2) is stamped with.
BASELINE_REVISION = "0001"
#: PostgreSQL advisory lock keys (any 64-bit numbers, fixed): one upgrader at a time.
MIGRATION_LOCK_KEY = 0x6D6F7669_65000001
ALEMBIC_VERSION_TABLE = "alembic_version"
#: How often a process waiting for the schema looks at its revision.
SCHEMA_POLL_SECONDS = 0.5
#: Films per statement when aggregates are recomputed for a list of ids (SQLite's variable limit).
_REFRESH_BATCH = 500


class UTCDateTime(TypeDecorator[datetime]):
    """Store aware datetimes as UTC; read them back aware (SQLite forgets the zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware (RFC 3339 needs the offset)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class MovieRow(Base):
    """A film of the catalog, with its genres and rating aggregates denormalised for reads.

    ``genres`` (display names in order) mirrors ``movie_genres``, which the genre filter
    queries; ``rating_count``/``rating_sum`` mirror ``ratings``. Every write path keeps
    them in step in its own transaction (see app.repository and refresh_rating_aggregates).
    """

    __tablename__ = "movies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200), index=True)
    year: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # No onupdate: the aggregate and upgrade UPDATEs must not touch it; a replace sets it.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # server_default: ALTER TABLE ... ADD COLUMN of an upgrade needs one for NOT NULL.
    genres: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    rating_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rating_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class GenreRow(Base):
    """One genre of one film (a table, so the genre filter is portable SQL)."""

    __tablename__ = "movie_genres"

    movie_id: Mapped[int] = mapped_column(
        ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True
    )
    genre: Mapped[str] = mapped_column(String(40), primary_key=True)
    genre_key: Mapped[str] = mapped_column(String(40), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class RatingRow(Base):
    """One user's score for one film; rating again replaces it."""

    __tablename__ = "ratings"
    __table_args__ = (Index("ix_ratings_movie", "movie_id"),)

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    movie_id: Mapped[int] = mapped_column(
        ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True
    )
    score: Mapped[float] = mapped_column(Float)
    rated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class MetaRow(Base):
    """Facts about the database itself, e.g. that the demo catalog was seeded."""

    __tablename__ = "app_meta"

    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class RecommendationRow(Base):
    """The latest recommendations of one user, as the worker computed them."""

    __tablename__ = "recommendations"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(40))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    generated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    computed_ms: Mapped[float] = mapped_column(Float, default=0.0)


_MOVIES = Base.metadata.tables[MovieRow.__tablename__]
_RATINGS = Base.metadata.tables[RatingRow.__tablename__]
_META = Base.metadata.tables[MetaRow.__tablename__]


def create_engine(database_url: str) -> AsyncEngine:
    """An async engine; for SQLite: WAL, a busy timeout and enforced foreign keys."""
    url = make_url(database_url)
    is_sqlite = url.get_backend_name() == "sqlite"
    if is_sqlite and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_pre_ping=not is_sqlite)
    if is_sqlite:
        _configure_sqlite(engine)
    return engine


def _is_locked(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


@stamina.retry(
    on=_is_locked,
    attempts=None,
    timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
    wait_initial=0.01,
    wait_max=0.1,
)
def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL (once per file; later connections find it so). On a new file
    that other processes are opening at the same moment, SQLite can answer "database is locked"
    here without calling the busy handler: wait and try again within the busy timeout."""
    cursor.execute("PRAGMA journal_mode=WAL")


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the API read while the worker writes; busy_timeout makes concurrent
        # writers wait for the lock instead of failing with "database is locked".
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")  # first: WAL needs a lock
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A bounded page cache per connection (SQLite's default is 2 MiB): the pool keeps up to
        # 15 connections, and their caches filling as the ratings table grows were most of the
        # API's memory growth under a long load.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_schema(engine: AsyncEngine) -> str:
    """Upgrade the database to the head revision and return it: idempotent, and safe when
    several processes (``python -m app.migrate`` of several deploys) run it at once.

    When the database is at the head revision this only reads. Otherwise the whole
    check-adopt-upgrade runs in one transaction that the upgraders take in turns: on SQLite a
    ``BEGIN IMMEDIATE`` (``busy_timeout`` makes the others wait), on PostgreSQL a transaction
    holding an advisory lock (its DDL is transactional too). The one that gets the lock second
    finds the head revision recorded and changes nothing. A database made before migrations
    by the old ``create_schema`` is adopted: upgraded in place to schema version 2 as before,
    then stamped as revision 0001.
    """
    head = head_revision()
    async with engine.connect() as conn:
        if await conn.run_sync(_current_revision) == head:
            return head
        await conn.rollback()
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        revision = await conn.run_sync(_upgrade_to_head)
        await conn.commit()
    return revision


def _alembic_config(sync_conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = sync_conn
    return config


def head_revision() -> str:
    """The newest revision this build's migrations know (what its code needs)."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None  # app/migrations always holds revision 0001
    return head


def _current_revision(sync_conn: Connection) -> str | None:
    # Read directly rather than through Alembic's MigrationContext, which logs a line at INFO
    # each time (readiness probes ask often).
    if not inspect(sync_conn).has_table(ALEMBIC_VERSION_TABLE):
        return None
    found = sync_conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if found is None else str(found)


def _upgrade_to_head(sync_conn: Connection) -> str:
    """Inside the locked transaction: adopt a pre-migration database, then upgrade to head."""
    config = _alembic_config(sync_conn)
    if _current_revision(sync_conn) is None and "movies" in inspect(sync_conn).get_table_names():
        _create_or_upgrade(sync_conn)  # version 1 -> 2 in place, as create_schema did
        command.stamp(config, BASELINE_REVISION)
    command.upgrade(config, "head")
    revision = _current_revision(sync_conn)
    assert revision is not None
    return revision


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The database's schema revision (None: not migrated yet)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision)


class SchemaNotReady(Exception):
    """The database is not at the revision this build needs; the message says what to run."""


async def wait_for_schema(engine: AsyncEngine, timeout_seconds: float) -> str:
    """Wait until the database is at this build's head revision and return it; raise
    :class:`SchemaNotReady` after ``timeout_seconds`` (``python -m app.migrate`` upgrades it,
    once per deploy: replicas never race to migrate).

    An unreachable database counts as not ready yet, until the deadline.
    """
    head = head_revision()
    deadline = time.monotonic() + timeout_seconds
    while True:
        current: str | None = None
        reachable = True
        try:
            current = await schema_revision(engine)
        except (OSError, SQLAlchemyError):
            reachable = False
        if current == head:
            return head
        if time.monotonic() >= deadline:
            found = current or ("none" if reachable else "unknown (database unreachable)")
            raise SchemaNotReady(
                f"database schema is at revision {found}, this build needs {head}: "
                "run `python -m app.migrate`"
            )
        await asyncio.sleep(SCHEMA_POLL_SECONDS)


def _recorded_version(sync_conn: Connection) -> int:
    table = _META
    value = sync_conn.execute(
        select(table.c.value).where(table.c.key == SCHEMA_VERSION_KEY)
    ).scalar_one_or_none()
    return int(value) if value is not None else 1


def _create_or_upgrade(sync_conn: Connection) -> None:
    """Inside the schema transaction: create missing tables, add missing columns, backfill."""
    existing = set(inspect(sync_conn).get_table_names())
    had_movies = "movies" in existing
    Base.metadata.create_all(sync_conn)
    if had_movies and _recorded_version(sync_conn) < SCHEMA_VERSION:
        _upgrade_movies(sync_conn)
    _record_version(sync_conn)


def _upgrade_movies(sync_conn: Connection) -> None:
    """Version 1 -> 2: add genres and the rating aggregates to ``movies`` and fill them."""
    table = _MOVIES
    present = {column["name"] for column in inspect(sync_conn).get_columns("movies")}
    for name in ("genres", "rating_count", "rating_sum"):
        if name not in present:
            spec = CreateColumn(table.c[name]).compile(dialect=sync_conn.dialect)
            sync_conn.exec_driver_sql(f"ALTER TABLE movies ADD COLUMN {spec}")
    genres: dict[int, list[str]] = {}
    rows = sync_conn.execute(
        select(GenreRow.movie_id, GenreRow.genre).order_by(GenreRow.movie_id, GenreRow.position)
    )
    for movie_id, genre in rows:
        genres.setdefault(movie_id, []).append(genre)
    if genres:
        sync_conn.execute(
            update(table).where(table.c.id == bindparam("movie_id")),
            [{"movie_id": movie_id, "genres": names} for movie_id, names in genres.items()],
        )
    sync_conn.execute(rating_aggregates_statement())


def _record_version(sync_conn: Connection) -> None:
    table = _META
    if _recorded_version(sync_conn) >= SCHEMA_VERSION:
        return  # never lower a newer version's number
    sync_conn.execute(table.delete().where(table.c.key == SCHEMA_VERSION_KEY))
    sync_conn.execute(table.insert().values(key=SCHEMA_VERSION_KEY, value=str(SCHEMA_VERSION)))


def rating_aggregates_statement() -> Update:
    """``UPDATE movies`` recomputing both aggregates from ``ratings`` (correlated subqueries)."""
    movies = _MOVIES
    ratings = _RATINGS
    of_film = ratings.c.movie_id == movies.c.id
    return update(movies).values(
        rating_count=select(func.count()).where(of_film).scalar_subquery(),
        rating_sum=select(func.coalesce(func.sum(ratings.c.score), 0.0))
        .where(of_film)
        .scalar_subquery(),
    )


async def refresh_rating_aggregates(
    conn: AsyncConnection, movie_ids: Sequence[int] | None = None
) -> None:
    """Recompute ``rating_count``/``rating_sum`` from ``ratings`` (None: every film).

    Call it in the transaction that bulk-inserts ratings (seeding, benchmarks), so readers
    never see ratings without their aggregates.
    """
    statement = rating_aggregates_statement()
    if movie_ids is None:
        await conn.execute(statement)
        return
    ids = sorted(set(movie_ids))
    for start in range(0, len(ids), _REFRESH_BATCH):
        batch = ids[start : start + _REFRESH_BATCH]
        await conn.execute(statement.where(_MOVIES.c.id.in_(batch)))
