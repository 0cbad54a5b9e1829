"""The Arq worker: refreshes recommendations on demand and hourly (``python -m app.worker``).

``WorkerSettings`` is built from the ``MOVIE_*`` settings as a plain class with every attribute
set on it directly (arq reads attributes with ``getattr`` and silently ignores inherited ones).
``serve`` runs it in ``WakingWorker`` (``create_worker``), which an enqueue wakes at once.
``arq app.worker.WorkerSettings`` and ``arq --check app.worker.WorkerSettings`` work too (arq's
own Worker, which only polls): the module builds the class on first access, not at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import stamina
from arq import Retry, cron
from arq.connections import RedisSettings, create_pool, log_redis_info
from arq.worker import Worker, get_kwargs
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError

from app.config import Settings, load_settings, load_settings_or_exit
from app.constants import (
    CRON_LAST_RUN_KEY,
    HEALTH_CHECK_KEY,
    JOB_RESULT_TTL_SECONDS,
    QUEUE_NAME,
    RECOMMENDATIONS_PER_USER,
    REFRESH_CHANGED_JOB,
    catch_up_job_id,
    wake_key,
)
from app.db import SchemaNotReady, create_engine, wait_for_schema
from app.jobcodec import CODEC
from app.logs import configure_logging
from app.migrate import require_schema
from app.refresh import refresh_user, refresh_users, users_needing_refresh
from app.workermetrics import (
    MetricsEndpoint,
    MetricsEndpointError,
    WorkerMetrics,
    current_run,
    job_run,
    note_record,
    timed,
)

log = logging.getLogger("app.worker")
arq_log = logging.getLogger("arq.worker")  # arq's own start-up lines, as arq logs them

# Below this, an idle wait is not worth a blocking BLPOP (whose timeout 0 would mean forever).
MIN_BLOCKING_WAIT_SECONDS = 0.001
# A BLPOP not answered this long after its own timeout means a dead connection: drop it.
WAKE_GRACE_SECONDS = 2.0

HOURLY_REFRESH_CRON = "hourly-refresh"
# The Redis key each cron job writes when it succeeds (read by the metrics at scrape time).
CRON_LAST_RUN_KEYS = {HOURLY_REFRESH_CRON: CRON_LAST_RUN_KEY}

RETRY_BASE_DELAY_SECONDS = 0.5
RETRY_MAX_DELAY_SECONDS = 10.0


def backoff_seconds(job_try: int) -> float:
    """Exponential back-off for transient failures: 0.5 s, 1 s, 2 s … capped at 10 s."""
    return min(RETRY_MAX_DELAY_SECONDS, RETRY_BASE_DELAY_SECONDS * float(2 ** max(0, job_try - 1)))


def is_transient(exc: BaseException) -> bool:
    """Failures worth retrying: a locked/busy database or a Redis blip."""
    if isinstance(exc, OperationalError):
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    return isinstance(exc, RedisError | ConnectionError | TimeoutError)


async def _retrying(ctx: dict[str, Any], work: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await work
    except Exception as exc:
        if is_transient(exc):
            delay = backoff_seconds(ctx["job_try"])
            log.warning(
                "job %s try %d: %s; retrying in %.1fs", ctx["job_id"], ctx["job_try"], exc, delay
            )
            raise Retry(defer=delay) from exc
        raise
    return result


async def refresh_recommendations(
    ctx: dict[str, Any], user_id: int, *, request_id: str | None = None
) -> dict[str, Any]:
    """Recompute one user's recommendations (idempotent: a re-run writes the same result).

    ``request_id`` is the id of the request that queued the job (absent in jobs queued before
    request ids, or by the CLI); ``WakingWorker`` binds it for the whole run, so the work itself
    does not use it."""
    return await _retrying(ctx, refresh_user(ctx["engine"], user_id, ctx["top_n"]))


async def refresh_changed_users(
    ctx: dict[str, Any], *, request_id: str | None = None
) -> dict[str, Any]:
    """Refresh every user whose ratings changed since their last refresh (the hourly job).

    Queued by cron and the start-up catch-up, which carry no ``request_id``; the keyword is
    accepted like every job's (see ``refresh_recommendations``)."""

    async def work() -> dict[str, Any]:
        users = await users_needing_refresh(ctx["engine"])
        summary = await refresh_users(ctx["engine"], users, ctx["top_n"]) if users else {"users": 0}
        await ctx["redis"].set(CRON_LAST_RUN_KEY, datetime.now(UTC).isoformat())
        return summary

    return await _retrying(ctx, work())


