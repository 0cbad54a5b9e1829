"""The worker's metrics endpoint and its request ids, for real: a WakingWorker in process on the
session's valkey, scraped over HTTP; `python -m app.worker` for the port-in-use exit."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from arq import Retry
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.config import Settings
from app.constants import CRON_LAST_RUN_KEY, QUEUE_NAME, REQUEST_ID_KWARG
from app.jobcodec import CODEC, arq_client_from_url, job_handle
from app.jobs import trigger_refresh
from app.main import create_app
from app.requestid import REQUEST_ID_PATTERN, current_request_id
from app.worker import HOURLY_REFRESH_CRON, WakingWorker, build_worker_settings, create_worker
from app.workermetrics import WorkerMetrics
from tests.support import free_port, worker_env

TEST_QUEUE = "test:metrics-queue"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def jobs(samples: Samples, function: str, outcome: str) -> float:
    return samples[("movie_jobs_total", (("function", function), ("outcome", outcome)))]


async def _until(predicate: Callable[[], Any], within: float, what: str) -> None:
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < within, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _run(worker: WakingWorker, redis: Redis) -> asyncio.Task[None]:
    task = asyncio.create_task(worker.async_run())
    await _until(lambda: redis.exists(worker.health_check_key), 10, "the worker's first poll")
    return task


async def _stop(worker: WakingWorker, task: asyncio.Task[None]) -> None:
    await asyncio.wait_for(asyncio.gather(*worker.tasks.values()), 10)
    worker.handle_sig(signal.SIGTERM)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await worker.close()


# --- jobs of a worker of its own: succeeded, failed, retried ----------------------------------

SEEN_REQUEST_IDS: list[str | None] = []


async def succeed(ctx: dict[str, Any], *, request_id: str | None = None) -> str:
    SEEN_REQUEST_IDS.append(current_request_id())
    logging.getLogger("tests.job").info("working")
    return "ok"


async def fail(ctx: dict[str, Any]) -> None:
    raise ValueError("boom")


async def retry_once(ctx: dict[str, Any]) -> str:
    if ctx["job_try"] == 1:
        raise Retry(defer=0.01)
    return "second time lucky"


async def too_slow(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(30)


@pytest.fixture
async def metered(settings: Settings, redis: Redis) -> AsyncIterator[tuple[WakingWorker, int]]:
    """A running WakingWorker with the test functions and its metrics endpoint on a free port."""
    port = free_port()
    worker = WakingWorker(
        functions=[succeed, fail, retry_once, too_slow],
        redis_settings=build_worker_settings(settings).redis_settings,  # type: ignore[attr-defined]
        queue_name=TEST_QUEUE,
        poll_delay=0.05,
        job_timeout=0.5,
        max_tries=3,
        handle_signals=False,
        metrics_port=port,
        **CODEC,
    )
    task = await _run(worker, redis)
    try:
        yield worker, port
    finally:
        await _stop(worker, task)


async def _drained(redis: Redis) -> bool:
    return not await redis.zcard(TEST_QUEUE)


async def test_jobs_are_counted_by_function_and_outcome_with_arqs_own_verdict(
    metered: tuple[WakingWorker, int], valkey: Any, redis: Redis
) -> None:
    """A success, an exception, a Retry then success, and a timeout: each run counted once,
    the timeout as a failure; retries, durations and queue latencies recorded per function."""
    worker, port = metered
    before = await scrape(port)
    assert jobs(before, "succeed", "succeeded") == 0  # every known function starts at 0
    assert before[("movie_jobs_in_progress", ())] == 0
    client = arq_client_from_url(valkey.url)
    try:
        for function in ("succeed", "fail", "retry_once", "too_slow"):
            await client.enqueue_job(function, _queue_name=TEST_QUEUE)
        await _until(lambda: _drained(redis), 15, "the queue to drain")
        await asyncio.wait_for(asyncio.gather(*worker.tasks.values()), 10)
    finally:
        await client.aclose(close_connection_pool=True)
    after = await scrape(port)
    assert jobs(after, "succeed", "succeeded") == 1
    assert jobs(after, "fail", "failed") == 1
    assert jobs(after, "retry_once", "retried") == 1
    assert jobs(after, "retry_once", "succeeded") == 1
    assert jobs(after, "too_slow", "failed") == 1  # arq's timeout is a failure, not a retry
    assert jobs(after, "too_slow", "retried") == 0
    assert after[("movie_job_retries_total", (("function", "retry_once"),))] == 1
    assert after[("movie_job_retries_total", (("function", "fail"),))] == 0
    assert after[("movie_job_duration_seconds_count", (("function", "retry_once"),))] == 2
    # about the 0.5 s job timeout (arq times it on the loop clock, the metric on perf_counter)
    assert after[("movie_job_duration_seconds_sum", (("function", "too_slow"),))] >= 0.45
    assert after[("movie_job_queue_latency_seconds_count", (("function", "succeed"),))] == 1
    assert after[("movie_jobs_in_progress", ())] == 0
    assert after[("movie_job_queue_depth", ())] == 0
    assert after[("movie_worker_redis_up", ())] == 1
    heartbeat = after[("movie_worker_heartbeat_timestamp_seconds", ())]
    assert time.time() - 60 < heartbeat <= time.time()
    assert heartbeat == pytest.approx(worker._last_health_check)  # the heartbeat arq wrote
    assert ("process_resident_memory_bytes", ()) in after  # the standard collectors too


def test_the_heartbeat_is_the_start_time_until_the_first_one() -> None:
    """Never 0 (an alert would read a 1970 heartbeat as stale for decades): a fresh worker's
    heartbeat age counts from its start."""
    started = time.time()
    samples = parse(WorkerMetrics().exposition().decode())
    assert started <= samples[("movie_worker_heartbeat_timestamp_seconds", ())] <= time.time()


async def test_a_job_for_an_unknown_function_fails_under_a_bounded_label(
    metered: tuple[WakingWorker, int], valkey: Any, redis: Redis
) -> None:
    """Whatever function name a record holds, the label is one of the worker's or `unknown`."""
    _, port = metered
    client = arq_client_from_url(valkey.url)
    try:
        await client.enqueue_job("no_such_function_" + "x" * 200, _queue_name=TEST_QUEUE)
        await _until(lambda: _drained(redis), 10, "the queue to drain")
    finally:
        await client.aclose(close_connection_pool=True)
    samples = await scrape(port)
    assert jobs(samples, "unknown", "failed") == 1
    assert not [key for key in samples if "no_such_function" in str(key)]


