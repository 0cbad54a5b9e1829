"""Catalog and ratings persistence: async SQLAlchemy queries, returning API models or, on the
read path, their JSON bytes straight from selected columns."""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from pydantic_core import from_json, to_json
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Text,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import (
    Base,
    GenreRow,
    MovieRow,
    RatingRow,
    RecommendationRow,
    rating_aggregates_statement,
    utcnow,
)
from app.models import Movie, MovieIn, MoviePage, Rating, RatingIn, RecommendedMovie

P = ParamSpec("P")
R = TypeVar("R")

# One SQLite writer at a time per engine, queued in this process: SQLite's own busy handler makes
# a waiting writer sleep and poll (1, 2, 5 ... 100 ms at a time), which under a steady stream of
# ratings left some of them waiting a second or more. Other processes (the worker) still meet
# busy_timeout, rarely.
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def _one_writer_at_a_time(
    write: Callable[Concatenate[AsyncSession, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[AsyncSession, P], Coroutine[Any, Any, R]]:
    """Run a write transaction alone among this process's writers when the database is SQLite."""

    @functools.wraps(write)
    async def serialised(session: AsyncSession, /, *args: P.args, **kwargs: P.kwargs) -> R:
        engine = session.sync_session.get_bind()
        if engine.dialect.name != "sqlite":
            return await write(session, *args, **kwargs)
        lock = _SQLITE_WRITERS.setdefault(engine, asyncio.Lock())
        async with lock:
            return await write(session, *args, **kwargs)

    return serialised


_MOVIES = Base.metadata.tables[MovieRow.__tablename__]
_GENRES = Base.metadata.tables[GenreRow.__tablename__]
_RATINGS = Base.metadata.tables[RatingRow.__tablename__]

#: The columns a film is read with, in ``Movie``'s field order: plain Core columns of the
#: table (no ORM entities on the read path). ``genres`` comes as its stored JSON text,
#: parsed by pydantic_core rather than the json module.
_MOVIE_COLUMNS = (
    _MOVIES.c.id,
    _MOVIES.c.title,
    _MOVIES.c.year,
    # CAST, not a Python-side coercion: PostgreSQL drivers would otherwise parse the JSON.
    cast(_MOVIES.c.genres, Text).label("genres"),
    _MOVIES.c.rating_sum,
    _MOVIES.c.rating_count,
    # As stored: SQLite's text is turned into RFC 3339 by string slicing (_timestamp), which
    # skips parsing 100 datetimes per page; other drivers hand back datetimes as before.
    type_coerce(_MOVIES.c.created_at, String).label("created_at"),
    type_coerce(_MOVIES.c.updated_at, String).label("updated_at"),
)

# SQLAlchemy's SQLite DateTime storage: "2026-11-28 15:34:51.260000" (UTC, see UTCDateTime).
_SQLITE_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.(\d{6}))?")


def _timestamp(value: str | datetime) -> str | datetime:
    """A stored UTC timestamp exactly as pydantic writes an aware UTC datetime in JSON:
    ``2026-11-28T15:34:51.260000Z``, without a fraction when it is zero."""
    if not isinstance(value, str):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    match = _SQLITE_TIMESTAMP.fullmatch(value)
    if match is None:  # written by something else: parse it the slow way
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    fraction = match.group(1)
    tail = "" if fraction is None or fraction == "000000" else "." + fraction
    return f"{value[:10]}T{value[11:19]}{tail}Z"


_REFRESH_ONE = rating_aggregates_statement()


@dataclass(frozen=True, slots=True)
class JsonPage:
    """A page of films as the API's ``MoviePage`` JSON, and the ids of its films in order."""

    body: bytes
    movie_ids: tuple[int, ...]


def _genre_rows(movie_id: int, genres: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"movie_id": movie_id, "genre": genre, "genre_key": genre.casefold(), "position": position}
        for position, genre in enumerate(genres)
    ]


def _average(rating_sum: float, rating_count: int) -> float | None:
    return round(rating_sum / rating_count, 2) if rating_count else None


