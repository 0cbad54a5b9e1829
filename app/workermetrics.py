"""The worker's Prometheus metrics, and the small HTTP endpoint each worker serves them on.

Every worker process keeps its own ``CollectorRegistry`` and is scraped on its own (no shared
multiprocess directory), like every API replica. ``app.worker.WakingWorker`` feeds it: arq runs
each job in ``run_job``; the worker wraps that call in a ``JobRun`` (a context variable for the
run's task), and arq's own steps fill it in as they happen:

- the job record is decoded (``note_record``): function name and the enqueuing request's id;
- the job function runs (``timed``): queue latency at its start, duration, whether it returned,
  whether it raised ``arq.Retry``;
- arq settles the run (``finish_job`` with ``finish`` true: done; false: queued to run again;
  ``finish_failed_job``: failed before the function ran, e.g. too many tries, undecodable).

``WorkerMetrics.observe`` then counts the run once, with arq's own verdict: a timeout or an abort
is a failure, a ``Retry`` or a shutdown that cancels the job is a retry.

The endpoint (``MetricsEndpoint``) is uvicorn serving a one-route Starlette app on the worker's
own event loop: it reads the queue depth and cron timestamps through the worker's Redis pool at
scrape time, lives and dies with the worker, and needs no thread. Only ``GET /metrics`` (and
``HEAD``) is answered; every request is bounded (head size and time, concurrent connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import uvicorn
from arq import Retry
from arq.typing import WorkerCoroutine
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.constants import REQUEST_ID_KWARG
from app.httpbounds import header_timeout_protocol
from app.requestid import accept_request_id, bound_request_id, new_request_id

log = logging.getLogger("app.worker.metrics")

# Label value for a job whose function is not one of the worker's (an unknown name, a record
# that could not be decoded): the label set stays bounded whatever Redis holds.
UNKNOWN_FUNCTION = "unknown"

# How long a scrape waits for Redis (queue depth, cron timestamps) before answering without them.
SCRAPE_REDIS_TIMEOUT_SECONDS = 1.0
# The endpoint's bounds: a request head, the time to send it, connections served at once.
REQUEST_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 8

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Outcome(StrEnum):
    """How a job run ended (the ``outcome`` label)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"


@dataclass
class JobRun:
    """What is known about one run of one job (one call of arq's ``run_job``)."""

    score_ms: int  # when the job became due (enqueue time, deferred time, retry time), Unix ms
    function: str | None = None
    request_id: str | None = None
    decoded: bool = False
    duration: float | None = None
    returned: bool = False  # the job function returned a result
    asked_retry: bool = False  # the job function raised arq.Retry
    finished: bool | None = None  # arq's verdict: True done (or failed), False runs again
    scope: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def outcome(self) -> Outcome | None:
        """The run's outcome, once arq settled it."""
        if self.finished is None:
            return None
        if not self.finished:
            return Outcome.RETRIED
        return Outcome.SUCCEEDED if self.returned else Outcome.FAILED


_current_run: ContextVar[JobRun | None] = ContextVar("movie_job_run", default=None)


def current_run() -> JobRun | None:
    """The job run this code is part of (arq's ``run_job`` and the job function's task)."""
    return _current_run.get()


@contextlib.contextmanager
def job_run(score_ms: int) -> Iterator[JobRun]:
    """Make a new ``JobRun`` current for the block; the request id it binds is unbound after."""
    run = JobRun(score_ms=score_ms)
    token = _current_run.set(run)
    try:
        with run.scope:
            yield run
    finally:
        _current_run.reset(token)


def note_record(record: Mapping[str, Any]) -> None:
    """A job record arq just decoded inside ``run_job``: remember its function and bind its
    request id for the rest of the run, so every line arq and the job log for it carries the id.

    Only the run's first decode counts (a job function reading other jobs decodes more). A job
    queued without an id (cron, catch-up, ``movieops refresh``, a record older than request
    ids) or with a malformed one gets a fresh id for the run."""
    run = current_run()
    if run is None or run.decoded:
        return
    run.decoded = True
    function = record.get("f")
    run.function = function if isinstance(function, str) else None
    kwargs = record.get("k")
    offered = kwargs.get(REQUEST_ID_KWARG) if isinstance(kwargs, dict) else None
    run.request_id = accept_request_id(offered) if isinstance(offered, str) else new_request_id()
    run.scope.enter_context(bound_request_id(run.request_id))


