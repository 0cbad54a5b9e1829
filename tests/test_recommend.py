"""The recommender on hand-computed data: exact scores, exclusions, fallback, determinism; and
on the seeded demo database: CF for its users, nothing stored for users without ratings."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.constants import RECOMMENDATIONS_PER_USER
from app.db import RatingRow, RecommendationRow, create_engine, create_schema, session_factory
from app.recommend import (
    GENRE_BOOST,
    RatingsIndex,
    Recommendation,
    popular,
    popularity,
    recommend,
)
from app.refresh import UserHasNoRatings, refresh_user, refresh_users
from app.seed import FILMS, seed_demo_catalog

# user, movie, score — the worked example in the module docstring's terms:
# means: u1 10/3, u2 14/3, u3 10/3, u4 8/3; global mean 42/12 = 3.5.
RATINGS = [
    (1, 1, 5.0), (1, 2, 4.0), (1, 3, 1.0),
    (2, 1, 4.0), (2, 2, 5.0), (2, 4, 5.0),
    (3, 3, 5.0), (3, 5, 4.0), (3, 1, 1.0),
    (4, 1, 5.0), (4, 3, 1.0), (4, 5, 2.0),
]  # fmt: skip
GENRES = {1: ["Drama"], 2: ["Drama"], 3: ["Horror"], 4: ["Comedy"], 5: ["Horror"]}


def test_collaborative_prediction_matches_the_hand_computation() -> None:
    """For user 4 only film 2 is positively similar to what they rated:
    sim(1,2) = (5/3·2/3 - 2/3·1/3) / (√127/3 · √5/3) = 8/√635 > 0, so pred(2) = 5·sim/sim = 5.0.
    Film 4 is only negatively similar (-2/9 through user 2), so it comes from the fallback:
    (5·3.5 + 5) / (5 + 1) = 3.75 (no boost: user 4 liked Drama, film 4 is Comedy)."""
    strategy, picks = recommend(RatingsIndex.build(RATINGS), GENRES, 4, limit=10)
    assert strategy == "mixed"
    assert picks == [Recommendation(2, 5.0, "similar"), Recommendation(4, 3.75, "popular")]


def test_user_without_ratings_gets_bayesian_popularity_order() -> None:
    """(5·3.5 + Σr)/(5 + n): film 2 3.7857, 4 3.75, 1 3.6111, 5 3.3571, 3 3.0625."""
    strategy, picks = recommend(RatingsIndex.build(RATINGS), GENRES, 99, limit=10)
    assert strategy == "popular"
    assert [(p.movie_id, p.score) for p in picks] == [
        (2, 3.7857), (4, 3.75), (1, 3.6111), (5, 3.3571), (3, 3.0625),
    ]  # fmt: skip
    assert {p.reason for p in picks} == {"popular"}


def test_genres_the_user_liked_are_boosted_in_the_fallback() -> None:
    """One liked Horror film: every Horror film gets exactly GENRE_BOOST on top of its base."""
    index = RatingsIndex.build([*RATINGS, (7, 3, 4.0)])
    base = popularity(index, GENRES)
    for pick in popular(index, GENRES, base, 7):
        boost = GENRE_BOOST if "Horror" in GENRES[pick.movie_id] else 0.0
        assert pick.score == round(base[pick.movie_id] + boost, 4)
    assert next(p.movie_id for p in popular(index, GENRES, base, 7)) == 5  # the unrated Horror


def _generated(seed: int) -> tuple[list[tuple[int, int, float]], dict[int, list[str]]]:
    rng = random.Random(seed)
    genres = {m: [rng.choice(["Drama", "Comedy", "Horror", "Action"])] for m in range(1, 81)}
    ratings = {
        (rng.randint(1, 40), rng.randint(1, 80)): rng.choice([1.0, 2.5, 3.0, 4.5, 5.0])
        for _ in range(900)
    }
    return [(u, m, s) for (u, m), s in ratings.items()], genres


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_recommends_a_rated_film_and_fills_the_list(seed: int) -> None:
    """For every user: no rated film, no duplicates, exactly ``limit`` picks, only catalog films."""
    ratings, genres = _generated(seed)
    index = RatingsIndex.build(ratings)
    for user_id in range(1, 41):
        _, picks = recommend(index, genres, user_id, limit=10)
        ids = [p.movie_id for p in picks]
        assert len(ids) == len(set(ids)) == 10
        assert not set(ids) & set(index.by_user.get(user_id, {}))
        assert set(ids) <= set(genres)


def test_same_data_in_any_order_gives_the_same_answer() -> None:
    """Deterministic: ties break by support, then id; input order does not matter."""
    ratings, genres = _generated(7)
    shuffled = list(ratings)
    random.Random(0).shuffle(shuffled)
    for user_id in (1, 5, 17):
        first = recommend(RatingsIndex.build(ratings), genres, user_id, limit=10)
        again = recommend(RatingsIndex.build(shuffled), genres, user_id, limit=10)
        assert first == again


# --- on the seeded demo database, through app.refresh (what the worker runs) ------------------


@pytest.fixture
async def seeded(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A fresh database seeded with the demo catalog and its users' ratings."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}")
    await create_schema(engine)
    assert await seed_demo_catalog(engine) == len(FILMS)
    yield engine
    await engine.dispose()


async def _stored(engine: AsyncEngine) -> dict[int, RecommendationRow]:
    async with session_factory(engine)() as session:
        rows = (await session.scalars(select(RecommendationRow))).all()
    return {row.user_id: row for row in rows}


async def test_seeded_user_42_gets_collaborative_filtering_not_the_fallback(
    seeded: AsyncEngine,
) -> None:
    """The README's demo user: a refresh on a fresh stack is item-based CF, 10 unrated films."""
    summary = await refresh_users(seeded, [42], RECOMMENDATIONS_PER_USER)
    assert summary["users"] == 1
    assert summary["strategy"] == "collaborative"
    assert summary["items"] == RECOMMENDATIONS_PER_USER == 10
    row = (await _stored(seeded))[42]
    assert {item["reason"] for item in row.items} == {"similar"}
    async with seeded.connect() as conn:
        rated = {
            movie_id
            for (movie_id,) in await conn.execute(
                select(RatingRow.movie_id).where(RatingRow.user_id == 42)
            )
        }
    assert len(rated) >= 10
    assert not rated & {item["movie_id"] for item in row.items}


