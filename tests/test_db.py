"""The database layer: WAL mode, and concurrent writers in separate processes lose nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from app import repository
from app.db import (
    SCHEMA_VERSION,
    Base,
    MovieRow,
    RatingRow,
    create_engine,
    create_schema,
    session_factory,
    utcnow,
)
from app.models import MovieIn
from app.seed import DEMO_USERS, FILMS, demo_ratings, load_generated, seed_demo_catalog

WRITER = """
import asyncio, sys
from app.db import create_engine, session_factory
from app.models import RatingIn
from app import repository

async def main(url, user, count):
    engine = create_engine(url)
    sessions = session_factory(engine)
    for n in range(count):
        async with sessions() as session:
            rating = RatingIn(user_id=user * 1000 + n, score=3)
            await repository.rate_movie(session, 1 + n % 20, rating)
    await engine.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def _create_schema_in_processes(url: str, count: int) -> None:
    """``count`` Python processes run create_schema on ``url`` at once; all must succeed."""
    code = (
        "import asyncio, sys; from app.db import create_engine, create_schema; "
        "asyncio.run(create_schema(create_engine(sys.argv[1])))"
    )
    starters = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, url, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(count)
    ]
    results = [await starter.communicate() for starter in starters]
    errors = [err.decode()[-300:] for _, err in results if err]
    assert [starter.returncode for starter in starters] == [0] * count, errors


async def test_concurrent_writer_processes_lose_no_rows(database_url: str) -> None:
    """Three processes insert ratings at once into one database: every row arrives."""
    url = database_url
    engine = create_engine(url)
    await create_schema(engine)
    await load_generated(engine, movies=20, ratings=0, users=1)
    writers = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, url, str(user), "150")
        for user in (1, 2, 3)
    ]
    assert [await writer.wait() for writer in writers] == [0, 0, 0]
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(RatingRow))).scalar_one() == 450
        if engine.dialect.name == "sqlite":
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await conn.execute(text("PRAGMA integrity_check"))).scalar_one() == "ok"
        counts = (await conn.execute(select(MovieRow.rating_count))).scalars().all()
        assert sum(counts) == 450
    await engine.dispose()


async def test_generated_data_set_is_large_and_deterministic(tmp_path: Path) -> None:
    """The benchmark loader adds the requested films and about the requested ratings, the same
    way every time."""
    totals = []
    for name in ("a.db", "b.db"):
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / name}")
        await create_schema(engine)
        movies, ratings = await load_generated(engine, movies=2_000, ratings=20_000, users=500)
        async with engine.connect() as conn:
            scores = (await conn.execute(select(func.sum(RatingRow.score)))).scalar_one()
        await engine.dispose()
        totals.append((movies, ratings, scores))
    assert totals[0] == totals[1]
    assert totals[0][0] == 2_000
    assert totals[0][1] == 20_000


@pytest.mark.parametrize("round_", range(3))
async def test_schema_creation_is_safe_from_several_processes_at_once(
    tmp_path: Path, round_: int
) -> None:
    """Several upgraders may run together on a fresh SQLite file: all succeed (PostgreSQL:
    tests/test_migrations.py).

    Without one locked transaction around the whole create, this lost the per-table
    race ("table ... already exists") in about one round in three.
    """
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    await _create_schema_in_processes(url, 6)
    engine = create_engine(url)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    assert {"movies", "movie_genres", "ratings", "recommendations", "app_meta"} <= tables


async def test_rating_a_film_deleted_meanwhile_is_not_found(database_url: str) -> None:
    """The rating's first statement is the write, so a film another connection deleted just
    before it fails the foreign key: None (404), not an IntegrityError (500), nothing stored."""
    from app.models import RatingIn

    engine = create_engine(database_url)
    other = create_engine(database_url)
    try:
        await create_schema(engine)
        await load_generated(engine, movies=1, ratings=0, users=1)
        async with engine.connect() as conn:  # the client saw the film
            assert (await conn.exec_driver_sql("SELECT count(*) FROM movies")).scalar() == 1
        async with other.begin() as conn:  # another replica deletes it
            await conn.exec_driver_sql("DELETE FROM movies")
        async with session_factory(engine)() as session:
            assert await repository.rate_movie(session, 1, RatingIn(user_id=1, score=3)) is None
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT count(*) FROM ratings")).scalar() == 0
    finally:
        await engine.dispose()
        await other.dispose()


