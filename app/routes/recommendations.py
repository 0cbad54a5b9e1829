"""Per-user recommendations (computed by the worker) and their on-demand refresh."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status

from app import repository
from app.constants import MAX_DB_ID, refresh_job_id
from app.deps import ServicesDep, SessionDep, call_queue
from app.jobs import job_pending, trigger_refresh
from app.models import Recommendations, RefreshAccepted
from app.redisguard import RedisUnavailable
from app.refresh import no_ratings_detail
from app.requestid import current_request_id
from app.responses import errors, success
from app.routes.movies import IdempotencyKey

router = APIRouter(prefix="/users/{user_id}/recommendations", tags=["recommendations"])

UserId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="User id.")]


@router.get(
    "",
    response_model=Recommendations,
    responses={**success(200, "The latest recommendations."), **errors(404)},
)
async def read_recommendations(
    user_id: UserId, session: SessionDep, services: ServicesDep
) -> Recommendations:
    """The user's latest recommendations, and whether a newer refresh is on its way."""
    found = await repository.get_recommendations(session, user_id)
    if found is None:
        if not await repository.user_has_ratings(session, user_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, no_ratings_detail(user_id))
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"No recommendations for user {user_id} yet; "
            f"POST /users/{user_id}/recommendations/refresh to compute them",
        )
    row, items = found
    try:
        pending: bool | None = await services.guard.call(
            lambda redis: job_pending(redis, refresh_job_id(user_id))
        )
    except RedisUnavailable:
        pending = None
    return Recommendations(
        user_id=user_id,
        strategy=row.strategy,
        generated_at=row.generated_at,
        refresh_pending=pending,
        items=items,
    )


@router.post(
    "/refresh",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RefreshAccepted,
    responses={
        **success(
            202,
            "Accepted; Location names the job.",
            {
                "Location": {
                    "description": "URL of the job.",
                    "schema": {"type": "string"},
                    "required": True,
                }
            },
            {
                "GetJob": {
                    "operationId": "read_job",
                    "parameters": {"job_id": "$response.body#/job_id"},
                }
            },
        ),
        **errors(400, 404, 409, 422, 503),
    },
)
async def refresh_recommendations(
    user_id: UserId,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> RefreshAccepted:
    """Queue a refresh now, unless one is already queued or running (then say so); 404 for a
    user who has rated nothing (there is nothing to compute, and nothing is queued)."""
    if not await repository.user_has_ratings(session, user_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, no_ratings_detail(user_id))
    request_id = current_request_id()
    state = await call_queue(
        services, lambda redis: trigger_refresh(redis, user_id, request_id=request_id)
    )
    job_id = refresh_job_id(user_id)
    location = f"/jobs/{job_id}"
    response.headers["Location"] = location
    return RefreshAccepted(job_id=job_id, state=state.value, location=location)
