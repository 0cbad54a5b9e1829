"""Background jobs as the API (and the CLI) see them: trigger a refresh, describe a job.

Shared by every producer so the job name, the id scheme and the queue are typed once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import DeserializationError, JobDef, JobResult, JobStatus
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.constants import (
    ARQ_RESULT_KEY_PREFIX,
    QUEUE_NAME,
    REFRESH_JOB,
    REQUEST_ID_KWARG,
    WAKE_TOKEN,
    WAKE_TOKENS_MAX,
    WAKE_TTL_MS,
    refresh_job_id,
    wake_key,
)
from app.jobcodec import error_text, job_handle

log = logging.getLogger("app.jobs")


class TriggerState(StrEnum):
    """What a refresh request did."""

    QUEUED = "queued"
    ALREADY_QUEUED = "already_queued"
    IN_PROGRESS = "in_progress"


class JobState(StrEnum):
    """A job's state as reported by GET /jobs/{id}."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"
    NOT_FOUND = "not_found"
    CORRUPT = "corrupt"  # its record in Redis is not JSON written by this service: never decoded


CORRUPT_RECORD = (
    "the job's record in Redis is not a JSON job record written by this service; it was not "
    "decoded (queue the job again to replace it)"
)


@dataclass(frozen=True)
class JobView:
    """Everything known about one job."""

    job_id: str
    state: JobState
    function: str | None = None
    args: tuple[Any, ...] = ()
    tries: int | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: str | None = None


async def trigger_refresh(
    redis: ArqRedis, user_id: int, *, request_id: str | None = None
) -> TriggerState:
    """Queue a user's refresh unless one is queued or running.

    arq refuses a job id while its job or its kept result exists. A finished result must not
    block a new manual refresh, so it is cleared and the enqueue tried again.

    ``request_id`` (the API's, for the request that asked) travels in the job as the keyword
    ``request_id``: the worker binds it while the job runs, so its log lines carry it. Without
    one the job has no such keyword (as before request ids) and the worker gives the run a
    fresh id.
    """
    job_id = refresh_job_id(user_id)
    extra: dict[str, Any] = {} if request_id is None else {REQUEST_ID_KWARG: request_id}
    for _ in range(3):
        if await redis.enqueue_job(
            REFRESH_JOB, user_id, _job_id=job_id, _queue_name=QUEUE_NAME, **extra
        ):
            await wake_worker(redis)
            return TriggerState.QUEUED
        status = await job_handle(redis, job_id).status()
        if status is JobStatus.in_progress:
            return TriggerState.IN_PROGRESS
        if status in (JobStatus.queued, JobStatus.deferred):
            return TriggerState.ALREADY_QUEUED
        # complete (result kept) or a race with a job that just finished: clear and retry.
        await redis.delete(ARQ_RESULT_KEY_PREFIX + job_id)
    return TriggerState.ALREADY_QUEUED


async def wake_worker(redis: Redis, queue_name: str = QUEUE_NAME) -> None:
    """Tell an idle worker that a job is queued, so it polls now rather than after its poll
    delay (``app.worker.WakingWorker`` blocks on this list between polls).

    One round trip; the list is capped at ``WAKE_TOKENS_MAX`` tokens and expires. Best effort:
    the job is already queued, and a worker that never sees the token finds it by polling.
    """
    key = wake_key(queue_name)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.lpush(key, WAKE_TOKEN)
            pipe.ltrim(key, 0, WAKE_TOKENS_MAX - 1)
            pipe.pexpire(key, WAKE_TTL_MS)
            await pipe.execute()
    except RedisError as exc:
        log.warning("could not wake the worker (%s); it finds the job at its next poll", exc)


async def describe_job(redis: ArqRedis, job_id: str) -> JobView:
    """The state, tries, times and outcome of a job, from arq's keys."""
    job = job_handle(redis, job_id)
    status = await job.status()
    if status is JobStatus.not_found:
        return JobView(job_id, JobState.NOT_FOUND)
    try:
        info = await job.info()
    except DeserializationError:
        return JobView(job_id, JobState.CORRUPT, error=CORRUPT_RECORD)
    if info is not None and not _well_formed(info):
        return JobView(job_id, JobState.CORRUPT, error=CORRUPT_RECORD)
    if isinstance(info, JobResult):
        ok = info.success
        return JobView(
            job_id,
            JobState.COMPLETE if ok else JobState.FAILED,
            function=info.function,
            args=tuple(info.args),
            tries=info.job_try,
            enqueued_at=info.enqueue_time,
            started_at=info.start_time,
            finished_at=info.finish_time,
            result=info.result if ok else None,
            error=None if ok else error_text(info.result),
        )
    state = {
        JobStatus.in_progress: JobState.IN_PROGRESS,
        JobStatus.deferred: JobState.DEFERRED,
    }.get(status, JobState.QUEUED)
    if not isinstance(info, JobDef):  # the job finished between the two reads
        return JobView(job_id, state)
    return JobView(
        job_id,
        state,
        function=info.function,
        args=tuple(info.args),
        tries=info.job_try,
        enqueued_at=info.enqueue_time,
    )


def _well_formed(info: JobDef) -> bool:
    """Whether a decoded record has the types arq itself writes (JSON from elsewhere may not)."""
    return (
        isinstance(info.function, str)
        and isinstance(info.args, list | tuple)
        and isinstance(info.kwargs, dict)
        and isinstance(info.job_try, int | None)
        and (not isinstance(info, JobResult) or isinstance(info.success, bool))
    )


async def job_pending(redis: ArqRedis, job_id: str) -> bool:
    """Whether a job is queued, deferred or running."""
    status = await job_handle(redis, job_id).status()
    return status in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)
