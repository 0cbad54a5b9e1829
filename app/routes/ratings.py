"""Ratings: a user's score for a film (rating again replaces the earlier score)."""

from __future__ import annotations

from fastapi import APIRouter, status

from app import repository
from app.deps import ServicesDep, SessionDep
from app.models import Rating, RatingIn
from app.responses import errors, success
from app.routes.movies import REPLAY_HEADER, IdempotencyKey, MovieId, MovieNotFound

router = APIRouter(prefix="/movies", tags=["ratings"])


@router.post(
    "/{movie_id}/ratings",
    status_code=status.HTTP_201_CREATED,
    response_model=Rating,
    responses={
        **success(201, "The stored rating.", REPLAY_HEADER),
        **errors(400, 404, 409, 422, 503),
    },
)
async def rate_movie(
    movie_id: MovieId,
    data: RatingIn,
    session: SessionDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Rating:
    """Rate a film from 0.5 to 5 in half steps; a user's new score replaces the old one."""
    rating = await repository.rate_movie(session, movie_id, data)
    if rating is None:
        raise MovieNotFound(movie_id)
    await services.cache.invalidate([movie_id])
    return rating
