"""Computing and storing recommendations: the worker's use-cases (database in, database out)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db import (
    GenreRow,
    MovieRow,
    RatingRow,
    RecommendationRow,
    UTCDateTime,
    session_factory,
    utcnow,
)
from app.recommend import RatingsIndex, popularity, recommend

#: Why a user is skipped: nothing to compute from, and no row is stored for them.
SKIP_REASON = "no ratings"


def no_ratings_detail(user_id: int) -> str:
    """What the API and a failed refresh job say about a user who has rated nothing."""
    return f"User {user_id} has no ratings; rate a film first (POST /movies/{{movie_id}}/ratings)"


class UserHasNoRatings(LookupError):
    """A refresh was asked for a user who has rated nothing (not transient: never retried)."""

    def __init__(self, user_id: int) -> None:
        # args stay (user_id,), so the exception survives the round trip of a job's result.
        super().__init__(user_id)
        self.user_id = user_id

    def __str__(self) -> str:
        return no_ratings_detail(self.user_id)


@dataclass(frozen=True)
class Snapshot:
    """Everything the recommender reads, taken at ``taken_at``."""

    index: RatingsIndex
    movie_genres: dict[int, list[str]]
    taken_at: datetime


async def take_snapshot(session: AsyncSession) -> Snapshot:
    """Read all ratings and the catalog's genres in one transaction."""
    taken_at = utcnow()
    # Plain SQL: tens of thousands of rows come back ~40 % faster than through select().
    ratings = await session.execute(text("SELECT user_id, movie_id, score FROM ratings"))
    index = RatingsIndex.build(ratings.all())
    movie_genres: dict[int, list[str]] = {
        movie_id: [] for movie_id in (await session.scalars(select(MovieRow.id))).all()
    }
    genres = await session.execute(
        select(GenreRow.movie_id, GenreRow.genre).order_by(GenreRow.movie_id, GenreRow.position)
    )
    for movie_id, genre in genres:
        movie_genres.setdefault(movie_id, []).append(genre)
    return Snapshot(index, movie_genres, taken_at)


# Users computed per thread hand-off: small enough that cancelling a job (SIGTERM) waits for
# well under a second of work, large enough that hand-offs cost nothing measurable.
USERS_PER_CHUNK = 16


def _rows_for(
    snapshot: Snapshot, user_ids: list[int], limit: int, started: float, base: dict[int, float]
) -> list[dict[str, Any]]:
    rows = []
    for user_id in user_ids:
        strategy, picks = recommend(snapshot.index, snapshot.movie_genres, user_id, limit, base)
        rows.append(
            {
                "user_id": user_id,
                "strategy": strategy,
                "items": [
                    {"movie_id": p.movie_id, "score": p.score, "reason": p.reason} for p in picks
                ],
                "generated_at": snapshot.taken_at,
                "computed_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )
    return rows


async def _store(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Upsert: re-running a job (arq is at-least-once) just writes the same answer again."""
    if not rows:
        return
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(RecommendationRow).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=[RecommendationRow.user_id],
        set_={
            # Subscript, not attributes: ``excluded.items`` is ColumnCollection.items().
            name: statement.excluded[name]
            for name in ("strategy", "items", "generated_at", "computed_ms")
        },
    )
    await session.execute(statement)
    await session.commit()


async def refresh_users(engine: AsyncEngine, user_ids: list[int], limit: int) -> dict[str, Any]:
    """Recompute and store recommendations for these users; return a summary.

    Users without a single rating are skipped: nothing is stored for them (a made-up id must not
    add a row), and the summary lists them under ``skipped`` with ``reason: "no ratings"``.
    """
    started = time.perf_counter()
    async with session_factory(engine)() as session:
        snapshot = await take_snapshot(session)
        rated = [u for u in user_ids if u in snapshot.index.by_user]
        # CPU-bound (seconds for a few hundred users): in a thread, so the worker's event loop
        # keeps its heartbeat (readiness, arq --check) and other jobs going meanwhile; in chunks,
        # because a thread cannot be cancelled: a worker told to stop stops after one chunk.
        base = await asyncio.to_thread(popularity, snapshot.index, snapshot.movie_genres)
        rows: list[dict[str, Any]] = []
        for first in range(0, len(rated), USERS_PER_CHUNK):
            chunk = rated[first : first + USERS_PER_CHUNK]
            rows += await asyncio.to_thread(_rows_for, snapshot, chunk, limit, started, base)
        await _store(session, rows)
    summary: dict[str, Any] = {
        "users": len(rows),
        "generated_at": snapshot.taken_at.isoformat(),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if len(rows) == 1:
        summary["strategy"] = rows[0]["strategy"]
        summary["items"] = len(rows[0]["items"])
    skipped = [u for u in user_ids if u not in snapshot.index.by_user]
    if skipped:
        summary["skipped"] = skipped
        summary["reason"] = SKIP_REASON
    return summary


async def refresh_user(engine: AsyncEngine, user_id: int, limit: int) -> dict[str, Any]:
    """One user's manual refresh; :class:`UserHasNoRatings` (nothing stored) if they rated
    nothing, so the job fails with that message instead of completing with an empty answer."""
    summary = await refresh_users(engine, [user_id], limit)
    if summary.get("skipped"):
        raise UserHasNoRatings(user_id)
    return summary


async def users_needing_refresh(engine: AsyncEngine) -> list[int]:
    """Users who rated something after their last refresh, or were never refreshed."""
    # type_coerce keeps the column's type on MAX(), so SQLite's naive value comes back aware.
    last_rated_at = type_coerce(func.max(RatingRow.rated_at), UTCDateTime())
    async with session_factory(engine)() as session:
        rows = await session.execute(
            select(RatingRow.user_id, last_rated_at).group_by(RatingRow.user_id)
        )
        last_rated: dict[int, datetime] = dict(rows.all())
        generated = await session.execute(
            select(RecommendationRow.user_id, RecommendationRow.generated_at)
        )
        generated_at: dict[int, datetime] = dict(generated.all())
    return sorted(
        user_id
        for user_id, last in last_rated.items()
        if (at := generated_at.get(user_id)) is None or last > at
    )
