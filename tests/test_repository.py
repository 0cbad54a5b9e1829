"""The catalog's read path (one statement, JSON bytes) and the aggregates every write keeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import to_json
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import repository
from app.db import (
    GenreRow,
    MovieRow,
    RatingRow,
    create_engine,
    create_schema,
    refresh_rating_aggregates,
    session_factory,
)
from app.models import Movie, MovieIn, MoviePage, RatingIn
from app.seed import FILMS, seed_demo_catalog


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database of each kind (SQLite, PostgreSQL)."""
    engine = create_engine(database_url)
    await create_schema(engine)
    yield engine
    await engine.dispose()


async def _reference_movies(session: AsyncSession, ids: list[int]) -> list[Movie]:
    """Films as the code before the denormalised columns built them: genres from
    movie_genres, the average and count grouped from ratings."""
    rows = (
        await session.execute(
            select(MovieRow.id, MovieRow.title, MovieRow.year, MovieRow.created_at)
            .add_columns(MovieRow.updated_at)
            .where(MovieRow.id.in_(ids))
            .order_by(MovieRow.id)
        )
    ).all()
    genres: dict[int, list[str]] = {movie_id: [] for movie_id in ids}
    for movie_id, genre in await session.execute(
        select(GenreRow.movie_id, GenreRow.genre)
        .where(GenreRow.movie_id.in_(ids))
        .order_by(GenreRow.movie_id, GenreRow.position)
    ):
        genres[movie_id].append(genre)
    stats = {
        movie_id: (average, count)
        for movie_id, average, count in await session.execute(
            select(RatingRow.movie_id, func.avg(RatingRow.score), func.count())
            .where(RatingRow.movie_id.in_(ids))
            .group_by(RatingRow.movie_id)
        )
    }
    movies = []
    for movie_id, title, year, created_at, updated_at in rows:
        average, count = stats.get(movie_id, (None, 0))
        movies.append(
            Movie(
                id=movie_id,
                title=title,
                year=year,
                genres=genres[movie_id],
                rating_average=round(average, 2) if average is not None else None,
                rating_count=count,
                created_at=created_at,
                updated_at=updated_at,
            )
        )
    return movies


async def _reference_page(
    session: AsyncSession, *, limit: int, offset: int, genre: str | None
) -> bytes:
    """Today's list_movies, computed from movie_genres and ratings, as JSON bytes."""
    query = select(MovieRow.id).order_by(MovieRow.id)
    if genre is not None:
        query = query.where(
            MovieRow.id.in_(select(GenreRow.movie_id).where(GenreRow.genre_key == genre.casefold()))
        )
    every = list((await session.scalars(query)).all())
    items = await _reference_movies(session, every[offset : offset + limit])
    page = MoviePage(items=items, total=len(every), limit=limit, offset=offset)
    return page.model_dump_json().encode()


async def _edit_catalog(session: AsyncSession) -> None:
    """Edits of every kind on the seeded catalog: replaced genres, re-ratings, deletions,
    new unrated films, a film with no genres."""
    await repository.replace_movie(
        session, 2, MovieIn(title="The Godfather (restored)", year=1972, genres=["drama", "Epic"])
    )
    await repository.replace_movie(session, 3, MovieIn(title="The Dark Knight", year=2008))
    await repository.rate_movie(session, 1, RatingIn(user_id=9001, score=0.5))
    await repository.rate_movie(session, 1, RatingIn(user_id=9001, score=5))
    await repository.rate_movie(session, 4, RatingIn(user_id=1, score=1))
    for movie_id in (5, 20, len(FILMS)):
        assert await repository.delete_movie(session, movie_id)
    await repository.create_movie(session, MovieIn(title="Unrated", year=2020, genres=["Drama"]))
    await repository.create_movie(session, MovieIn(title="Bare", year=2021))
    rated = await repository.create_movie(
        session, MovieIn(title="Rated once", year=2022, genres=["Sci-Fi", "Comedy"])
    )
    await repository.rate_movie(session, rated.id, RatingIn(user_id=7, score=3.5))


async def _assert_pages_match_reference(session: AsyncSession) -> None:
    for genre in (None, "drama", "Sci-Fi", "EPIC", "Nope"):
        for limit in (1, 7, 50, 100):
            for offset in (0, 3, 49, 64, 65, 1_000):
                page = await repository.page_json(session, limit=limit, offset=offset, genre=genre)
                expected = await _reference_page(session, limit=limit, offset=offset, genre=genre)
                assert page.body == expected, (genre, limit, offset)
                model = MoviePage.model_validate_json(page.body)
                assert page.movie_ids == tuple(movie.id for movie in model.items)