def _movie_dict(row: Sequence[Any]) -> dict[str, Any]:
    """One selected film row as ``Movie``'s fields, in its order (so the JSON matches)."""
    movie_id, title, year, genres, rating_sum, rating_count, created_at, updated_at = row
    return {
        "id": movie_id,
        "title": title,
        "year": year,
        "genres": from_json(genres),
        "rating_average": _average(rating_sum, rating_count),
        "rating_count": rating_count,
        "created_at": _timestamp(created_at),
        "updated_at": _timestamp(updated_at),
    }


def _page_statement(*, filtered: bool) -> Select[Any]:
    """One statement for a page: the filter's total LEFT JOIN the page's films.

    The one-row total on the left keeps a row (films' columns NULL) when the page is empty,
    so an offset past the end still reports the total. Portable SQL: no dialect functions.
    Built once per shape; limit, offset and genre are bound parameters.
    """
    where: list[ColumnElement[bool]] = []
    if filtered:
        of_genre = select(_GENRES.c.movie_id).where(_GENRES.c.genre_key == bindparam("genre_key"))
        where.append(_MOVIES.c.id.in_(of_genre))
    total = select(func.count().label("total")).select_from(_MOVIES).where(*where).subquery()
    page = (
        select(*_MOVIE_COLUMNS)
        .where(*where)
        .order_by(_MOVIES.c.id)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
        .subquery()
    )
    return (
        select(total.c.total, *page.c)
        .select_from(total.outerjoin(page, true()))
        .order_by(page.c.id)
    )


_PAGE = _page_statement(filtered=False)
_PAGE_OF_GENRE = _page_statement(filtered=True)
_ONE_MOVIE = select(*_MOVIE_COLUMNS).where(_MOVIES.c.id == bindparam("movie_id"))


_SQLITE = sqlite.dialect()
_SQLITE_SQL: dict[Any, tuple[str, tuple[str, ...], dict[str, Any]]] = {}


async def _read(
    session: AsyncSession, statement: Select[Any], params: dict[str, Any]
) -> Sequence[Sequence[Any]]:
    """The rows of a read-path statement (one of this module's, built once at import).

    On SQLite the compiled SQL goes straight to aiosqlite's ``execute_fetchall``: one hand-off
    to its worker thread instead of SQLAlchemy's cursor, execute, fetch and close (four). The
    statements select only columns that need no result processing (timestamps and genres are
    read as text on purpose), so the rows are the same either way. Elsewhere: SQLAlchemy.
    """
    driver = await _aiosqlite(session)
    if driver is None:
        conn = await session.connection()
        result: Sequence[Sequence[Any]] = (await conn.execute(statement, params)).all()
        return result
    rows = await driver.execute_fetchall(*_sqlite_sql(statement, params))
    return list(rows)


async def _aiosqlite(session: AsyncSession) -> Any | None:
    """The session's aiosqlite connection when the database is SQLite through aiosqlite."""
    conn = await session.connection()
    if conn.dialect.name != "sqlite":
        return None
    driver = (await conn.get_raw_connection()).driver_connection
    return driver if hasattr(driver, "execute_fetchall") else None


