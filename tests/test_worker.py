"""The worker for real: arq Worker(burst=True) in process, and `python -m app.worker` processes."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import pickle
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import Retry, cron
from arq.constants import job_key_prefix, retry_key_prefix
from arq.jobs import Job, JobStatus
from arq.worker import func
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.constants import (
    ARQ_IN_PROGRESS_KEY_PREFIX,
    ARQ_RESULT_KEY_PREFIX,
    CRON_LAST_RUN_KEY,
    HEALTH_CHECK_KEY,
    QUEUE_NAME,
    REFRESH_JOB,
    WAKE_TOKENS_MAX,
    WAKE_TTL_MS,
    refresh_job_id,
    wake_key,
)
from app.db import RecommendationRow, create_engine
from app.jobcodec import CODEC, arq_client, arq_client_from_url, decode_record, encode_record
from app.jobs import wake_worker
from app.main import create_app
from app.worker import (
    WakingWorker,
    backoff_seconds,
    build_worker_settings,
    catch_up,
    create_worker,
    is_transient,
    last_scheduled_run,
    missed_run,
    refresh_changed_users,
)
from tests.support import (
    ValkeyProcess,
    free_port,
    run_burst,
    start_logged_worker,
    start_worker,
    worker_env,
)

RATINGS = [(1, 5.0), (2, 4.0), (3, 1.0)]


@pytest.fixture
async def stack(
    make_settings: Callable[..., Settings], redis: Redis
) -> AsyncIterator[tuple[Settings, httpx.AsyncClient]]:
    """The API with seeded films and one user's ratings, plus the settings a worker needs."""
    settings = make_settings(seed_demo_data=True)
    # The hourly job just ran, so a worker's start-up catch-up stays out of these tests.
    await redis.set(CRON_LAST_RUN_KEY, datetime.now(UTC).isoformat())
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.5", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for user_id in (42, 43):
                for movie_id, score in RATINGS:
                    await client.post(
                        f"/movies/{movie_id}/ratings", json={"user_id": user_id, "score": score}
                    )
            yield settings, client


async def test_refresh_through_the_api_completes_and_is_readable(
    stack: tuple[Settings, httpx.AsyncClient],
) -> None:
    """202 queued → worker runs it → job complete → recommendations exclude rated films."""
    settings, client = stack
    missing = await client.get("/users/42/recommendations")
    assert missing.status_code == 404
    assert "POST /users/42/recommendations/refresh" in missing.json()["detail"]

    accepted = await client.post("/users/42/recommendations/refresh")
    assert accepted.status_code == 202
    assert accepted.json() == {
        "job_id": "refresh:42",
        "state": "queued",
        "location": "/jobs/refresh:42",
    }
    assert accepted.headers["location"] == "/jobs/refresh:42"
    queued = (await client.get("/jobs/refresh:42")).json()
    assert queued["state"] == "queued"
    assert queued["function"] == REFRESH_JOB
    assert queued["args"] == [42]

    assert await run_burst(settings) == 1
    job = (await client.get("/jobs/refresh:42")).json()
    assert job["state"] == "complete"
    assert job["tries"] == 1
    assert job["result"]["users"] == 1
    assert job["result"]["strategy"] in {"collaborative", "mixed", "popular"}
    assert job["started_at"] <= job["finished_at"]

    body = (await client.get("/users/42/recommendations")).json()
    assert len(body["items"]) == 10
    assert body["refresh_pending"] is False
    assert not {item["movie_id"] for item in body["items"]} & {m for m, _ in RATINGS}
    assert all(item["title"] for item in body["items"])


