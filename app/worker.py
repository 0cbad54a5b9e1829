"""The Arq worker: refreshes recommendations on demand and hourly (``python -m app.worker``).

``WorkerSettings`` is built from the ``MOVIE_*`` settings as a plain class with every attribute
set on it directly (arq reads attributes with ``getattr`` and silently ignores inherited ones).
``arq app.worker.WorkerSettings`` and ``arq --check app.worker.WorkerSettings`` work too: the
module builds the class on first access, not at import.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import stamina
from arq import Retry, cron
from arq.connections import RedisSettings
from arq.worker import run_worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
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
)
from app.db import create_engine, create_schema
from app.jobcodec import CODEC
from app.logs import configure_logging
from app.refresh import refresh_user, refresh_users, users_needing_refresh

log = logging.getLogger("app.worker")

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


async def refresh_recommendations(ctx: dict[str, Any], user_id: int) -> dict[str, Any]:
    """Recompute one user's recommendations (idempotent: a re-run writes the same result)."""
    return await _retrying(ctx, refresh_user(ctx["engine"], user_id, ctx["top_n"]))


async def refresh_changed_users(ctx: dict[str, Any]) -> dict[str, Any]:
    """Refresh every user whose ratings changed since their last refresh (the hourly job)."""

    async def work() -> dict[str, Any]:
        users = await users_needing_refresh(ctx["engine"])
        summary = await refresh_users(ctx["engine"], users, ctx["top_n"]) if users else {"users": 0}
        await ctx["redis"].set(CRON_LAST_RUN_KEY, datetime.now(UTC).isoformat())
        return summary

    return await _retrying(ctx, work())


def last_scheduled_run(now: datetime) -> datetime:
    """The most recent top of the hour at or before ``now``."""
    return now.replace(minute=0, second=0, microsecond=0)


def missed_run(last_run: datetime | None, now: datetime) -> bool:
    """Whether the hourly run that should have happened by ``now`` never did."""
    return last_run is None or last_run < last_scheduled_run(now)


async def catch_up(ctx: dict[str, Any], now: datetime | None = None) -> bool:
    """arq has no catch-up: after missed hours, queue the hourly job once (per missed hour,
    even with several workers starting together)."""
    now = now or datetime.now(UTC)
    raw = await ctx["redis"].get(CRON_LAST_RUN_KEY)
    last_run = datetime.fromisoformat(raw.decode()) if raw else None
    if not missed_run(last_run, now):
        return False
    hour = last_scheduled_run(now).isoformat(timespec="minutes")
    job = await ctx["redis"].enqueue_job(
        REFRESH_CHANGED_JOB, _job_id=catch_up_job_id(hour), _queue_name=QUEUE_NAME
    )
    if job is not None:
        log.info("missed the hourly refresh (last run: %s); catching up once", last_run or "never")
    return job is not None


def build_worker_settings(settings: Settings) -> type:
    """The arq WorkerSettings class for ``settings``."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx["top_n"] = RECOMMENDATIONS_PER_USER
        ctx["engine"] = create_engine(settings.database_url)
        await create_schema(ctx["engine"])
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
            cron(refresh_changed_users, name="hourly-refresh", minute=0, second=0, unique=True)
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
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
    }
    return type("WorkerSettings", (), attributes)


def __getattr__(name: str) -> Any:
    """``app.worker.WorkerSettings`` for arq's own CLI, built from the environment on access."""
    if name == "WorkerSettings":
        return build_worker_settings(load_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT; reconnect with back-off when Redis goes away
    (arq itself exits on a dropped connection)."""
    worker_settings = build_worker_settings(settings)
    for attempt in stamina.retry_context(
        on=(RedisConnectionError, RedisTimeoutError, OSError),
        attempts=None,
        timeout=None,
        wait_initial=0.2,
        wait_max=5.0,
    ):
        with attempt:
            if attempt.num > 1:
                log.warning("redis connection lost; worker restarting (attempt %d)", attempt.num)
            run_worker(worker_settings)


def main() -> int:
    """Entry point: settings once, then serve."""
    settings = load_settings_or_exit()
    configure_logging(settings.log_level)
    serve(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