async def test_replicas_starting_together_seed_the_catalog_once(database_url: str) -> None:
    """Three processes seed one fresh database at once: exactly one catalog (films and
    ratings, ids 1-65) is inserted."""
    url = database_url
    code = (
        "import asyncio, sys\n"
        "from app.db import create_engine, create_schema\n"
        "from app.seed import seed_demo_catalog\n"
        "async def main():\n"
        "    engine = create_engine(sys.argv[1])\n"
        "    await create_schema(engine)\n"
        "    print(await seed_demo_catalog(engine))\n"
        "asyncio.run(main())\n"
    )
    replicas = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, url, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    outputs = [int((await replica.communicate())[0]) for replica in replicas]
    assert sorted(outputs) == [0, 0, len(FILMS)]
    engine = create_engine(url)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT COUNT(*) FROM movies"))).scalar_one() == len(FILMS)
        assert (await conn.execute(text("SELECT MAX(id) FROM movies"))).scalar_one() == len(FILMS)
        assert (await conn.execute(text("SELECT COUNT(*) FROM ratings"))).scalar_one() == len(
            demo_ratings([(i + 1, genres) for i, (_, _, genres) in enumerate(FILMS)], utcnow())
        )
    await engine.dispose()


async def _seeded_ratings(url: str) -> list[tuple[int, int, float]]:
    engine = create_engine(url)
    await create_schema(engine)
    try:
        assert await seed_demo_catalog(engine) == len(FILMS)
        assert await seed_demo_catalog(engine) == 0
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(RatingRow.user_id, RatingRow.movie_id, RatingRow.score).order_by(
                    RatingRow.user_id, RatingRow.movie_id
                )
            )
            return [(user, movie, score) for user, movie, score in rows]
    finally:
        await engine.dispose()