def last_scheduled_run(now: datetime, minute: int = 0) -> datetime:
    """The most recent ``minute`` past an hour at or before ``now``."""
    scheduled = now.replace(minute=minute, second=0, microsecond=0)
    return scheduled if scheduled <= now else scheduled - timedelta(hours=1)


def missed_run(last_run: datetime | None, now: datetime, minute: int = 0) -> bool:
    """Whether the hourly run that should have happened by ``now`` never did."""
    return last_run is None or last_run < last_scheduled_run(now, minute)


async def catch_up(ctx: dict[str, Any], now: datetime | None = None) -> bool:
    """arq has no catch-up: after missed hours, queue the hourly job once (per missed hour,
    even with several workers starting together)."""
    now = now or datetime.now(UTC)
    minute = ctx["settings"].hourly_refresh_minute
    raw = await ctx["redis"].get(CRON_LAST_RUN_KEY)
    last_run = datetime.fromisoformat(raw.decode()) if raw else None
    if not missed_run(last_run, now, minute):
        return False
    hour = last_scheduled_run(now, minute).isoformat(timespec="minutes")
    job = await ctx["redis"].enqueue_job(
        REFRESH_CHANGED_JOB, _job_id=catch_up_job_id(hour), _queue_name=QUEUE_NAME
    )
    if job is not None:
        log.info("missed the hourly refresh (last run: %s); catching up once", last_run or "never")
    return job is not None


