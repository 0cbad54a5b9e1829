"""Demo catalog (real films rated by a few hundred users) seeded on first start, and a generated
data set for benchmarks.

``python -m app.seed --movies 5000 --ratings 50000`` loads the generated set into the database
named by ``MOVIE_DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import SettingsError, load_settings
from app.db import (
    Base,
    GenreRow,
    MetaRow,
    MovieRow,
    RatingRow,
    create_engine,
    create_schema,
    refresh_rating_aggregates,
    session_factory,
    utcnow,
)
from app.repository import count_movies

log = logging.getLogger("app.seed")

_RATINGS_TABLE = Base.metadata.tables[RatingRow.__tablename__]

# (title, year, genres): well-known films, so a fresh GET /movies shows something real.
FILMS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("The Shawshank Redemption", 1994, ("Drama",)),
    ("The Godfather", 1972, ("Crime", "Drama")),
    ("The Dark Knight", 2008, ("Action", "Crime", "Drama")),
    ("The Godfather Part II", 1974, ("Crime", "Drama")),
    ("12 Angry Men", 1957, ("Drama",)),
    ("Schindler's List", 1993, ("Biography", "Drama", "History")),
    ("The Lord of the Rings: The Return of the King", 2003, ("Adventure", "Fantasy")),
    ("Pulp Fiction", 1994, ("Crime", "Drama")),
    ("The Good, the Bad and the Ugly", 1966, ("Western",)),
    ("Fight Club", 1999, ("Drama",)),
    ("Forrest Gump", 1994, ("Drama", "Romance")),
    ("Inception", 2010, ("Action", "Sci-Fi", "Thriller")),
    ("The Empire Strikes Back", 1980, ("Action", "Adventure", "Sci-Fi")),
    ("The Matrix", 1999, ("Action", "Sci-Fi")),
    ("Goodfellas", 1990, ("Biography", "Crime", "Drama")),
    ("One Flew Over the Cuckoo's Nest", 1975, ("Drama",)),
    ("Seven Samurai", 1954, ("Action", "Drama")),
    ("Se7en", 1995, ("Crime", "Mystery", "Thriller")),
    ("City of God", 2002, ("Crime", "Drama")),
    ("The Silence of the Lambs", 1991, ("Crime", "Thriller")),
    ("It's a Wonderful Life", 1946, ("Drama", "Family", "Fantasy")),
    ("Life Is Beautiful", 1997, ("Comedy", "Drama", "Romance")),
    ("Saving Private Ryan", 1998, ("Drama", "War")),
    ("Spirited Away", 2001, ("Animation", "Adventure", "Family")),
    ("The Green Mile", 1999, ("Crime", "Drama", "Fantasy")),
    ("Interstellar", 2014, ("Adventure", "Drama", "Sci-Fi")),
    ("Parasite", 2019, ("Drama", "Thriller")),
    ("Leon: The Professional", 1994, ("Action", "Crime", "Drama")),
    ("The Pianist", 2002, ("Biography", "Drama", "Music")),
    ("Terminator 2: Judgment Day", 1991, ("Action", "Sci-Fi")),
    ("Back to the Future", 1985, ("Adventure", "Comedy", "Sci-Fi")),
    ("The Usual Suspects", 1995, ("Crime", "Mystery", "Thriller")),
    ("Psycho", 1960, ("Horror", "Mystery", "Thriller")),
    ("The Lion King", 1994, ("Animation", "Adventure", "Drama")),
    ("Modern Times", 1936, ("Comedy", "Drama", "Romance")),
    ("American History X", 1998, ("Crime", "Drama")),
    ("City Lights", 1931, ("Comedy", "Drama", "Romance")),
    ("Gladiator", 2000, ("Action", "Adventure", "Drama")),
    ("The Departed", 2006, ("Crime", "Drama", "Thriller")),
    ("The Prestige", 2006, ("Drama", "Mystery", "Sci-Fi")),
    ("Casablanca", 1942, ("Drama", "Romance", "War")),
    ("Whiplash", 2014, ("Drama", "Music")),
    ("The Intouchables", 2011, ("Biography", "Comedy", "Drama")),
    ("Grave of the Fireflies", 1988, ("Animation", "Drama", "War")),
    ("Harakiri", 1962, ("Action", "Drama", "History")),
    ("Once Upon a Time in the West", 1968, ("Western",)),
    ("Rear Window", 1954, ("Mystery", "Thriller")),
    ("Alien", 1979, ("Horror", "Sci-Fi")),
    ("Apocalypse Now", 1979, ("Drama", "Mystery", "War")),
    ("Memento", 2000, ("Mystery", "Thriller")),
    ("Raiders of the Lost Ark", 1981, ("Action", "Adventure")),
    ("The Shining", 1980, ("Drama", "Horror")),
    ("Dr. Strangelove", 1964, ("Comedy", "War")),
    ("Sunset Boulevard", 1950, ("Drama", "Film-Noir")),
    ("Paths of Glory", 1957, ("Drama", "War")),
    ("WALL-E", 2008, ("Animation", "Adventure", "Family")),
    ("Amadeus", 1984, ("Biography", "Drama", "Music")),
    ("Princess Mononoke", 1997, ("Animation", "Adventure", "Fantasy")),
    ("Oldboy", 2003, ("Action", "Drama", "Mystery")),
    ("Heat", 1995, ("Action", "Crime", "Drama")),
    ("Toy Story", 1995, ("Animation", "Adventure", "Comedy")),
    ("Amelie", 2001, ("Comedy", "Romance")),
    ("2001: A Space Odyssey", 1968, ("Adventure", "Sci-Fi")),
    ("Vertigo", 1958, ("Mystery", "Romance", "Thriller")),
    ("Blade Runner", 1982, ("Action", "Drama", "Sci-Fi")),
)

GENERATED_GENRES = (
    "Action", "Adventure", "Animation", "Comedy", "Crime", "Drama", "Family", "Fantasy",
    "Horror", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

_BATCH = 5_000
SEEDED_MARKER = "demo_catalog_seeded_at"
#: PostgreSQL advisory lock key that seeders of one database take in turn.
SEED_LOCK_KEY = 0x6D6F7669_65000002

#: The demo ratings: users 1..DEMO_USERS, each rating DEMO_RATINGS_PER_USER films, generated
#: from DEMO_RATINGS_SEED (the same data on every fresh database).
DEMO_USERS = 300
DEMO_RATINGS_PER_USER = (10, 40)
DEMO_RATINGS_SEED = 1994
#: How far back the demo ratings' rated_at spread.
DEMO_RATINGS_SPAN = timedelta(days=365)


def demo_ratings(
    films: Sequence[tuple[int, Sequence[str]]],
    now: datetime,
    *,
    users: int = DEMO_USERS,
    seed: int = DEMO_RATINGS_SEED,
) -> list[dict[str, Any]]:
    """Deterministic, realistic ratings of ``films`` ((movie_id, genres), best known first).

    Every user has a taste over genres (two loved, one disliked, the rest mildly for or against)
    and is a harsh or a generous rater; they rate 10-40 films, more often well-known ones and ones
    of genres they like, and a score is the film's quality, plus their bias, plus their taste for
    its genres, plus noise, in half steps from 0.5 to 5. So similar users agree on films, which is
    what item-based collaborative filtering finds.
    """
    rng = random.Random(seed)
    genres = sorted({genre for _, film_genres in films for genre in film_genres})
    count = len(films)
    # FILMS is roughly best-known first: earlier films are a little better and seen more often.
    quality = [3.85 - 0.5 * rank / count + rng.gauss(0, 0.15) for rank in range(count)]
    reach = [1.0 / (1.0 + rank / 20) for rank in range(count)]
    low, high = DEMO_RATINGS_PER_USER
    rows: list[dict[str, Any]] = []
    for user_id in range(1, users + 1):
        taste = {genre: rng.gauss(0, 0.4) for genre in genres}
        loved = rng.sample(genres, 3)
        for genre in loved[:2]:
            taste[genre] += 1.2
        taste[loved[2]] -= 1.2
        bias = rng.gauss(0, 0.3)
        affinity = [
            sum(taste[g] for g in film_genres) / len(film_genres) if film_genres else 0.0
            for _, film_genres in films
        ]
        # Weighted sampling without replacement (Efraimidis-Spirakis): the k largest
        # u ** (1 / weight) are a sample in which heavier films are likelier.
        keys = [
            (rng.random() ** (1.0 / (reach[i] * math.exp(affinity[i]))), i) for i in range(count)
        ]
        keys.sort(reverse=True)
        for _, i in keys[: min(count, rng.randint(low, high))]:
            raw = quality[i] + bias + 0.7 * affinity[i] + rng.gauss(0, 0.5)
            rows.append(
                {
                    "user_id": user_id,
                    "movie_id": films[i][0],
                    "score": min(5.0, max(0.5, round(raw * 2) / 2)),
                    "rated_at": now - DEMO_RATINGS_SPAN * rng.random(),
                }
            )
    return rows


async def seed_demo_catalog(engine: AsyncEngine, *, with_ratings: bool = True) -> int:
    """Insert the real films (and, unless ``with_ratings`` is false, the demo users' ratings of
    them) on first start, in one transaction; return how many films were added.

    Once only: a catalog its users emptied stays empty after a restart, and a database
    that already holds films (loaded by hand or generated) is left as it is.
    """
    sessions = session_factory(engine)
    async with sessions() as session:
        if engine.dialect.name == "postgresql":
            # Seeders take turns (the lock ends with the transaction): the second one finds
            # the marker. Without it both would insert films, burning the ids of the loser's.
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEED_LOCK_KEY}
            )
        if await _seeded(session) or await count_movies(session) > 0:
            return 0
        # Several API replicas may start on one fresh database: the marker row's primary key
        # lets exactly one of them seed; the others fail to insert it and add nothing.
        now = utcnow()
        session.add(MetaRow(key=SEEDED_MARKER, value=now.isoformat()))
        movies = [
            MovieRow(title=title, year=year, genres=list(genres)) for title, year, genres in FILMS
        ]
        session.add_all(movies)
        ratings: list[dict[str, Any]] = []
        try:
            await session.flush()  # assigns the films' ids
            await session.execute(
                insert(GenreRow),
                [
                    {"movie_id": movie.id, "genre": g, "genre_key": g.casefold(), "position": i}
                    for movie in movies
                    for i, g in enumerate(movie.genres)
                ],
            )
            if with_ratings:
                ratings = demo_ratings(
                    [
                        (movie.id, genres)
                        for movie, (_, _, genres) in zip(movies, FILMS, strict=True)
                    ],
                    now,
                )
                # Core, not the ORM bulk insert: less work per row for thousands of rows.
                await session.execute(insert(_RATINGS_TABLE), ratings)
                await refresh_rating_aggregates(
                    await session.connection(), [movie.id for movie in movies]
                )
            await session.commit()
        except (IntegrityError, OperationalError):
            await session.rollback()
            if await _seeded(session):
                return 0
            raise
    if ratings:
        users = len({row["user_id"] for row in ratings})
        log.info("seeded %d demo ratings by %d users", len(ratings), users)
    return len(FILMS)


async def _seeded(session: AsyncSession) -> bool:
    return await session.get(MetaRow, SEEDED_MARKER) is not None


async def load_generated(
    engine: AsyncEngine, *, movies: int, ratings: int, users: int, seed: int = 42
) -> tuple[int, int]:
    """Add ``movies`` generated films and ``ratings`` ratings by ``users`` users (deterministic).

    Users favour two genres each and popular films are rated more, so collaborative filtering has
    real structure to find. Returns (movies added, ratings added).
    """
    rng = random.Random(seed)
    now = utcnow()
    async with engine.begin() as conn:
        first_id = (
            int(
                (await conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM movies")).scalar_one()
            )
            + 1
        )
        movie_rows: list[dict[str, object]] = []
        genre_rows: list[dict[str, object]] = []
        movie_genres: dict[int, tuple[str, ...]] = {}
        for offset in range(movies):
            movie_id = first_id + offset
            genres = tuple(rng.sample(GENERATED_GENRES, rng.randint(1, 3)))
            movie_genres[movie_id] = genres
            movie_rows.append(
                {
                    "id": movie_id,
                    "title": f"Generated Film {movie_id}",
                    "year": rng.randint(1930, 2025),
                    "genres": list(genres),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            genre_rows.extend(
                {"movie_id": movie_id, "genre": g, "genre_key": g.casefold(), "position": i}
                for i, g in enumerate(genres)
            )
        for start in range(0, len(movie_rows), _BATCH):
            await conn.execute(insert(MovieRow), movie_rows[start : start + _BATCH])
        for start in range(0, len(genre_rows), _BATCH):
            await conn.execute(insert(GenreRow), genre_rows[start : start + _BATCH])
        if conn.dialect.name == "postgresql" and movie_rows:
            # Explicit ids leave the id sequence behind: move it past them for later inserts.
            await conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('movies', 'id'), "
                "(SELECT MAX(id) FROM movies))"
            )

        ids = list(movie_genres)
        by_genre: dict[str, list[int]] = {}
        for movie_id, genres in movie_genres.items():
            for genre in genres:
                by_genre.setdefault(genre, []).append(movie_id)
        pairs: dict[tuple[int, int], float] = {}
        attempts = 0
        while len(pairs) < ratings and attempts < ratings * 5 and ids:
            attempts += 1
            user = rng.randint(1, users)
            liked = GENERATED_GENRES[user % len(GENERATED_GENRES)]
            pool = by_genre.get(liked) if rng.random() < 0.6 else None
            # Squaring the uniform draw skews picks toward low ids: a popularity head.
            choices = pool or ids
            movie_id = choices[int(len(choices) * rng.random() ** 2)]
            base = 4.0 if pool else 3.0
            pairs[(user, movie_id)] = min(5.0, max(0.5, round((base + rng.gauss(0, 1)) * 2) / 2))
        rating_rows = [
            {
                "user_id": user,
                "movie_id": movie_id,
                "score": score,
                "rated_at": now - timedelta(minutes=rng.randint(0, 60 * 24 * 365)),
            }
            for (user, movie_id), score in pairs.items()
        ]
        for start in range(0, len(rating_rows), _BATCH):
            await conn.execute(insert(RatingRow), rating_rows[start : start + _BATCH])
        await refresh_rating_aggregates(conn, ids)
    return movies, len(rating_rows)


async def _main(movies: int, ratings: int, users: int) -> None:
    settings = load_settings()
    engine = create_engine(settings.database_connect_url())
    try:
        await create_schema(engine)
        added_movies, added_ratings = await load_generated(
            engine, movies=movies, ratings=ratings, users=users
        )
    finally:
        await engine.dispose()
    print(f"loaded {added_movies} movies and {added_ratings} ratings into {settings.database_url}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of the generated data loader."""
    parser = argparse.ArgumentParser(prog="python -m app.seed", description=__doc__)
    parser.add_argument("--movies", type=int, default=5_000, help="films to generate")
    parser.add_argument("--ratings", type=int, default=50_000, help="ratings to generate")
    parser.add_argument("--users", type=int, default=2_000, help="distinct users")
    args = parser.parse_args(argv)
    if min(args.movies, args.ratings, args.users) < 0 or args.users == 0:
        parser.error("--movies and --ratings must be >= 0 and --users >= 1")
    try:
        asyncio.run(_main(args.movies, args.ratings, args.users))
    except SettingsError as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