def timed(coroutine: WorkerCoroutine, metrics: WorkerMetrics) -> WorkerCoroutine:
    """``coroutine`` (a job function) measured as part of the current run."""

    @functools.wraps(coroutine)
    async def run_timed(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        run = current_run()
        if run is None:  # not run by run_job (a test calling the function itself)
            return await coroutine(ctx, *args, **kwargs)
        metrics.observe_start(run)
        started = time.perf_counter()
        metrics.in_progress.inc()
        try:
            result = await coroutine(ctx, *args, **kwargs)
        except Retry:
            run.asked_retry = True
            raise
        finally:
            metrics.in_progress.dec()
            run.duration = time.perf_counter() - started
        run.returned = True
        return result

    return run_timed


@dataclass
class RedisReadings:
    """What a scrape read from Redis; ``None``: Redis did not answer, so those are omitted."""

    queue_depth: int | None = None
    cron_last_success: dict[str, float] = field(default_factory=dict)


class _ScrapeTimeCollector(Collector):
    """The values read from Redis at scrape time, omitted when Redis did not answer."""

    def __init__(self) -> None:
        self.readings = RedisReadings()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        readings = self.readings
        up = GaugeMetricFamily(
            "movie_worker_redis_up",
            "1 when this scrape read the queue from Redis; 0: depth and cron samples omitted.",
            value=0 if readings.queue_depth is None else 1,
        )
        yield up
        if readings.queue_depth is not None:
            yield GaugeMetricFamily(
                "movie_job_queue_depth",
                "Jobs waiting in the queue (read from Redis at scrape time).",
                value=readings.queue_depth,
            )
            cron = GaugeMetricFamily(
                "movie_cron_last_success_timestamp_seconds",
                "Unix time of the cron job's last successful run.",
                labels=["function"],
            )
            for name, timestamp in sorted(readings.cron_last_success.items()):
                cron.add_metric([name], timestamp)
            yield cron


class WorkerMetrics:
    """One worker process's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.known_functions: set[str] = set()
        self.jobs = Counter(
            "movie_jobs",
            "Job runs that ended.",
            ["function", "outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "movie_job_retries",
            "Runs that asked to be retried (raised arq.Retry).",
            ["function"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "movie_job_duration_seconds",
            "Run time of a job.",
            ["function"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_latency = Histogram(
            "movie_job_queue_latency_seconds",
            "From enqueue (or the deferred or retry time) to start.",
            ["function"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "movie_jobs_in_progress", "Jobs running in this worker now.", registry=self.registry
        )
        self.heartbeat = Gauge(
            "movie_worker_heartbeat_timestamp_seconds",
            "Unix time of the worker's last heartbeat (its start, until the first one).",
            registry=self.registry,
        )
        # Never 0 (1970: "stale for decades" to an alert rule): a worker that has not written
        # its first heartbeat yet is as fresh as its start, and goes stale from there.
        self.heartbeat.set_to_current_time()
        self.scrape_time = _ScrapeTimeCollector()
        self.registry.register(self.scrape_time)

    def know(self, functions: Iterable[str]) -> None:
        """Label values allowed for ``function``; their series start at 0."""
        for name in functions:
            if name in self.known_functions:
                continue
            self.known_functions.add(name)
            for outcome in Outcome:
                self.jobs.labels(name, outcome.value)
            self.retries.labels(name)

    def _function(self, run: JobRun) -> str:
        return run.function if run.function in self.known_functions else UNKNOWN_FUNCTION

    def observe_start(self, run: JobRun) -> None:
        """The job function starts: how long it waited since it was due."""
        waited = max(0.0, time.time() - run.score_ms / 1000)
        self.queue_latency.labels(self._function(run)).observe(waited)

    def observe(self, run: JobRun) -> None:
        """Count a run arq has settled (one that broke off inside arq is not counted)."""
        outcome = run.outcome()
        if outcome is None:
            return
        function = self._function(run)
        self.jobs.labels(function, outcome.value).inc()
        if run.asked_retry:
            self.retries.labels(function).inc()
        if run.duration is not None:
            self.duration.labels(function).observe(run.duration)

    async def read_redis(
        self, redis: Redis | None, queue: str, cron_keys: Mapping[str, str]
    ) -> None:
        """Read the queue depth and cron timestamps for the scrape, in one round trip bounded by
        ``SCRAPE_REDIS_TIMEOUT_SECONDS``; when Redis does not answer (or the worker has not
        connected yet: ``redis`` None) they are omitted."""
        names = sorted(cron_keys)
        readings = RedisReadings()
        if redis is None:
            self.scrape_time.readings = readings
            return
        try:
            async with asyncio.timeout(SCRAPE_REDIS_TIMEOUT_SECONDS):
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.zcard(queue)
                    for name in names:
                        pipe.get(cron_keys[name])
                    depth, *stamps = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("metrics scrape without the queue: redis did not answer (%s)", exc)
            self.scrape_time.readings = readings
            return
        readings.queue_depth = int(depth)
        for name, raw in zip(names, stamps, strict=True):
            with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
                readings.cron_last_success[name] = datetime.fromisoformat(raw.decode()).timestamp()
        self.scrape_time.readings = readings

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4 (as the API serves it)."""
        return generate_latest(self.registry)


class MetricsEndpointError(Exception):
    """The endpoint could not listen (deliberately not an OSError: nothing retries it)."""


class MetricsEndpoint:
    """``GET /metrics`` (and ``HEAD``) on ``host:port``: a one-route Starlette app under
    uvicorn, on the worker's own event loop (no thread, no second Redis client).

    uvicorn does the HTTP: other paths get 404, other methods 405 with ``Allow``, a malformed
    request 400. Bounds: a request head must be complete within ``REQUEST_TIMEOUT_SECONDS`` and
    under ``MAX_HEADER_BYTES`` (``app.httpbounds``, as for the API), at most
    ``MAX_CONNECTIONS`` connections are served at once (uvicorn answers 503 beyond).
    The socket is bound here, so a port in use is one :class:`MetricsEndpointError`; uvicorn
    handles no signals (arq does) and logs nothing of its own (no access log).
    """

    def __init__(
        self,
        metrics: WorkerMetrics,
        before_scrape: Callable[[], Awaitable[None]],
        host: str,
        port: int,
    ) -> None:
        self.metrics = metrics
        self.before_scrape = before_scrape
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None

    def asgi_app(self) -> Starlette:
        """The endpoint's application: ``/metrics`` only."""

        async def serve_metrics(_request: Request) -> Response:
            await self.before_scrape()
            return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

        return Starlette(routes=[Route("/metrics", serve_metrics, methods=["GET"])])

    async def start(self) -> None:
        """Listen; a port in use (or any address that cannot be bound) is one clear error."""
        try:
            sock = socket.create_server((self.host, self.port), reuse_port=False)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise MetricsEndpointError(
                f"the worker's metrics endpoint cannot listen on {self.host}:{self.port}: "
                f"{reason} (MOVIE_WORKER_METRICS_HOST / MOVIE_WORKER_METRICS_PORT; 0 serves none)"
            ) from None
        config = uvicorn.Config(
            self.asgi_app(),
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            http=header_timeout_protocol(REQUEST_TIMEOUT_SECONDS),
            # uvicorn counts the new connection too: one more lets MAX_CONNECTIONS be served.
            limit_concurrency=MAX_CONNECTIONS + 1,
            timeout_keep_alive=int(REQUEST_TIMEOUT_SECONDS),
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._socket = server, sock
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        """Stop listening and let the connections being answered finish (at most 1 s)."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown(sockets=[self._socket] if self._socket else None)