async def test_refresh_skips_users_without_ratings_and_stores_nothing_for_them(
    seeded: AsyncEngine,
) -> None:
    """Made-up ids in a batch: only raters get a row; the summary lists the others."""
    summary = await refresh_users(seeded, [42, 100_001, 7, 100_002], RECOMMENDATIONS_PER_USER)
    assert summary["users"] == 2
    assert summary["skipped"] == [100_001, 100_002]
    assert summary["reason"] == "no ratings"
    assert set(await _stored(seeded)) == {7, 42}


async def test_a_single_refresh_of_a_user_without_ratings_raises_and_stores_nothing(
    seeded: AsyncEngine,
) -> None:
    """refresh_user (the manual job): UserHasNoRatings with the API's wording; no row."""
    with pytest.raises(UserHasNoRatings) as caught:
        await refresh_user(seeded, 100_001, RECOMMENDATIONS_PER_USER)
    assert str(caught.value) == (
        "User 100001 has no ratings; rate a film first (POST /movies/{movie_id}/ratings)"
    )
    assert await _stored(seeded) == {}


async def test_a_cancelled_batch_refresh_stops_after_the_chunk_in_hand(
    seeded: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The computation runs in a thread, which cannot be cancelled: it goes in chunks, so a worker
    told to stop (SIGTERM cancels the job) waits for one chunk, not for every user, and stores
    nothing."""
    from app import refresh

    started = asyncio.Event()
    chunks: list[int] = []
    loop = asyncio.get_running_loop()
    real = refresh._rows_for

    def counting(*args: Any) -> list[dict[str, Any]]:
        chunks.append(len(args[1]))
        loop.call_soon_threadsafe(started.set)
        return real(*args)

    monkeypatch.setattr(refresh, "_rows_for", counting)
    users = list(range(1, 301))
    task = asyncio.create_task(refresh_users(seeded, users, RECOMMENDATIONS_PER_USER))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    total = -(-len(users) // refresh.USERS_PER_CHUNK)
    assert 1 <= len(chunks) <= 2 < total
    assert sum(chunks) < len(users)  # most users were never computed
    assert await _stored(seeded) == {}
