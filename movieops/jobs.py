"""Triggering and inspecting background jobs from the CLI (same job name and ids as the API)."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from app.constants import (
    ARQ_IN_PROGRESS_KEY_PREFIX,
    ARQ_RESULT_KEY_PREFIX,
    QUEUE_NAME,
    refresh_job_id,
)
from app.jobcodec import arq_client_from_url
from app.jobs import JobState, JobView, TriggerState, describe_job, trigger_refresh
from movieops.errors import JobFailed, JobTimeout, NotRunning
from movieops.secrets import redact_url
from movieops.waiting import wait_until_async

RECENT_SECONDS = 60
T = TypeVar("T")


class RefreshAction(StrEnum):
    """What `movieops refresh` did."""

    ENQUEUED = "enqueued"
    ALREADY_QUEUED = "already_queued"
    IN_PROGRESS = "in_progress"
    DONE_RECENTLY = "done_recently"


REFRESH_ACTIONS = {
    TriggerState.QUEUED: RefreshAction.ENQUEUED,
    TriggerState.ALREADY_QUEUED: RefreshAction.ALREADY_QUEUED,
    TriggerState.IN_PROGRESS: RefreshAction.IN_PROGRESS,
}


@dataclass(frozen=True)
class RefreshOutcome:
    """The action taken, and the job as it stands afterwards."""

    user_id: int
    job_id: str
    action: RefreshAction
    job: JobView


def _client(redis_url: str) -> ArqRedis:
    """The CLI's arq client: job records as JSON (app.jobcodec), never pickle."""
    return arq_client_from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)


def _corrupt(view: JobView) -> JobFailed:
    return JobFailed(
        f"job {view.job_id} cannot be read: {view.error}",
        hint="queue it again (e.g. `movieops refresh --user N --force`) to replace the record",
    )


async def _guarded(redis_url: str, work: Awaitable[T]) -> T:
    try:
        return await work
    except (RedisError, OSError) as exc:
        raise NotRunning(
            f"cannot reach Redis at {redact_url(redis_url)}: {exc}",
            hint="start the stack with `movieops up`, or pass --redis-url",
        ) from None


async def refresh(redis_url: str, user_id: int, force: bool) -> RefreshOutcome:
    """Queue a user's refresh unless one is queued/running, or (without force) just finished."""
    redis = _client(redis_url)
    job_id = refresh_job_id(user_id)
    try:
        current = await _guarded(redis_url, describe_job(redis, job_id))
        finished = current.finished_at
        if (
            not force
            and current.state is JobState.COMPLETE
            and finished is not None
            and (datetime.now(UTC) - finished).total_seconds() < RECENT_SECONDS
        ):
            return RefreshOutcome(user_id, job_id, RefreshAction.DONE_RECENTLY, current)
        state = await _guarded(redis_url, trigger_refresh(redis, user_id))
        action = REFRESH_ACTIONS[state]
        view = await _guarded(redis_url, describe_job(redis, job_id))
        return RefreshOutcome(user_id, job_id, action, view)
    finally:
        await redis.aclose(close_connection_pool=True)


async def wait_for(redis_url: str, job_id: str, within: float) -> JobView:
    """Poll until the job completes (returned), fails (JobFailed) or times out (JobTimeout)."""
    redis = _client(redis_url)
    last: JobView | None = None

    async def finished() -> JobView | None:
        nonlocal last
        view = last = await _guarded(redis_url, describe_job(redis, job_id))
        if view.state is JobState.COMPLETE:
            return view
        if view.state is JobState.FAILED:
            raise JobFailed(f"job {job_id} failed: {view.error}", data=view)
        if view.state is JobState.CORRUPT:
            raise _corrupt(view)
        return None

    def timed_out() -> JobTimeout:
        state = last.state.value if last is not None else "unknown"
        return JobTimeout(
            f"job {job_id} still {state} after {within:g}s",
            hint="is the worker running? `movieops health` checks its heartbeat",
            data=last,
        )

    try:
        return await wait_until_async(finished, within=within, interval=0.05, error=timed_out)
    finally:
        await redis.aclose(close_connection_pool=True)


async def list_jobs(redis_url: str) -> list[JobView]:
    """Queued, running and finished jobs (finished ones until their result expires)."""
    redis = _client(redis_url)
    try:

        async def collect() -> list[str]:
            ids = [i.decode() for i in await redis.zrange(QUEUE_NAME, 0, -1)]
            for prefix in (ARQ_IN_PROGRESS_KEY_PREFIX, ARQ_RESULT_KEY_PREFIX):
                async for key in redis.scan_iter(match=f"{prefix}*", count=500):
                    ids.append(key.decode().removeprefix(prefix))
            return sorted(set(ids))

        job_ids = await _guarded(redis_url, collect())
        views = [await _guarded(redis_url, describe_job(redis, i)) for i in job_ids]
    finally:
        await redis.aclose(close_connection_pool=True)
    order = {
        "in_progress": 0, "queued": 1, "deferred": 2, "corrupt": 3, "failed": 4, "complete": 5,
    }  # fmt: skip
    return sorted(
        (v for v in views if v.state is not JobState.NOT_FOUND),
        key=lambda v: (order.get(v.state.value, 9), v.job_id),
    )


async def show_job(redis_url: str, job_id: str) -> JobView:
    """One job; JobFailed when its record in Redis cannot be decoded."""
    redis = _client(redis_url)
    try:
        view = await _guarded(redis_url, describe_job(redis, job_id))
    finally:
        await redis.aclose(close_connection_pool=True)
    if view.state is JobState.CORRUPT:
        raise _corrupt(view)
    return view