async def test_queue_depth_is_read_from_redis_at_scrape_time(
    metered: tuple[WakingWorker, int], valkey: Any
) -> None:
    """Jobs deferred an hour wait in the queue: the scrape counts them."""
    _, port = metered
    client = arq_client_from_url(valkey.url)
    try:
        for n in range(3):
            await client.enqueue_job(
                "succeed", _queue_name=TEST_QUEUE, _job_id=f"later-{n}", _defer_by=3600
            )
        assert (await scrape(port))[("movie_job_queue_depth", ())] == 3
    finally:
        await client.delete(TEST_QUEUE)
        await client.aclose(close_connection_pool=True)


async def test_only_get_metrics_is_answered(metered: tuple[WakingWorker, int]) -> None:
    """Other paths 404, other methods 405, a garbage request 400, an endless head is cut off."""
    _, port = metered
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.get("/metrics/../x")).status_code == 404
        assert (await http.post("/metrics")).status_code == 405
        assert (await http.head("/metrics")).status_code == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NONSENSE\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing served
    writer.close()


async def test_a_scrape_without_redis_omits_the_queue_and_says_so() -> None:
    """Redis not answering at scrape time: no depth or cron samples, redis_up 0, no error."""
    metrics = WorkerMetrics()
    dead = Redis(port=free_port(), socket_connect_timeout=0.2)
    try:
        await metrics.read_redis(dead, QUEUE_NAME, {HOURLY_REFRESH_CRON: CRON_LAST_RUN_KEY})
    finally:
        await dead.aclose()
    samples = parse(metrics.exposition().decode())
    assert samples[("movie_worker_redis_up", ())] == 0
    assert ("movie_job_queue_depth", ()) not in samples
    assert not [key for key in samples if key[0].startswith("movie_cron_")]


# --- the app's own worker: cron timestamp, request ids ----------------------------------------


@pytest.fixture
def app_worker_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(seed_demo_data=True, worker_metrics_port=free_port())


async def test_the_hourly_refresh_last_success_comes_from_its_redis_timestamp(
    app_worker_settings: Settings, redis: Redis
) -> None:
    """The hourly job writes its last-run key when it succeeds; the scrape reports it."""
    # A run this minute: never before the last scheduled one, so no catch-up job starts.
    done = datetime.now(UTC).replace(microsecond=0)
    await redis.set(CRON_LAST_RUN_KEY, done.isoformat())
    worker = create_worker(build_worker_settings(app_worker_settings), handle_signals=False)
    task = await _run(worker, redis)
    try:
        samples = await scrape(app_worker_settings.worker_metrics_port)
    finally:
        await _stop(worker, task)
    key = ("movie_cron_last_success_timestamp_seconds", (("function", HOURLY_REFRESH_CRON),))
    assert samples[key] == done.timestamp()
    known = {labels for name, labels in samples if name == "movie_jobs_total"}
    assert (("function", HOURLY_REFRESH_CRON), ("outcome", "succeeded")) in known