def _sqlite_sql(statement: Any, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """A statement of this module compiled once for SQLite, with its positional parameters
    (``params`` by name, the statement's own constants for the rest)."""
    compiled = _SQLITE_SQL.get(statement)
    if compiled is None:
        sql = statement.compile(dialect=_SQLITE)
        compiled = _SQLITE_SQL[statement] = (
            sql.string,
            tuple(sql.positiontup or ()),
            dict(sql.params),
        )
    sql_text, names, constants = compiled
    return sql_text, [params[name] if name in params else constants[name] for name in names]


async def page_json(
    session: AsyncSession, *, limit: int, offset: int, genre: str | None
) -> JsonPage:
    """One page of films ordered by id, with the filter's total, as ``MoviePage`` JSON bytes.

    One SQL statement, no ORM objects, encoded once (pydantic_core encodes exactly as the
    models' ``model_dump_json`` does).
    """
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if genre is not None:
        params["genre_key"] = genre.casefold()
    rows = await _read(session, _PAGE if genre is None else _PAGE_OF_GENRE, params)
    total = rows[0][0] if rows else 0
    items = [_movie_dict(row[1:]) for row in rows if row[1] is not None]
    body = to_json({"items": items, "total": total, "limit": limit, "offset": offset})
    return JsonPage(body=body, movie_ids=tuple(item["id"] for item in items))


async def movie_json(session: AsyncSession, movie_id: int) -> bytes | None:
    """One film as ``Movie`` JSON bytes (one statement), or None."""
    found = await _read(session, _ONE_MOVIE, {"movie_id": movie_id})
    row = found[0] if found else None
    return None if row is None else to_json(_movie_dict(row))


async def list_movies(
    session: AsyncSession, *, limit: int, offset: int, genre: str | None
) -> MoviePage:
    """One page of films ordered by id, with the total count for the filter."""
    page = await page_json(session, limit=limit, offset=offset, genre=genre)
    return MoviePage.model_validate_json(page.body)


async def get_movie(session: AsyncSession, movie_id: int) -> Movie | None:
    """One film, or None."""
    body = await movie_json(session, movie_id)
    return None if body is None else Movie.model_validate_json(body)


@_one_writer_at_a_time
async def create_movie(session: AsyncSession, data: MovieIn) -> Movie:
    """Insert a film (and its genre rows) and commit."""
    now = utcnow()
    movie_id = await session.scalar(
        insert(MovieRow)
        .values(
            title=data.title, year=data.year, genres=data.genres, created_at=now, updated_at=now
        )
        .returning(MovieRow.id)
    )
    assert movie_id is not None  # INSERT ... RETURNING always returns the new row
    if data.genres:
        await session.execute(insert(GenreRow), _genre_rows(movie_id, data.genres))
    await session.commit()
    return Movie(
        id=movie_id,
        title=data.title,
        year=data.year,
        genres=data.genres,
        rating_average=None,
        rating_count=0,
        created_at=now,
        updated_at=now,
    )


@dataclass(frozen=True, slots=True)
class Replaced:
    """A replaced film, and whether its set of genres changed (which genre pages hold it)."""

    movie: Movie
    regrouped: bool


@_one_writer_at_a_time
async def replace_movie(session: AsyncSession, movie_id: int, data: MovieIn) -> Replaced | None:
    """Replace every field of a film and commit; None if it does not exist.

    The UPDATE comes first, so the transaction starts with a write (see ``rate_movie``); the
    old genres come back from deleting their rows, inside the same transaction.
    """
    row = (
        await session.execute(
            update(MovieRow)
            .where(MovieRow.id == movie_id)
            .values(title=data.title, year=data.year, genres=data.genres, updated_at=utcnow())
            .returning(*_MOVIE_COLUMNS)
        )
    ).first()
    if row is None:
        await session.rollback()
        return None
    old_keys = (
        await session.scalars(
            delete(GenreRow).where(GenreRow.movie_id == movie_id).returning(GenreRow.genre_key)
        )
    ).all()
    if data.genres:
        await session.execute(insert(GenreRow), _genre_rows(movie_id, data.genres))
    await session.commit()
    regrouped = set(old_keys) != {genre.casefold() for genre in data.genres}
    return Replaced(Movie(**_movie_dict(row)), regrouped)


@_one_writer_at_a_time
async def delete_movie(session: AsyncSession, movie_id: int) -> bool:
    """Delete a film with its genres and ratings; False if it did not exist."""
    result = await session.execute(delete(MovieRow).where(MovieRow.id == movie_id))
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _upsert_rating(dialect_insert: Any) -> Any:
    """INSERT ... ON CONFLICT (user, film) DO UPDATE, built once with bound parameters."""
    names = ("user_id", "movie_id", "score", "rated_at")
    statement = dialect_insert(_RATINGS).values({name: bindparam(name) for name in names})
    return statement.on_conflict_do_update(
        index_elements=[_RATINGS.c.user_id, _RATINGS.c.movie_id],
        set_={"score": statement.excluded.score, "rated_at": statement.excluded.rated_at},
    )


# Statements of the rating path, built once (index: is PostgreSQL).
_UPSERT_RATING = (_upsert_rating(sqlite.insert), _upsert_rating(postgresql.insert))
_REFRESH_FILM = _REFRESH_ONE.where(_MOVIES.c.id == bindparam("movie_id"))


@_one_writer_at_a_time
async def rate_movie(session: AsyncSession, movie_id: int, data: RatingIn) -> Rating | None:
    """Upsert a user's score for a film and update the film's aggregates, in one transaction;
    None if the film does not exist.

    SQLite: the upsert is the transaction's first statement, so it takes the write lock at
    once (``busy_timeout`` waits for it); a transaction that read first could fail to upgrade
    its snapshot (SQLITE_BUSY_SNAPSHOT, which no timeout retries) when another rater commits
    in between. A missing film fails the foreign key. The recompute then sees every
    committed rating, since writers are serialised.
    PostgreSQL (exercised when the PostgreSQL issue lands): the film row is locked first, so
    concurrent raters of one film take turns and each recompute, a new READ COMMITTED
    snapshot taken after the lock, sees the ratings committed before it.
    """
    now = utcnow()
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    if dialect == "postgresql":
        locked = await session.scalar(
            select(MovieRow.id).where(MovieRow.id == movie_id).with_for_update()
        )
        if locked is None:
            await session.rollback()
            return None
    values = {"user_id": data.user_id, "movie_id": movie_id, "score": data.score, "rated_at": now}
    driver = await _aiosqlite(session)
    if driver is not None:
        return await _rate_on_sqlite(driver, values)
    conn = await session.connection()
    try:
        await conn.execute(_UPSERT_RATING[dialect == "postgresql"], values)
    except IntegrityError:
        # No such film (never was, or deleted meanwhile): the foreign key.
        await session.rollback()
        return None
    await conn.execute(_REFRESH_FILM, {"movie_id": movie_id})
    await session.commit()
    return Rating(movie_id=movie_id, user_id=data.user_id, score=data.score, rated_at=now)


# How the column's own type (UTCDateTime on SQLite) stores a timestamp, for the raw driver path.
_STORE_RATED_AT: Any = _RATINGS.c.rated_at.type.bind_processor(_SQLITE)


async def _rate_on_sqlite(driver: Any, values: dict[str, Any]) -> Rating | None:
    """The rating transaction straight on aiosqlite: upsert (its implicit BEGIN takes the write
    lock), aggregates, commit - three hand-offs to its thread instead of SQLAlchemy's seven or
    so, which is how long this process's other writers wait for their turn."""
    stored = {**values, "rated_at": _STORE_RATED_AT(values["rated_at"])}
    try:
        await driver.execute_fetchall(*_sqlite_sql(_UPSERT_RATING[False], stored))
    except sqlite3.IntegrityError:
        # No such film (never was, or deleted meanwhile): the foreign key.
        await driver.rollback()
        return None
    await driver.execute_fetchall(*_sqlite_sql(_REFRESH_FILM, stored))
    await driver.commit()
    return Rating(
        movie_id=values["movie_id"],
        user_id=values["user_id"],
        score=values["score"],
        rated_at=values["rated_at"],
    )


async def user_has_ratings(session: AsyncSession, user_id: int) -> bool:
    """Whether a user rated any film (one lookup on the ratings primary key's leading column)."""
    return bool(await session.scalar(select(exists().where(RatingRow.user_id == user_id))))


async def count_movies(session: AsyncSession) -> int:
    """How many films the catalog holds."""
    return int(await session.scalar(select(func.count(MovieRow.id))) or 0)


async def get_recommendations(
    session: AsyncSession, user_id: int
) -> tuple[RecommendationRow, list[RecommendedMovie]] | None:
    """A user's stored recommendations with current titles (films deleted since are dropped)."""
    row = await session.get(RecommendationRow, user_id)
    if row is None:
        return None
    ids = [item["movie_id"] for item in row.items]
    titles = dict(
        (
            await session.execute(select(MovieRow.id, MovieRow.title).where(MovieRow.id.in_(ids)))
        ).all()
    )
    items = [
        RecommendedMovie(
            movie_id=item["movie_id"],
            title=titles[item["movie_id"]],
            score=item["score"],
            reason=item["reason"],
        )
        for item in row.items
        if item["movie_id"] in titles
    ]
    return row, items