@pytest.mark.parametrize("edited", [False, True], ids=["seeded", "edited"])
async def test_page_json_is_byte_identical_to_the_model_page(
    engine: AsyncEngine, edited: bool
) -> None:
    """page_json's bytes equal MoviePage.model_dump_json() of films computed from
    movie_genres and ratings, for every filter, page size and offset (past the end too)."""
    await seed_demo_catalog(engine)
    async with session_factory(engine)() as session:
        if edited:
            await _edit_catalog(session)
        await _assert_pages_match_reference(session)


async def test_movie_json_and_the_model_functions_match_the_reference(
    engine: AsyncEngine,
) -> None:
    """movie_json is each film's Movie JSON (None when missing); list_movies and get_movie
    still return the same models."""
    await seed_demo_catalog(engine)
    async with session_factory(engine)() as session:
        await _edit_catalog(session)
        ids = list((await session.scalars(select(MovieRow.id).order_by(MovieRow.id))).all())
        for movie, movie_id in zip(await _reference_movies(session, ids), ids, strict=True):
            assert (
                await repository.movie_json(session, movie_id) == movie.model_dump_json().encode()
            )
            assert await repository.get_movie(session, movie_id) == movie
        assert await repository.movie_json(session, 5) is None
        assert await repository.get_movie(session, 5) is None
        page = await repository.list_movies(session, limit=10, offset=60, genre=None)
        assert page.model_dump_json().encode() == await _reference_page(
            session, limit=10, offset=60, genre=None
        )


async def test_an_empty_catalog_pages_to_no_items_and_a_zero_total(engine: AsyncEngine) -> None:
    """No films: an empty page, total 0, no ids."""
    async with session_factory(engine)() as session:
        page = await repository.page_json(session, limit=50, offset=0, genre=None)
    assert page.body == b'{"items":[],"total":0,"limit":50,"offset":0}'
    assert page.movie_ids == ()


async def _stored(engine: AsyncEngine, movie_id: int) -> tuple[list[str], int, float] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(MovieRow.genres, MovieRow.rating_count, MovieRow.rating_sum).where(
                    MovieRow.id == movie_id
                )
            )
        ).first()
    return None if row is None else (row[0], row[1], row[2])


async def test_every_write_keeps_the_stored_genres_and_aggregates(engine: AsyncEngine) -> None:
    """Create, rate, re-rate (replaces), replace genres, delete: the movies row follows;
    ratings leave updated_at alone."""
    async with session_factory(engine)() as session:
        created = await repository.create_movie(
            session, MovieIn(title="Heat", year=1995, genres=["Crime", "Drama"])
        )
        movie_id = created.id
        assert await _stored(engine, movie_id) == (["Crime", "Drama"], 0, 0.0)
        await repository.rate_movie(session, movie_id, RatingIn(user_id=1, score=2))
        await repository.rate_movie(session, movie_id, RatingIn(user_id=2, score=3.5))
        assert await _stored(engine, movie_id) == (["Crime", "Drama"], 2, 5.5)
        await repository.rate_movie(session, movie_id, RatingIn(user_id=1, score=4.5))
        assert await _stored(engine, movie_id) == (["Crime", "Drama"], 2, 8.0)
        rated = await repository.get_movie(session, movie_id)
        assert rated is not None
        assert rated.updated_at == created.updated_at  # a rating is no edit of the film
        result = await repository.replace_movie(
            session, movie_id, MovieIn(title="Ronin", year=1998, genres=["Thriller"])
        )
        assert result is not None
        assert result.regrouped
        replaced = result.movie
        assert (replaced.genres, replaced.rating_count, replaced.rating_average) == (
            ["Thriller"],
            2,
            4.0,
        )
        assert await _stored(engine, movie_id) == (["Thriller"], 2, 8.0)
        keys = (
            await session.scalars(select(GenreRow.genre_key).where(GenreRow.movie_id == movie_id))
        ).all()
        assert list(keys) == ["thriller"]
        same = await repository.replace_movie(
            session, movie_id, MovieIn(title="Ronin", year=1998, genres=["THRILLER"])
        )
        assert same is not None
        assert not same.regrouped  # the same genre, spelled differently: pages keep the film
        assert (
            await repository.rate_movie(session, movie_id + 1, RatingIn(user_id=1, score=3)) is None
        )
        assert (
            await repository.replace_movie(session, movie_id + 1, MovieIn(title="X", year=2000))
            is None
        )
        assert await repository.delete_movie(session, movie_id)
        assert await _stored(engine, movie_id) is None
        remaining = await session.scalar(select(func.count()).select_from(RatingRow))
        assert remaining == 0