class _RequestIds(logging.Handler):
    """Every record of the job's run, with the request id current when it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.getMessage(), current_request_id()))


@pytest.fixture
def request_ids() -> Iterator[_RequestIds]:
    handler = _RequestIds()
    loggers = [logging.getLogger(name) for name in ("arq.worker", "tests.job")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


async def test_every_log_line_of_a_job_carries_the_request_id_it_was_queued_with(
    metered: tuple[WakingWorker, int],
    valkey: Any,
    redis: Redis,
    request_ids: _RequestIds,
) -> None:
    """arq's start and end lines and the job's own line carry the id; a job queued without one
    (cron, the CLI, a record from before request ids) gets a fresh id; a malformed one is
    replaced."""
    SEEN_REQUEST_IDS.clear()
    client = arq_client_from_url(valkey.url)
    try:
        await client.enqueue_job("succeed", _queue_name=TEST_QUEUE, request_id="req-from-api-1")
        await _until(lambda: _drained(redis), 10, "the first job")
        await client.enqueue_job("succeed", _queue_name=TEST_QUEUE)
        await _until(lambda: _drained(redis), 10, "the second job")
        await client.enqueue_job("succeed", _queue_name=TEST_QUEUE, request_id="bad id\n")
        await _until(lambda: _drained(redis), 10, "the third job")
    finally:
        await client.aclose(close_connection_pool=True)
    first, fresh, replaced = SEEN_REQUEST_IDS
    assert first == "req-from-api-1"
    assert REQUEST_ID_PATTERN.fullmatch(fresh or "")
    assert REQUEST_ID_PATTERN.fullmatch(replaced or "")
    assert replaced != "bad id\n"
    lines = [line for line in request_ids.lines if line[2] == first]
    assert {name for name, _, _ in lines} == {"arq.worker", "tests.job"}
    assert any("→" in message for _, message, _ in lines)  # arq's start line
    assert any("←" in message for _, message, _ in lines)  # arq's end line
    assert current_request_id() is None  # nothing leaks out of the run


async def test_the_refresh_endpoint_hands_its_request_id_to_the_job(
    app_worker_settings: Settings, redis: Redis, request_ids: _RequestIds
) -> None:
    """POST .../refresh with X-Request-ID: the queued job carries it, and the real worker's
    log lines for that job are bound to it."""
    await redis.set(CRON_LAST_RUN_KEY, datetime.now(UTC).isoformat())  # no catch-up job
    app = create_app(app_worker_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for movie_id in (1, 2):
                rated = await client.post(
                    f"/movies/{movie_id}/ratings", json={"user_id": 42, "score": 4.0}
                )
                assert rated.status_code == 201
            accepted = await client.post(
                "/users/42/recommendations/refresh", headers={"X-Request-ID": "trace-42-abc"}
            )
            assert accepted.status_code == 202
            assert accepted.headers["X-Request-ID"] == "trace-42-abc"
            worker = create_worker(
                build_worker_settings(app_worker_settings), burst=True, handle_signals=False
            )
            try:
                await asyncio.wait_for(worker.async_run(), 20)
            finally:
                await worker.close()
            job = (await client.get("/jobs/refresh:42")).json()
    assert job["state"] == "complete"
    assert job["args"] == [42]  # the id travels as a keyword, not as an argument
    bound = [message for name, message, rid in request_ids.lines if rid == "trace-42-abc"]
    assert any("refresh_recommendations" in message and "←" in message for message in bound)


async def test_a_refresh_queued_without_a_request_id_has_no_such_keyword(
    settings: Settings, redis: Redis, valkey: Any
) -> None:
    """`movieops refresh` (no request) queues the job as before request ids: no keyword."""
    client = arq_client_from_url(valkey.url)
    try:
        await trigger_refresh(client, 7)
        await trigger_refresh(client, 8, request_id="rid-8")
        info7 = await job_handle(client, "refresh:7").info()
        info8 = await job_handle(client, "refresh:8").info()
    finally:
        await client.aclose(close_connection_pool=True)
    assert info7 is not None
    assert info7.kwargs == {}
    assert info8 is not None
    assert info8.kwargs == {REQUEST_ID_KWARG: "rid-8"}


# --- the process: a port in use --------------------------------------------------------------


def test_a_metrics_port_in_use_stops_the_worker_with_one_line(settings: Settings) -> None:
    """`python -m app.worker` whose metrics port is taken: exit 1, one `error:` line, no
    traceback (and no endless reconnecting)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "app.worker"],
            env=worker_env(settings, MOVIE_WORKER_METRICS_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the worker's metrics endpoint cannot listen on 127.0.0.1:{port}: "
        "Address already in use (MOVIE_WORKER_METRICS_HOST / MOVIE_WORKER_METRICS_PORT; "
        "0 serves none)"
    ]
    assert "Traceback" not in done.stderr
