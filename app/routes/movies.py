"""The catalog: list, read, create, replace, delete films (reads cached in Redis)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status

from app import repository
from app.cache import (
    CachedBody,
    Loaded,
    etag_matches,
    film_digest,
    front_snapshot,
    list_digest,
)
from app.constants import (
    CACHE_STATUS_HEADER,
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_DB_ID,
)
from app.deps import ServicesDep, SessionDep
from app.models import Movie, MovieIn, MoviePage
from app.responses import CACHE_HEADERS, REQUEST_ID_HEADERS, errors, movie_links, success

router = APIRouter(prefix="/movies", tags=["movies"])

MovieId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="Film id.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Makes a retried POST safe: the first response is replayed for 24 h.",
    ),
]
REPLAY_HEADER = {
    "Idempotent-Replayed": {
        "description": "true when this is a stored response replayed for a repeated key.",
        "schema": {"type": "string", "enum": ["true"]},
        "required": False,
    }
}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {
        "description": "Not modified: the If-None-Match tag is current.",
        "headers": {**CACHE_HEADERS, **REQUEST_ID_HEADERS},
    }
}


class MovieNotFound(HTTPException):
    """404 for a film id."""

    def __init__(self, movie_id: int) -> None:
        super().__init__(status.HTTP_404_NOT_FOUND, f"Movie {movie_id} not found")


def _cached_response(request: Request, cached: CachedBody) -> Response:
    headers = {
        "ETag": cached.etag,
        CACHE_STATUS_HEADER: cached.status.value,
        "Cache-Control": "no-cache",
    }
    if etag_matches(request.headers.get("if-none-match"), cached.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(cached.body, media_type="application/json", headers=headers)


@router.get(
    "",
    response_model=MoviePage,
    responses={**success(200, "A page of films.", CACHE_HEADERS), **NOT_MODIFIED, **errors()},
)
async def list_movies(
    request: Request,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Films to skip.")] = 0,
    genre: Annotated[
        str | None, Query(min_length=1, max_length=40, description="Only films of this genre.")
    ] = None,
) -> Response:
    """List films by id, optionally of one genre. Cached; supports If-None-Match."""
    digest = list_digest(limit, offset, genre)

    async def load() -> Loaded:
        async with services.sessions() as session:
            page = await repository.page_json(session, limit=limit, offset=offset, genre=genre)
        return Loaded(page.body, page.movie_ids)

    cached = await services.cache.get_or_load(digest, load, front_snapshot(request.scope, digest))
    return _cached_response(request, cached)


@router.get(
    "/{movie_id}",
    response_model=Movie,
    responses={**success(200, "The film.", CACHE_HEADERS), **NOT_MODIFIED, **errors(404)},
)
async def read_movie(request: Request, services: ServicesDep, movie_id: MovieId) -> Response:
    """One film with its rating summary. Cached; supports If-None-Match."""

    async def load() -> Loaded:
        async with services.sessions() as session:
            body = await repository.movie_json(session, movie_id)
        if body is None:
            raise MovieNotFound(movie_id)
        return Loaded(body, (movie_id,))

    digest = film_digest(movie_id)
    cached = await services.cache.get_or_load(digest, load, front_snapshot(request.scope, digest))
    return _cached_response(request, cached)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Movie,
    responses={
        **success(
            201,
            "Created; Location names the new film.",
            {
                "Location": {
                    "description": "URL of the film.",
                    "schema": {"type": "string"},
                    "required": True,
                },
                **REPLAY_HEADER,
            },
            movie_links("$response.body#/id"),
        ),
        **errors(400, 409, 422, 503),
    },
)
async def create_movie(
    data: MovieIn,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Movie:
    """Add a film. Send an Idempotency-Key to make retries safe."""
    movie = await repository.create_movie(session, data)
    await services.cache.invalidate(shape=True)
    response.headers["Location"] = f"/movies/{movie.id}"
    return movie


@router.put(
    "/{movie_id}",
    response_model=Movie,
    responses={**success(200, "The replaced film."), **errors(400, 404, 422)},
)
async def replace_movie(
    movie_id: MovieId, data: MovieIn, session: SessionDep, services: ServicesDep
) -> Movie:
    """Replace every field of a film."""
    replaced = await repository.replace_movie(session, movie_id, data)
    if replaced is None:
        raise MovieNotFound(movie_id)
    # New genres change which genre pages hold the film: the catalog's shape.
    await services.cache.invalidate([movie_id], shape=replaced.regrouped)
    return replaced.movie


@router.delete(
    "/{movie_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**success(204, "Deleted, with its ratings."), **errors(404)},
)
async def delete_movie(movie_id: MovieId, session: SessionDep, services: ServicesDep) -> Response:
    """Delete a film and its ratings."""
    if not await repository.delete_movie(session, movie_id):
        raise MovieNotFound(movie_id)
    await services.cache.invalidate([movie_id], shape=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