async def test_a_queued_refresh_is_never_queued_twice_but_a_finished_one_runs_again(
    stack: tuple[Settings, httpx.AsyncClient],
) -> None:
    """Second trigger while queued → same job, already_queued; after completion → queued again."""
    settings, client = stack
    first = (await client.post("/users/43/recommendations/refresh")).json()
    second = (await client.post("/users/43/recommendations/refresh")).json()
    assert first["state"] == "queued"
    assert second == {**first, "state": "already_queued"}
    assert (await client.get("/users/43/recommendations")).status_code == 404
    assert await run_burst(settings) == 1

    again = (await client.post("/users/43/recommendations/refresh")).json()
    assert again["state"] == "queued"
    pending = (await client.get("/users/43/recommendations")).json()
    assert pending["refresh_pending"] is True
    assert await run_burst(settings) == 1
    assert (await client.get("/jobs/refresh:43")).json()["state"] == "complete"


async def test_a_failing_job_is_recorded_as_failed_with_its_reason(
    stack: tuple[Settings, httpx.AsyncClient],
) -> None:
    """A non-transient error is not retried: the job is failed and says why."""
    settings, client = stack
    db_path = settings.database_url.split("///", 1)[1]
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER read_only BEFORE INSERT ON recommendations "
            "BEGIN SELECT RAISE(ABORT, 'recommendations are read-only'); END"
        )
    await client.post("/users/42/recommendations/refresh")
    await run_burst(settings)
    job = (await client.get("/jobs/refresh:42")).json()
    assert job["state"] == "failed"
    assert job["tries"] == 1
    assert job["result"] is None
    assert job["error"].startswith("IntegrityError")
    assert "recommendations are read-only" in job["error"]


async def test_jobs_and_results_are_stored_as_json_with_failures_as_strings(
    stack: tuple[Settings, httpx.AsyncClient], redis: Redis
) -> None:
    """The queued job and both a success and a failure result are JSON objects in Redis; a
    failure is its exception's type and message, as strings."""
    settings, client = stack
    await client.post("/users/42/recommendations/refresh")
    queued = json.loads(await redis.get(job_key_prefix + "refresh:42") or b"")
    assert (queued["f"], queued["a"]) == (REFRESH_JOB, [42])
    await run_burst(settings)
    done = json.loads(await redis.get(ARQ_RESULT_KEY_PREFIX + "refresh:42") or b"")
    assert done["s"] is True
    assert done["r"]["users"] == 1

    record = decode_record(encode_record({"s": False, "r": ValueError("bad input")}))
    assert record == {"s": False, "r": {"error_type": "ValueError", "error_message": "bad input"}}
    with pytest.raises(ValueError, match="JSON object"):
        decode_record(b'"a string"')


class _Planted:
    """A pickle payload that creates ``marker`` the moment it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def planted_pickle(marker: Path) -> bytes:
    """What an attacker with write access to Redis would store."""
    return pickle.dumps(_Planted(marker))


def test_the_planted_payload_would_run_if_unpickled(tmp_path: Path) -> None:
    """Control for the tests below: unpickling the payload does create its marker file."""
    marker = tmp_path / "control"
    pickle.loads(planted_pickle(marker)).close()  # noqa: S301 - proving the payload is live
    assert marker.exists()


async def test_a_planted_pickle_result_is_a_declared_502_and_never_unpickled(
    stack: tuple[Settings, httpx.AsyncClient], redis: Redis, tmp_path: Path
) -> None:
    """arq:result:{id} holding a pickle: GET /jobs/{id} answers a problem JSON 502 (declared in
    OpenAPI), and the payload's marker file is never created."""
    _, client = stack
    marker = tmp_path / "pwned"
    await redis.set(ARQ_RESULT_KEY_PREFIX + "refresh:42", planted_pickle(marker))
    response = await client.get("/jobs/refresh:42")
    assert response.status_code == 502
    assert "not a JSON job record" in response.json()["detail"]
    assert response.headers["content-type"] == "application/json"
    schema = (await client.get("/openapi.json")).json()
    assert "502" in schema["paths"]["/jobs/{job_id}"]["get"]["responses"]
    # A refresh replaces the unreadable record.
    assert (await client.post("/users/42/recommendations/refresh")).json()["state"] == "queued"
    assert not marker.exists()