async def test_concurrent_raters_on_separate_engines_all_succeed_and_count_right(
    database_url: str,
) -> None:
    """Eight raters, each on its own engine, rate and re-rate the same films at once: no
    error (SQLite: the upsert takes the write lock first; PostgreSQL: the film row is locked
    first), and the aggregates equal the ratings."""
    url = database_url
    setup = create_engine(url)
    await create_schema(setup)
    async with session_factory(setup)() as session:
        films = [
            (await repository.create_movie(session, MovieIn(title=f"F{n}", year=2000))).id
            for n in range(3)
        ]

    async def rater(user_id: int) -> int:
        engine = create_engine(url)
        sessions = session_factory(engine)
        done = 0
        try:
            for n in range(40):
                async with sessions() as session:
                    score = 0.5 + (user_id + n) % 10 / 2
                    rating = RatingIn(user_id=user_id, score=score)
                    if await repository.rate_movie(session, films[n % 3], rating) is not None:
                        done += 1
        finally:
            await engine.dispose()
        return done

    assert await asyncio.gather(*(rater(user) for user in range(1, 9))) == [40] * 8
    async with setup.connect() as conn:
        truth = {
            movie_id: (count, total)
            for movie_id, count, total in await conn.execute(
                select(RatingRow.movie_id, func.count(), func.sum(RatingRow.score)).group_by(
                    RatingRow.movie_id
                )
            )
        }
        stored = {
            movie_id: (count, total)
            for movie_id, count, total in await conn.execute(
                select(MovieRow.id, MovieRow.rating_count, MovieRow.rating_sum)
            )
        }
    await setup.dispose()
    assert stored == truth
    assert {count for count, _ in stored.values()} == {8}


async def test_refresh_rating_aggregates_recomputes_the_given_films_or_all(
    engine: AsyncEngine,
) -> None:
    """Aggregates set wrong are recomputed from ratings: only the named films, or every film."""
    await seed_demo_catalog(engine)

    async def aggregates() -> dict[int, tuple[int, float]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(MovieRow.id, MovieRow.rating_count, MovieRow.rating_sum)
            )
            return {movie_id: (count, total) for movie_id, count, total in rows}

    right = await aggregates()
    assert all(count > 0 for count, _ in right.values())
    async with engine.begin() as conn:
        await conn.execute(update(MovieRow).values(rating_count=-1, rating_sum=-1.0))
        await refresh_rating_aggregates(conn, [1, 2])
    partly: dict[int, Any] = await aggregates()
    assert partly[1] == right[1]
    assert partly[2] == right[2]
    assert partly[3] == (-1, -1.0)
    async with engine.begin() as conn:
        await refresh_rating_aggregates(conn)
    assert await aggregates() == right


@pytest.mark.parametrize(
    "stored",
    [
        "2026-11-28 15:34:51.260000",
        "2026-11-28 15:34:51.000000",
        "2026-11-28 15:34:51.000005",
        "2026-11-28 15:34:51",
        "2026-11-28T15:34:51.5",  # not SQLAlchemy's format: parsed the slow way
    ],
)
def test_a_stored_timestamp_is_written_as_pydantic_writes_the_datetime(stored: str) -> None:
    """The string fast path gives the same JSON as the aware datetime would."""
    expected = datetime.fromisoformat(stored).replace(tzinfo=UTC)
    assert to_json(repository._timestamp(stored)) == to_json(expected)


async def test_writers_of_one_process_queue_for_sqlite_instead_of_polling_its_lock(
    tmp_path: Path,
) -> None:
    """With SQLite's busy wait switched off, twenty concurrent ratings through one engine (its
    pooled connections) all succeed: the process lets one writer in at a time, so none meets
    a locked database (SQLite's busy handler would otherwise sleep and poll)."""
    from sqlalchemy import event

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}")

    @event.listens_for(engine.sync_engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.cursor().execute("PRAGMA busy_timeout=0")

    try:
        await create_schema(engine)
        sessions = session_factory(engine)
        async with sessions() as session:
            film = (await repository.create_movie(session, MovieIn(title="F", year=2000))).id

        async def rate(user_id: int) -> bool:
            async with sessions() as session:
                rating = RatingIn(user_id=user_id, score=4)
                return await repository.rate_movie(session, film, rating) is not None

        assert await asyncio.gather(*(rate(user) for user in range(1, 21))) == [True] * 20
        async with sessions() as session:
            assert (await repository.get_movie(session, film)).rating_count == 20  # type: ignore[union-attr]
    finally:
        await engine.dispose()
