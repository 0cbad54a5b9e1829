"""Recommendations for users who never rated: the API refuses (404), the worker stores nothing,
and the CLI's `refresh --wait` says so in one line with exit 7."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.config import Settings
from app.constants import CRON_LAST_RUN_KEY, QUEUE_NAME
from app.db import RecommendationRow, create_engine
from app.main import create_app
from app.refresh import no_ratings_detail
from movieops import jobs as cli_jobs
from movieops.cli import cli
from tests.support import run_burst, start_worker

MADE_UP = list(range(100_001, 100_021))  # 20 ids nobody rated with
RATER = 42


async def _recommendation_rows(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            count = (
                await conn.execute(select(func.count()).select_from(RecommendationRow))
            ).scalar_one()
    finally:
        await engine.dispose()
    return int(count)


@pytest.fixture
async def api(
    make_settings: Callable[..., Settings], redis: Redis
) -> AsyncIterator[tuple[Settings, httpx.AsyncClient]]:
    """An empty catalog with one film that user 42 rated; no worker start-up catch-up."""
    settings = make_settings()
    await redis.set(CRON_LAST_RUN_KEY, datetime.now(UTC).isoformat())
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            film = (await client.post("/movies", json={"title": "Heat", "year": 1995})).json()
            rated = await client.post(
                f"/movies/{film['id']}/ratings", json={"user_id": RATER, "score": 4.5}
            )
            assert rated.status_code == 201
            yield settings, client


async def test_refresh_for_a_user_without_ratings_is_404_and_queues_nothing(
    api: tuple[Settings, httpx.AsyncClient], redis: Redis
) -> None:
    """POST refresh for a user who never rated: 404 problem JSON naming the fix; no job."""
    _, client = api
    response = await client.post("/users/7/recommendations/refresh")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "detail": "User 7 has no ratings; rate a film first (POST /movies/{movie_id}/ratings)",
        "request_id": response.headers["x-request-id"],
    }
    assert "location" not in response.headers
    assert await redis.zcard(QUEUE_NAME) == 0
    assert (await client.get("/jobs/refresh:7")).status_code == 404
    accepted = await client.post(f"/users/{RATER}/recommendations/refresh")
    assert accepted.status_code == 202
    assert await redis.zcard(QUEUE_NAME) == 1


async def test_reading_recommendations_of_a_user_without_ratings_says_rate_first(
    api: tuple[Settings, httpx.AsyncClient],
) -> None:
    """GET for a user who never rated: 404 pointing at rating; a rater gets the refresh hint."""
    _, client = api
    never = await client.get("/users/7/recommendations")
    assert never.status_code == 404
    assert never.json() == {
        "detail": no_ratings_detail(7),
        "request_id": never.headers["x-request-id"],
    }
    rater = await client.get(f"/users/{RATER}/recommendations")
    assert rater.status_code == 404
    assert f"POST /users/{RATER}/recommendations/refresh" in rater.json()["detail"]


async def test_the_refresh_404_is_documented(api: tuple[Settings, httpx.AsyncClient]) -> None:
    """OpenAPI declares the 404 (problem JSON) on the refresh operation."""
    _, client = api
    schema = (await client.get("/openapi.json")).json()
    responses = schema["paths"]["/users/{user_id}/recommendations/refresh"]["post"]["responses"]
    assert "404" in responses
    assert responses["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }


async def test_a_job_enqueued_directly_for_a_user_without_ratings_fails_and_stores_nothing(
    api: tuple[Settings, httpx.AsyncClient],
) -> None:
    """The CLI enqueues straight into Redis: the job fails once (not retried) with the
    message, and no recommendations row appears."""
    settings, client = api
    outcome = await cli_jobs.refresh(settings.redis_url, 7, force=False)
    assert outcome.action is cli_jobs.RefreshAction.ENQUEUED
    assert await run_burst(settings, count_failed=True) == 1
    job = (await client.get("/jobs/refresh:7")).json()
    assert job["state"] == "failed"
    assert job["tries"] == 1
    assert job["error"].endswith(no_ratings_detail(7))
    assert await _recommendation_rows(settings) == 0


async def test_made_up_user_ids_never_grow_the_database(
    api: tuple[Settings, httpx.AsyncClient], redis: Redis
) -> None:
    """20 made-up ids through the API and 20 straight into the queue: not one row is added."""
    settings, client = api
    db_path = settings.database_url.split("///", 1)[1]

    def total_rows() -> int:
        with sqlite3.connect(db_path) as conn:
            tables = [
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            return sum(
                conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]  # noqa: S608
                for table in tables
            )

    before = total_rows()
    for user_id in MADE_UP:
        response = await client.post(f"/users/{user_id}/recommendations/refresh")
        assert response.status_code == 404
    assert await redis.zcard(QUEUE_NAME) == 0
    for user_id in MADE_UP:
        await cli_jobs.refresh(settings.redis_url, user_id, force=False)
    assert await run_burst(settings, count_failed=True) == len(MADE_UP)
    assert total_rows() == before
    assert await _recommendation_rows(settings) == 0


async def test_cli_refresh_wait_for_a_user_without_ratings_is_one_line_and_exit_7(
    api: tuple[Settings, httpx.AsyncClient], tmp_path: Path
) -> None:
    """`movieops refresh --user N --wait` against a real worker: exit 7 (job failed), one
    error line saying the user has no ratings, no traceback."""
    settings, _ = api
    worker = start_worker(settings)
    try:
        argv = [
            "--project-dir", str(tmp_path), "--api-url", "http://127.0.0.1:9",
            "--redis-url", settings.redis_url,
            "refresh", "--user", "7", "--wait", "--timeout", "30",
        ]  # fmt: skip
        started = time.monotonic()
        result = await asyncio.to_thread(CliRunner().invoke, cli, argv)
    finally:
        worker.terminate()
        worker.wait(10)
    assert result.exit_code == 7, (result.stdout, result.stderr, time.monotonic() - started)
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: job refresh:7 failed: ")
    assert error.endswith(no_ratings_detail(7))
    assert "Traceback" not in result.stderr
    assert await _recommendation_rows(settings) == 0