async def test_a_planted_pickle_job_fails_cleanly_in_the_worker_and_is_never_unpickled(
    stack: tuple[Settings, httpx.AsyncClient], redis: Redis, tmp_path: Path
) -> None:
    """arq:job:{id} holding a pickle in the queue: the API reports it corrupt (502), the worker
    fails the job with DeserializationError instead of running it, and nothing is unpickled."""
    settings, client = stack
    marker = tmp_path / "pwned"
    await redis.set(job_key_prefix + "refresh:43", planted_pickle(marker))
    await redis.zadd(QUEUE_NAME, {"refresh:43": 1})
    assert (await client.get("/jobs/refresh:43")).status_code == 502
    assert await run_burst(settings) == 0
    failed = (await client.get("/jobs/refresh:43")).json()
    assert failed["state"] == "failed"
    assert failed["error"].startswith("DeserializationError")
    assert not marker.exists()


async def test_a_json_record_of_the_wrong_shape_is_corrupt_not_a_500(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    """Valid JSON that arq did not write (wrong types) is reported like a pickle: 502."""
    record = {"t": 1, "f": 7, "a": 3, "k": {}, "et": 0, "s": True, "r": {}, "st": 0, "ft": 0}
    await redis.set(ARQ_RESULT_KEY_PREFIX + "refresh:5", json.dumps(record))
    assert (await client.get("/jobs/refresh:5")).status_code == 502


async def test_unknown_job_is_404_with_state_not_found(client: httpx.AsyncClient) -> None:
    """A job id that never existed: 404 with the documented body."""
    response = await client.get("/jobs/refresh:999")
    assert response.status_code == 404
    assert response.json()["state"] == "not_found"
    assert response.json()["job_id"] == "refresh:999"


def test_cron_is_registered_hourly_at_minute_zero_by_default(
    make_settings: Callable[..., Settings],
) -> None:
    """One cron job, the changed-users refresh, at minute 0 of every hour unless
    MOVIE_HOURLY_REFRESH_MINUTE says another."""
    assert Settings.model_fields["hourly_refresh_minute"].default == 0
    for minute in (0, 17):
        settings = make_settings(hourly_refresh_minute=minute)
        (job,) = build_worker_settings(settings).cron_jobs  # type: ignore[attr-defined]
        assert job.name == "hourly-refresh"
        assert (job.minute, job.second, job.hour) == (minute, 0, None)
        assert job.coroutine is refresh_changed_users


def test_missed_run_logic() -> None:
    """A run is missed when the last one predates the latest scheduled minute."""
    now = datetime(2026, 11, 28, 15, 20, tzinfo=UTC)
    assert missed_run(None, now)
    assert missed_run(datetime(2026, 11, 28, 13, 0, tzinfo=UTC), now)
    assert not missed_run(datetime(2026, 11, 28, 15, 0, 1, tzinfo=UTC), now)
    # At minute 45 the latest scheduled run is 14:45: 15:00 is after it, 14:40 before.
    assert not missed_run(datetime(2026, 11, 28, 15, 0, tzinfo=UTC), now, minute=45)
    assert missed_run(datetime(2026, 11, 28, 14, 40, tzinfo=UTC), now, minute=45)
    assert not missed_run(datetime(2026, 11, 28, 15, 20, tzinfo=UTC), now, minute=20)
    assert missed_run(datetime(2026, 11, 28, 15, 19, 59, tzinfo=UTC), now, minute=20)


def _at(day: int, hour: int, minute: int) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "minute", "scheduled"),
    [
        (_at(28, 15, 20), 0, _at(28, 15, 0)),
        (_at(28, 15, 20), 20, _at(28, 15, 20)),
        (_at(28, 15, 20), 21, _at(28, 14, 21)),
        (_at(29, 0, 5), 30, _at(28, 23, 30)),
    ],
)
def test_the_last_scheduled_run_is_the_latest_configured_minute_at_or_before_now(
    now: datetime, minute: int, scheduled: datetime
) -> None:
    assert last_scheduled_run(now, minute) == scheduled


