"""Database tables and engine: SQLAlchemy 2 (async), SQLite in WAL mode by default."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    event,
    inspect,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_TIMEOUT_MS = 10_000


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
    """A film of the catalog."""

    __tablename__ = "movies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200), index=True)
    year: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    genres: Mapped[list[GenreRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="GenreRow.position"
    )


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


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the API read while the worker writes; busy_timeout makes concurrent
        # writers wait for the lock instead of failing with "database is locked".
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")  # first: WAL needs a lock
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables: idempotent, and safe when the API and worker start together.

    When every table exists this only reads, so it never waits for another process's
    write transaction. Otherwise, on SQLite, the check-then-create of every table runs
    inside one ``BEGIN IMMEDIATE`` transaction, so processes starting together take
    turns (``busy_timeout`` makes the others wait) instead of racing table by table:
    the sqlite3 module would autocommit each ``CREATE TABLE``, and a second process
    could see some of the first one's tables and not others.
    """
    async with engine.connect() as conn:
        if await conn.run_sync(_schema_is_complete):
            return
        await conn.rollback()
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        await conn.run_sync(Base.metadata.create_all)
        await conn.commit()


def _schema_is_complete(sync_conn: Connection) -> bool:
    return set(Base.metadata.tables) <= set(inspect(sync_conn).get_table_names())
