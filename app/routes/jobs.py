"""Background jobs: state, tries, times, outcome."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from fastapi.responses import JSONResponse

from app.constants import JOB_ID_PATTERN
from app.deps import ServicesDep, call_queue
from app.jobs import JobState, describe_job
from app.models import JobInfo, JobNotFound, Problem
from app.responses import REQUEST_ID_HEADERS, errors, problem, success

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[
    str,
    Path(pattern=JOB_ID_PATTERN, description="Job id, e.g. refresh:42.", examples=["refresh:42"]),
]


@router.get(
    "/{job_id}",
    response_model=JobInfo,
    responses={
        **success(200, "The job."),
        404: {
            "model": JobNotFound,
            "description": "Never queued, or its result expired.",
            "headers": REQUEST_ID_HEADERS,
        },
        **errors(503),
        502: {
            "model": Problem,
            "description": "The job's record in Redis is not JSON written by this service "
            "(e.g. a pickle planted there); it is never decoded. Queue the job again.",
            "headers": REQUEST_ID_HEADERS,
        },
    },
)
async def read_job(job_id: JobId, services: ServicesDep) -> JobInfo | JSONResponse:
    """A job's state (queued, deferred, in_progress, complete, failed), tries, times and outcome."""
    view = await call_queue(services, lambda redis: describe_job(redis, job_id))
    if view.state is JobState.NOT_FOUND:
        body = problem(
            f"No job {job_id}: never queued, or its result expired",
            job_id=job_id,
            state=view.state.value,
        )
        return JSONResponse(body, status_code=status.HTTP_404_NOT_FOUND)
    if view.state is JobState.CORRUPT:
        body = problem(f"Job {job_id}: {view.error}")
        return JSONResponse(body, status_code=status.HTTP_502_BAD_GATEWAY)
    result = view.result if isinstance(view.result, dict) else None
    return JobInfo(
        job_id=view.job_id,
        state=view.state.value,
        function=view.function,
        args=list(view.args),
        tries=view.tries,
        enqueued_at=view.enqueued_at,
        started_at=view.started_at,
        finished_at=view.finished_at,
        result=result,
        error=view.error,
    )