async def test_catch_up_runs_once_after_a_missed_hour(
    stack: tuple[Settings, httpx.AsyncClient], redis: Redis
) -> None:
    """Last run two hours ago: the first worker start queues the catch-up, which refreshes the
    users with new ratings; later starts (any worker) do not queue it again."""
    settings, client = stack
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    await redis.set(CRON_LAST_RUN_KEY, two_hours_ago.isoformat())
    assert await run_burst(settings) == 1  # startup queued the catch-up; burst ran it
    assert datetime.fromisoformat((await redis.get(CRON_LAST_RUN_KEY) or b"").decode()) > (
        two_hours_ago
    )
    for user_id in (42, 43):
        assert (await client.get(f"/users/{user_id}/recommendations")).status_code == 200
    assert await run_burst(settings) == 0

    arq = arq_client(redis.connection_pool)
    assert await catch_up({"redis": arq, "settings": settings}) is False


async def test_hourly_job_refreshes_only_users_whose_ratings_changed(
    stack: tuple[Settings, httpx.AsyncClient], redis: Redis
) -> None:
    """After a full refresh, only a user who rated again is recomputed."""
    settings, client = stack
    engine = create_engine(settings.database_url)
    arq = arq_client(redis.connection_pool)
    ctx: dict[str, Any] = {"engine": engine, "top_n": 10, "redis": arq, "job_try": 1, "job_id": "t"}
    assert (await refresh_changed_users(ctx))["users"] == 300  # the demo's raters, 42/43 too
    assert (await refresh_changed_users(ctx))["users"] == 0
    await client.post("/movies/9/ratings", json={"user_id": 43, "score": 4.5})
    summary = await refresh_changed_users(ctx)
    assert summary["users"] == 1
    await engine.dispose()


def test_backoff_grows_and_is_capped() -> None:
    """0.5 s, 1 s, 2 s, … never more than 10 s."""
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_seconds(20) == 10.0


def test_transient_failures_are_recognised() -> None:
    """A locked database and Redis trouble are transient; a bug is not."""
    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert is_transient(locked)
    assert is_transient(ConnectionError("redis went away"))
    assert not is_transient(OperationalError("SELECT", {}, sqlite3.OperationalError("no table")))
    assert not is_transient(ValueError("bug"))


async def test_redis_blip_inside_a_job_becomes_an_arq_retry(tmp_path: Path) -> None:
    """The hourly job meets a Redis that refuses connections: arq's Retry with back-off."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    from app.db import create_schema

    await create_schema(engine)
    dead = arq_client_from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    ctx: dict[str, Any] = {
        "engine": engine,
        "top_n": 10,
        "redis": dead,
        "job_try": 2,
        "job_id": "t",
    }
    with pytest.raises(Retry) as caught:
        await refresh_changed_users(ctx)
    assert caught.value.defer_score == 1000  # 1 s, in ms
    await dead.aclose(close_connection_pool=True)
    await engine.dispose()


# --- waking the idle worker on enqueue ------------------------------------------------------

# Far longer than any wait below: a job that completes was started by a wake-up, not a poll.
LONG_POLL_DELAY_SECONDS = 30.0


async def _start_idle(worker: WakingWorker, redis: Redis) -> asyncio.Task[None]:
    """Run ``worker`` in a task until it has polled once (its heartbeat is written) and idles."""
    task = asyncio.create_task(worker.async_run())
    await asyncio.wait_for(_until(lambda: redis.exists(HEALTH_CHECK_KEY), 10, "a poll"), 10)
    return task


async def _stop(worker: WakingWorker, task: asyncio.Task[None]) -> None:
    """Once its jobs are done (SIGTERM cancels running ones), SIGTERM as arq handles it, then
    arq's close()."""
    await asyncio.wait_for(asyncio.gather(*worker.tasks.values()), 10)
    worker.handle_sig(signal.SIGTERM)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await worker.close()