class WakingWorker(Worker):
    """arq's Worker, woken by an enqueue instead of finding the job at its next poll.

    arq's ``main()`` sleeps ``poll_delay`` between polls (``arq.utils.poll``); here that idle
    wait is a BLPOP on ``wake_key(queue_name)`` with the same timeout, on a connection of its
    own, so a job queued through ``app.jobs.wake_worker`` starts within a round trip; cron
    and deferred jobs are still found by the poll at least every ``poll_delay``. A token pushed
    while the worker was busy stays in the list and makes the next wait return at once, so no
    wake-up is lost. Everything else is arq's: health check, cron, retries, timeouts, signals,
    burst mode (which keeps arq's plain sleep). Nothing read from the list is decoded: a token
    only counts.

    It also keeps the worker's metrics (``app.workermetrics``: every run counted once with arq's
    own verdict, see ``run_job``) and serves them on ``metrics_host:metrics_port`` (0: not
    served), and binds each job's request id for the whole run.
    """

    def __init__(
        self,
        *args: Any,
        metrics: WorkerMetrics | None = None,
        metrics_host: str = "127.0.0.1",
        metrics_port: int = 0,
        **kwargs: Any,
    ) -> None:
        # Always JSON job records (app.jobcodec), whoever builds the worker.
        kwargs.update({name: kwargs.get(name) or codec for name, codec in CODEC.items()})
        super().__init__(*args, **kwargs)
        self.wake_key = wake_key(self.queue_name)
        self.idle_woken = 0  # idle waits ended by a wake-up token
        self.idle_timed_out = 0  # idle waits that ran the whole poll delay
        self._wake_redis: Redis | None = None
        # finish_job runs shielded: a shutdown cancels the job's task, not this settling.
        self._settling: set[asyncio.Task[Any]] = set()
        # One registry for the process, shared by the workers serve() starts after a reconnect.
        self.metrics = metrics or WorkerMetrics()
        self.metrics.know(self.functions)
        self.functions = {
            name: dataclasses.replace(function, coroutine=timed(function.coroutine, self.metrics))
            for name, function in self.functions.items()
        }
        decode = self.job_deserializer

        def decode_and_note(raw: bytes) -> dict[str, Any]:
            record: dict[str, Any] = decode(raw)  # type: ignore[misc]
            note_record(record)
            return record

        self.job_deserializer = decode_and_note
        self.metrics_endpoint = (
            MetricsEndpoint(self.metrics, self._read_for_scrape, metrics_host, metrics_port)
            if metrics_port
            else None
        )

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's ``run_job`` inside a ``JobRun``, counted once arq has settled it.

        arq decodes the record first thing (``note_record`` binds the job's request id there,
        before arq logs the job's start), runs the function (``timed``), then settles the run in
        ``finish_job`` or ``finish_failed_job`` (overridden below to record the verdict)."""
        with job_run(score) as run:
            try:
                await super().run_job(job_id, score)
            finally:
                self.metrics.observe(run)

    async def finish_job(self, job_id: str, finish: bool, *args: Any) -> None:
        """arq's ``finish_job``: ``finish`` true for a done or failed run, false for one that
        runs again (``Retry``, or cancelled by a shutdown). Tracked while it runs, so that
        ``close`` lets it store the result before the pool goes."""
        settling = asyncio.current_task()
        assert settling is not None  # a coroutine always runs in a task
        self._settling.add(settling)
        try:
            await super().finish_job(job_id, finish, *args)
        finally:
            self._settling.discard(settling)
        run = current_run()
        if run is not None:
            run.finished = finish

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's ``finish_failed_job``: a run that failed before its function ran (expired,
        undecodable, unknown function, too many tries)."""
        await super().finish_failed_job(job_id, result_data)
        run = current_run()
        if run is not None:
            run.finished = True

    async def close(self) -> None:
        """arq 0.28's ``Worker.close``, without its crash on a job that had just finished.

        A shutdown cancels every job task. One whose function had already returned is awaiting
        its (shielded) ``finish_job`` then, and ends with ``CancelledError``; arq's ``close``
        re-raised that from its gather, so a SIGTERM in that moment ended the process with a
        traceback and exit 1. Here the job tasks are awaited without re-raising, then the
        settling itself, so the finished job's result is stored before the pool closes (it
        does not run again)."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        outcomes = await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        outcomes += await asyncio.gather(*self._settling, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.warning("a job ended badly during shutdown: %r", outcome)
        self.tasks.clear()
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def record_health(self) -> None:
        """arq's heartbeat; its time becomes the heartbeat metric once Redis took it."""
        await super().record_health()
        self.metrics.heartbeat.set(self._last_health_check)

    async def _read_for_scrape(self) -> None:
        cron_keys = {
            job.name: CRON_LAST_RUN_KEYS[job.name]
            for job in self.cron_jobs
            if job.name in CRON_LAST_RUN_KEYS
        }
        await self.metrics.read_redis(self._pool, self.queue_name, cron_keys)

    async def main(self) -> None:
        """The metrics endpoint around ``serve_jobs``; both stop together."""
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.start()
        try:
            await self.serve_jobs()
        finally:
            if self.metrics_endpoint is not None:
                await self.metrics_endpoint.close()

    async def serve_jobs(self) -> None:
        """arq 0.28's ``Worker.main`` with the wait between polls replaced by ``idle_wait``."""
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        names = ", ".join(self.functions)
        arq_log.info("Starting worker for %d functions: %s", len(self.functions), names)
        await log_redis_info(self.pool, arq_log.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)

        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                await self._poll_iteration()
                if self.burst:
                    if 0 <= self.max_burst_jobs <= self._jobs_started():
                        await asyncio.gather(*self.tasks.values())
                        return
                    if await self.pool.zcard(self.queue_name) == 0:
                        await asyncio.gather(*self.tasks.values())
                        return
                await self.idle_wait(self.poll_delay_s - (loop.time() - started))
        finally:
            await self._close_wake_connection()

    async def idle_wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the next poll; return early when a job is enqueued."""
        if self.burst or seconds < MIN_BLOCKING_WAIT_SECONDS:
            await asyncio.sleep(max(0.0, seconds))
            return
        if self._wake_redis is None:
            self._wake_redis = self._wake_connection()
        try:
            async with asyncio.timeout(seconds + WAKE_GRACE_SECONDS):
                # BLPOP takes fractional seconds, redis-py's stubs say int (and a sync|async
                # union for the result).
                token = await self._wake_redis.blpop([self.wake_key], seconds)  # type: ignore[arg-type,misc]
        except TimeoutError:
            # No answer past the server-side timeout: a dead connection; the next wait reconnects
            # and the next poll reports Redis gone if it is.
            log.warning("no answer from redis while idle; reconnecting the wake-up connection")
            await self._close_wake_connection()
            token = None
        if token is None:
            self.idle_timed_out += 1
        else:
            self.idle_woken += 1

    def _wake_connection(self) -> Redis:
        """A one-connection client of its own: a blocking BLPOP never holds up the pool's
        connections (job reads, results, heartbeat)."""
        shared = self.pool.connection_pool
        pool = ConnectionPool(
            connection_class=shared.connection_class, max_connections=1, **shared.connection_kwargs
        )
        return Redis(connection_pool=pool)

    async def _close_wake_connection(self) -> None:
        client, self._wake_redis = self._wake_redis, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose(close_connection_pool=True)


# WakingWorker's own settings, read from a settings class beside arq's.
OWN_SETTINGS = ("metrics_host", "metrics_port")


def create_worker(settings_cls: type, **kwargs: Any) -> WakingWorker:
    """``arq.worker.create_worker`` for ``WakingWorker`` (plus its ``OWN_SETTINGS``)."""
    own = {
        name: getattr(settings_cls, name) for name in OWN_SETTINGS if hasattr(settings_cls, name)
    }
    return WakingWorker(**{**get_kwargs(settings_cls), **own, **kwargs})


def build_worker_settings(settings: Settings) -> type:
    """The arq WorkerSettings class for ``settings``."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx["top_n"] = RECOMMENDATIONS_PER_USER
        ctx["engine"] = create_engine(settings.database_connect_url())
        # The schema is the migration step's (python -m app.migrate): wait for its revision.
        await wait_for_schema(ctx["engine"], settings.schema_wait_seconds)
        await catch_up(ctx)

    async def shutdown(ctx: dict[str, Any]) -> None:
        # Drop the heartbeat at once, so readiness reports the worker gone now, not in seconds.
        with contextlib.suppress(RedisError):
            await ctx["redis"].delete(HEALTH_CHECK_KEY)
        if "engine" in ctx:
            await ctx["engine"].dispose()

    attributes: dict[str, Any] = {
        "functions": [refresh_recommendations, refresh_changed_users],
        "cron_jobs": [
            cron(
                refresh_changed_users,
                name=HOURLY_REFRESH_CRON,
                minute=settings.hourly_refresh_minute,
                second=0,
                unique=True,
            )
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": RedisSettings.from_dsn(settings.redis_connect_url()),
        # Jobs and results as JSON: a job record someone else wrote into Redis is refused
        # (the job fails with DeserializationError), never unpickled.
        **CODEC,
        "queue_name": QUEUE_NAME,
        "health_check_key": HEALTH_CHECK_KEY,
        "health_check_interval": settings.worker_health_check_seconds,
        "poll_delay": settings.worker_poll_delay_ms / 1000,
        "job_timeout": settings.job_timeout_seconds,
        "max_tries": settings.job_max_tries,
        "keep_result": JOB_RESULT_TTL_SECONDS,
        "max_jobs": 4,
        # WakingWorker's (arq ignores them): its metrics endpoint.
        "metrics_host": settings.worker_metrics_host,
        "metrics_port": settings.worker_metrics_port,
    }
    return type("WorkerSettings", (), attributes)


def __getattr__(name: str) -> Any:
    """``app.worker.WorkerSettings`` for arq's own CLI, built from the environment on access."""
    if name == "WorkerSettings":
        return build_worker_settings(load_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT; reconnect with back-off when Redis goes away
    (arq itself exits on a dropped connection). The metrics live as long as the process, so
    counters survive a reconnect; a metrics port that cannot be bound is not retried
    (``MetricsEndpointError``)."""
    worker_settings = build_worker_settings(settings)
    metrics = WorkerMetrics()
    for attempt in stamina.retry_context(
        # WatchError too: redis-py raises it for a connection lost while a key is watched, and
        # arq's start_jobs watches outside its own `except WatchError` (a Redis restart there
        # used to end the process instead of reconnecting).
        on=(RedisConnectionError, RedisTimeoutError, WatchError, OSError),
        attempts=None,
        timeout=None,
        wait_initial=0.2,
        wait_max=5.0,
    ):
        with attempt:
            if attempt.num > 1:
                log.warning("redis connection lost; worker restarting (attempt %d)", attempt.num)
            create_worker(worker_settings, metrics=metrics).run()


def main() -> int:
    """Entry point: settings once, then serve."""
    settings = load_settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    try:
        require_schema(settings)
        serve(settings)
    except (SchemaNotReady, MetricsEndpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