async def test_demo_seed_rates_the_catalog_realistically_once_and_the_same_every_time(
    tmp_path: Path,
) -> None:
    """Two fresh databases get identical ratings: 300 users (42 among them) rating 10-40 films
    each in half steps from 0.5 to 5; seeding again adds nothing."""
    first = await _seeded_ratings(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    assert first == await _seeded_ratings(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    per_user = Counter(user for user, _, _ in first)
    assert sorted(per_user) == list(range(1, DEMO_USERS + 1))
    assert DEMO_USERS == 300
    assert min(per_user.values()) >= 10
    assert max(per_user.values()) <= 40
    scores = {score for _, _, score in first}
    assert scores <= {n / 2 for n in range(1, 11)}
    assert len(scores) >= 6  # a spread, not one score
    assert {movie for _, movie, _ in first} == set(range(1, len(FILMS) + 1))
    assert 42 in per_user


async def test_seeding_leaves_a_database_that_holds_films_alone(database_url: str) -> None:
    """A database with films loaded by other means gets neither the films nor the ratings;
    a film added later gets the next id."""
    engine = create_engine(database_url)
    await create_schema(engine)
    await load_generated(engine, movies=5, ratings=0, users=1)
    assert await seed_demo_catalog(engine) == 0
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT COUNT(*) FROM ratings"))).scalar_one() == 0
    async with session_factory(engine)() as session:
        added = await repository.create_movie(session, MovieIn(title="Later", year=2001))
    assert added.id == 6
    await engine.dispose()


# The tables as version 1 (before the denormalised columns) created them, from its models.
VERSION_1_DDL = """
CREATE TABLE app_meta (
    "key" VARCHAR(60) NOT NULL, value VARCHAR(200) NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE movies (
    id INTEGER NOT NULL, title VARCHAR(200) NOT NULL, year INTEGER NOT NULL,
    created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_movies_title ON movies (title);
CREATE TABLE recommendations (
    user_id INTEGER NOT NULL, strategy VARCHAR(40) NOT NULL, items JSON NOT NULL,
    generated_at DATETIME NOT NULL, computed_ms FLOAT NOT NULL, PRIMARY KEY (user_id));
CREATE TABLE movie_genres (
    movie_id INTEGER NOT NULL, genre VARCHAR(40) NOT NULL, genre_key VARCHAR(40) NOT NULL,
    position INTEGER NOT NULL, PRIMARY KEY (movie_id, genre),
    FOREIGN KEY(movie_id) REFERENCES movies (id) ON DELETE CASCADE);
CREATE INDEX ix_movie_genres_genre_key ON movie_genres (genre_key);
CREATE TABLE ratings (
    user_id INTEGER NOT NULL, movie_id INTEGER NOT NULL, score FLOAT NOT NULL,
    rated_at DATETIME NOT NULL, PRIMARY KEY (user_id, movie_id),
    FOREIGN KEY(movie_id) REFERENCES movies (id) ON DELETE CASCADE);
CREATE INDEX ix_ratings_movie ON ratings (movie_id);
CREATE INDEX ix_ratings_rated_at ON ratings (rated_at);
INSERT INTO app_meta VALUES ('demo_catalog_seeded_at', '2025-01-01T00:00:00+00:00');
INSERT INTO movies VALUES
    (1, 'Heat', 1995, '2025-01-01 00:00:00.000000', '2025-01-02 00:00:00.000000'),
    (2, 'Alien', 1979, '2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000'),
    (3, 'Bare', 2000, '2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000');
INSERT INTO movie_genres VALUES
    (1, 'Drama', 'drama', 1), (1, 'Crime', 'crime', 0), (2, 'Sci-Fi', 'sci-fi', 1),
    (2, 'Horror', 'horror', 0);
INSERT INTO ratings VALUES
    (1, 1, 4.5, '2025-01-03 00:00:00.000000'), (2, 1, 3.0, '2025-01-03 00:00:00.000000'),
    (3, 1, 2.5, '2025-01-03 00:00:00.000000'), (1, 2, 5.0, '2025-01-03 00:00:00.000000');
"""
UPGRADED = {
    1: (["Crime", "Drama"], 3, 10.0),
    2: (["Horror", "Sci-Fi"], 1, 5.0),
    3: ([], 0, 0.0),
}


def _version_1_database(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_1_DDL)
    conn.close()
    return f"sqlite+aiosqlite:///{path}"


async def _movies_and_version(url: str) -> tuple[dict[int, tuple[list[str], int, float]], str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(MovieRow.id, MovieRow.genres, MovieRow.rating_count, MovieRow.rating_sum)
        )
        movies = {movie_id: (genres, count, total) for movie_id, genres, count, total in rows}
        version = (
            await conn.execute(text("SELECT value FROM app_meta WHERE key = 'schema_version'"))
        ).scalar_one()
    await engine.dispose()
    return movies, version


async def test_schema_upgrade_fills_the_new_columns_of_an_older_database_once(
    tmp_path: Path,
) -> None:
    """A version-1 database gets genres and rating aggregates backfilled and version 2
    recorded, keeping every row and timestamp; a second start changes nothing (not even a value
    edited since, so the backfill runs exactly once)."""
    url = _version_1_database(tmp_path / "v1.db")
    engine = create_engine(url)
    await create_schema(engine)
    assert await _movies_and_version(url) == (UPGRADED, str(SCHEMA_VERSION))
    async with engine.connect() as conn:
        stamps = (await conn.execute(text("SELECT updated_at FROM movies ORDER BY id"))).all()
    assert [stamp for (stamp,) in stamps] == [
        "2025-01-02 00:00:00.000000",
        "2025-01-01 00:00:00.000000",
        "2025-01-01 00:00:00.000000",
    ]
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE movies SET rating_count = 99 WHERE id = 3"))
    await create_schema(engine)
    movies, _ = await _movies_and_version(url)
    assert movies[3] == ([], 99, 0.0)
    async with engine.connect() as conn:
        counts = [
            (
                await conn.execute(select(func.count()).select_from(Base.metadata.tables[name]))
            ).scalar_one()
            for name in ("movies", "movie_genres", "ratings", "app_meta")
        ]
    await engine.dispose()
    assert counts == [3, 4, 4, 2]


async def test_schema_upgrade_is_safe_from_several_processes_at_once(tmp_path: Path) -> None:
    """API, worker and seeder starting together on a version-1 database: all succeed and
    the upgrade happens once (a second ALTER TABLE ... ADD COLUMN would fail)."""
    url = _version_1_database(tmp_path / "v1.db")
    await _create_schema_in_processes(url, 4)
    assert await _movies_and_version(url) == (UPGRADED, str(SCHEMA_VERSION))


async def test_schema_upgrade_from_two_engines_in_one_process_at_once(tmp_path: Path) -> None:
    """Two create_schema calls racing on separate engines both return, upgrading once."""
    url = _version_1_database(tmp_path / "v1.db")
    engines = [create_engine(url), create_engine(url)]
    await asyncio.gather(*(create_schema(engine) for engine in engines))
    for engine in engines:
        await engine.dispose()
    assert await _movies_and_version(url) == (UPGRADED, str(SCHEMA_VERSION))


def test_switching_a_file_to_wal_waits_out_a_lock_instead_of_failing(tmp_path: Path) -> None:
    """Another process holds the new file's lock when a connection switches it to WAL: the
    switch is tried again until the lock is gone (SQLite may refuse it without waiting)."""
    import sqlite3
    import threading

    from app.db import _use_wal

    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    opener = sqlite3.connect(path, isolation_level=None)
    opener.execute("PRAGMA busy_timeout=0")  # SQLite answers "locked" at once
    release = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        _use_wal(opener.cursor())
        assert opener.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        release.join()
        holder.close()
        opener.close()