async def test_an_enqueued_refresh_wakes_the_idle_worker_instead_of_waiting_for_its_poll(
    stack: tuple[Settings, httpx.AsyncClient], redis: Redis
) -> None:
    """With a 30 s poll delay, a refresh queued through the API completes: woken, never polled."""
    settings, client = stack
    worker = create_worker(
        build_worker_settings(settings),
        poll_delay=LONG_POLL_DELAY_SECONDS,
        handle_signals=False,
    )
    task = await _start_idle(worker, redis)
    try:
        for user_id in (42, 43):
            accepted = await client.post(f"/users/{user_id}/recommendations/refresh")
            assert accepted.json()["state"] == "queued"
            done = functools.partial(_complete, client, user_id)
            await asyncio.wait_for(_until(done, 10, "the job"), 10)
        assert worker.jobs_complete == 2
        assert worker.idle_woken >= 2
        assert worker.idle_timed_out == 0  # the 30 s poll never came round
    finally:
        await _stop(worker, task)


async def _complete(client: httpx.AsyncClient, user_id: int) -> bool:
    job = (await client.get(f"/jobs/refresh:{user_id}")).json()
    assert job["state"] != "failed", job
    return bool(job["state"] == "complete")


async def test_a_worker_blocked_waiting_for_a_wake_up_shuts_down_promptly(
    settings: Settings, redis: Redis
) -> None:
    """SIGTERM while blocked on the wake-up list ends the worker at once, heartbeat gone."""
    await redis.set(CRON_LAST_RUN_KEY, datetime.now(UTC).isoformat())  # no catch-up job
    worker = create_worker(
        build_worker_settings(settings),
        poll_delay=LONG_POLL_DELAY_SECONDS,
        handle_signals=False,
    )
    task = await _start_idle(worker, redis)
    await _stop(worker, task)
    assert worker.idle_timed_out == 0  # interrupted inside its first 30 s wait
    assert not await redis.exists(HEALTH_CHECK_KEY)
    clients = await redis.client_list()
    assert not [c for c in clients if c["cmd"] == "blpop"]  # the wake connection is closed


async def test_a_shutdown_while_a_finished_job_is_settled_keeps_its_result(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM after a job's function returned, while arq is still storing its result (Redis
    writes paused, CLIENT PAUSE): close() neither raises (the process used to exit 1 with a
    traceback) nor drops the result, and the job is not queued to run again."""
    queue = "test:settle-queue"
    runs: list[str] = []
    release = asyncio.Event()

    async def finishes(ctx: dict[str, Any]) -> str:
        runs.append("ran")
        await release.wait()
        return "done"

    worker = WakingWorker(
        functions=[func(finishes, name="finishes")],
        redis_settings=build_worker_settings(settings).redis_settings,  # type: ignore[attr-defined]
        queue_name=queue,
        poll_delay=0.05,
        handle_signals=False,
    )
    task = asyncio.create_task(worker.async_run())
    arq = arq_client(redis.connection_pool)
    await arq.enqueue_job("finishes", _job_id="settle-1", _queue_name=queue)

    async def started() -> bool:
        return runs == ["ran"]

    async def settling() -> bool:
        # arq logs the outcome, then awaits its shielded finish_job: the task waits there.
        return any("← settle-1:finishes" in record.getMessage() for record in caplog.records)

    caplog.set_level(logging.INFO, logger="arq.worker")
    await _until(started, 10, "the job to start")
    await redis.client_pause(1500, all=False)  # writes wait; reads go on
    release.set()
    await _until(settling, 10, "arq to store the result")
    worker.handle_sig(signal.SIGTERM)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await asyncio.wait_for(worker.close(), 10)

    job = Job("settle-1", arq, _queue_name=queue, _deserializer=decode_record)
    assert await job.status() == JobStatus.complete
    assert await job.result(timeout=1) == "done"
    assert await redis.zscore(queue, "settle-1") is None
    assert runs == ["ran"]


async def test_cron_and_deferred_jobs_are_still_found_by_the_poll(
    settings: Settings, redis: Redis
) -> None:
    """A cron job (queued deferred, no wake-up token) runs, found by a poll that timed out."""
    ticked = asyncio.Event()

    async def tick(ctx: dict[str, Any]) -> None:
        ticked.set()

    worker = WakingWorker(
        functions=[],
        cron_jobs=[cron(tick, name="tick", second=set(range(60)))],  # every second
        redis_settings=build_worker_settings(settings).redis_settings,  # type: ignore[attr-defined]
        queue_name="test:cron-queue",
        poll_delay=0.2,
        handle_signals=False,
        **CODEC,
    )
    task = asyncio.create_task(worker.async_run())
    try:
        await asyncio.wait_for(ticked.wait(), 10)
        assert worker.idle_timed_out >= 1
        assert worker.idle_woken == 0
    finally:
        await _stop(worker, task)


async def test_burst_mode_runs_the_queue_and_returns_without_blocking_on_the_wake_list(
    stack: tuple[Settings, httpx.AsyncClient], redis: Redis
) -> None:
    """Burst mode (the tests' run_burst) drains the queue and returns; it never waits on BLPOP."""
    settings, client = stack
    for user_id in (42, 43):
        await client.post(f"/users/{user_id}/recommendations/refresh")
    assert await _wake_tokens(redis) == 2
    worker = create_worker(build_worker_settings(settings), burst=True, handle_signals=False)
    try:
        await asyncio.wait_for(worker.async_run(), 10)
    finally:
        await worker.close()
    assert worker.jobs_complete == 2
    assert worker.idle_woken == worker.idle_timed_out == 0
    assert (await client.get("/jobs/refresh:42")).json()["state"] == "complete"


async def _wake_tokens(redis: Redis) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.llen(wake_key(QUEUE_NAME))  # (redis-py types llen() itself as sync | async)
        (length,) = await pipe.execute()
    return int(length)


async def test_the_wake_list_stays_bounded_and_expires(redis: Redis) -> None:
    """However many enqueues wake it, the list keeps WAKE_TOKENS_MAX tokens and a TTL."""
    for _ in range(3 * WAKE_TOKENS_MAX):
        await wake_worker(redis)
    key = wake_key(QUEUE_NAME)
    assert await _wake_tokens(redis) == WAKE_TOKENS_MAX
    assert 0 < await redis.pttl(key) <= WAKE_TTL_MS


async def test_a_failed_wake_up_does_not_fail_the_enqueue(tmp_path: Path) -> None:
    """The wake-up is a hint: with Redis gone it logs and returns (the poll finds the job)."""
    dead = arq_client_from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        await wake_worker(dead)
    finally:
        await dead.aclose(close_connection_pool=True)


# --- the worker as a process ------------------------------------------------------------------


async def _until(predicate: Callable[[], Any], within: float, what: str) -> float:
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < within, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
async def ready_client(
    make_settings: Callable[..., Settings], redis: Redis
) -> AsyncIterator[tuple[Settings, httpx.AsyncClient, FastAPI]]:
    """An API whose readiness requires the worker."""
    settings = make_settings(seed_demo_data=True, ready_requires_worker=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield settings, client, app


@pytest.mark.slow
async def test_ready_reports_the_worker_gone_within_seconds(
    ready_client: tuple[Settings, httpx.AsyncClient, FastAPI],
) -> None:
    """Worker up → /ready 200 and `arq --check` 0; SIGKILL → 503 naming the worker once the
    heartbeat's TTL (interval + 1 s) runs out; a graceful SIGTERM drops the heartbeat at once."""
    settings, client, _ = ready_client

    async def ready() -> bool:
        return (await client.get("/ready")).status_code == 200

    async def not_ready() -> bool:
        return not await ready()

    for stop in (signal.SIGKILL, signal.SIGTERM):
        worker = start_worker(settings)
        try:
            await _until(ready, 20, "the worker's heartbeat")
            check = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "arq", "--check", "app.worker.WorkerSettings",
                env=worker_env(settings),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            assert await check.wait() == 0
            worker.send_signal(stop)
            gone_after = await _until(not_ready, 5, "readiness to notice")
            exit_code = worker.wait(15)
        finally:
            worker.kill()
            worker.wait()
        body = (await client.get("/ready")).json()
        assert body["checks"]["worker"]["ok"] is False
        assert body["status"] == "unavailable"
        if stop is signal.SIGTERM:
            assert exit_code == 0
            assert gone_after < 2.0  # well before the 3 s TTL: the worker deleted it
        else:
            # arq writes the heartbeat with a TTL of interval + 1 s (3 s here); add polling slack.
            assert gone_after < 3.5


@pytest.mark.slow
async def test_job_interrupted_by_a_crash_runs_again_after_restart(
    stack: tuple[Settings, httpx.AsyncClient],
) -> None:
    """A worker SIGKILLed mid-job (blocked on a database lock): after a restart the job runs
    again (arq's at-least-once) and stores one correct result."""
    settings, client = stack
    env = {"MOVIE_JOB_TIMEOUT_SECONDS": "2"}  # a crashed job's claim expires after 2 + 10 s
    db_path = settings.database_url.split("///", 1)[1]
    blocker = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    blocker.execute("BEGIN IMMEDIATE")  # the job can read (WAL) but not write
    arq_redis = arq_client_from_url(settings.redis_url)
    worker = start_worker(settings, **env)
    try:
        await client.post("/users/42/recommendations/refresh")

        async def in_progress() -> bool:
            # arq claims the job, then counts the try: wait for both before the crash.
            job_id = refresh_job_id(42)
            return bool(
                await arq_redis.exists(
                    ARQ_IN_PROGRESS_KEY_PREFIX + job_id, retry_key_prefix + job_id
                )
                == 2
            )

        await _until(in_progress, 20, "the job to start")
    finally:
        worker.kill()
        worker.wait()
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await client.get("/jobs/refresh:42")).json()["state"] == "in_progress"

    worker = start_worker(settings, **env)
    try:

        async def complete() -> bool:
            return bool((await client.get("/jobs/refresh:42")).json()["state"] == "complete")

        await _until(complete, 40, "the re-run to complete")
    finally:
        worker.terminate()
        worker.wait(10)
        await arq_redis.aclose(close_connection_pool=True)
    job = (await client.get("/jobs/refresh:42")).json()
    assert job["tries"] == 2
    body = (await client.get("/users/42/recommendations")).json()
    assert len(body["items"]) == 10
    engine = create_engine(settings.database_url)
    async with engine.connect() as conn:
        rows = (await conn.execute(RecommendationRow.__table__.select())).all()
    await engine.dispose()
    assert [row.user_id for row in rows] == [42]


@pytest.mark.slow
async def test_worker_process_survives_a_redis_restart(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """arq exits on a dropped connection; `python -m app.worker` reconnects by itself and
    processes jobs queued after Redis came back."""
    valkey = ValkeyProcess()
    valkey.start()
    settings = make_settings(redis_url=valkey.url, seed_demo_data=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            log = tmp_path / "worker.log"
            worker = start_logged_worker(settings, log)
            try:
                await asyncio.sleep(1.5)
                valkey.stop()
                await asyncio.sleep(1.5)
                assert worker.poll() is None, "the worker process must not exit"
                valkey.start()
                await asyncio.sleep(0.3)  # the API's breaker cool-down

                async def accepted() -> bool:
                    response = await client.post("/users/7/recommendations/refresh")
                    return response.status_code == 202

                await _until(accepted, 10, "the API to reach Redis again")

                async def complete() -> bool:
                    state = (await client.get("/jobs/refresh:7")).json().get("state")
                    return bool(state == "complete")

                try:
                    await _until(complete, 30, "the reconnected worker to run the job")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; its log:\n{log.read_text()[-4000:]}") from None
                async with Redis.from_url(valkey.url) as check:
                    # Done means gone from the queue: nothing left for another worker to run.
                    assert await check.zscore(QUEUE_NAME, "refresh:7") is None
            finally:
                worker.terminate()
                worker.wait(10)
                valkey.stop()
    assert worker.returncode == 0, log.read_text()[-4000:]
