"""Pydantic schemas of the API. Validation lives here, so the published OpenAPI tells the truth."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    StringConstraints,
    field_validator,
)

from app.constants import MAX_DB_ID

DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]
# "Not blank" spelled as an explicit ASCII class: `\S` means different things in JSON Schema's
# ECMAScript regexes and in pydantic's Rust regexes (U+0085, for one).
BLANK = " \t\n\r\f\v"
Title = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"[^ \t\n\r\f\v]"),
    Field(description="Title of the film; at least one non-blank character.", examples=["Heat"]),
]
Genre = Annotated[
    str,
    StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z][A-Za-z0-9 '&-]*$"),
    Field(description="A genre such as Drama or Sci-Fi.", examples=["Crime"]),
]
Year = Annotated[int, Field(ge=1878, le=2100, description="Release year.", examples=[1995])]
Score = Annotated[
    float,
    Field(ge=0.5, le=5, multiple_of=0.5, description="0.5 to 5 in half steps.", examples=[4.5]),
]


class MovieIn(BaseModel):
    """A film as clients send it (create and full replace)."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    year: Year
    genres: Annotated[
        list[Genre], Field(max_length=10, description="Up to 10 genres, case-insensitively unique.")
    ] = []

    @field_validator("title")
    @classmethod
    def _strip_title(cls, value: str) -> str:
        return value.strip(BLANK)

    @field_validator("genres")
    @classmethod
    def _dedupe_genres(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        unique: list[str] = []
        for genre in value:
            if genre.casefold() not in seen:
                seen.add(genre.casefold())
                unique.append(genre)
        return unique


class Movie(BaseModel):
    """A film of the catalog with its rating summary."""

    id: DbId
    title: str
    year: int
    genres: list[str]
    rating_average: float | None = Field(description="Mean score, null when unrated.")
    rating_count: int = Field(ge=0)
    created_at: datetime
    updated_at: datetime


class MoviePage(BaseModel):
    """One page of the catalog."""

    items: list[Movie]
    total: int = Field(ge=0, description="Films matching the filter, over all pages.")
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


class RatingIn(BaseModel):
    """A user's score for a film."""

    model_config = ConfigDict(extra="forbid")

    user_id: DbId
    score: Score


class Rating(BaseModel):
    """A stored rating."""

    movie_id: DbId
    user_id: DbId
    score: float
    rated_at: datetime


REQUEST_ID_FIELD = Field(
    description="The request's id, as in its X-Request-ID header.",
    examples=["4bf92f3577b34da6a3ce929d0e0e4736"],
)


class Problem(BaseModel):
    """Every error body: a human-readable ``detail`` and the request's id."""

    detail: str
    request_id: str = REQUEST_ID_FIELD


class ValidationProblem(BaseModel):
    """Request validation errors (FastAPI's shape), with the request's id."""

    detail: list[dict[str, object]] | str
    request_id: str = REQUEST_ID_FIELD


class Liveness(BaseModel):
    """The process is up."""

    status: str = Field(examples=["ok"])


class Check(BaseModel):
    """One readiness dependency."""

    ok: bool
    detail: str
    latency_ms: float | None = None


class DatabaseCheck(Check):
    """The database's readiness, with its schema revision."""

    revision: str | None = Field(
        default=None, description="The database's schema revision (Alembic); null if unknown."
    )


class Readiness(BaseModel):
    """Readiness of every dependency."""

    status: str = Field(description="ready or unavailable")
    checks: dict[str, SerializeAsAny[Check]]


class RecommendedMovie(BaseModel):
    """One recommended film."""

    movie_id: DbId
    title: str
    score: float = Field(description="Predicted score (similar) or popularity (popular).")
    reason: str = Field(description="similar: collaborative filtering; popular: fallback.")


class Recommendations(BaseModel):
    """A user's latest recommendations."""

    user_id: DbId
    strategy: str = Field(description="collaborative, mixed or popular")
    generated_at: datetime
    refresh_pending: bool | None = Field(
        description="A newer refresh is queued or running (null when Redis is unavailable)."
    )
    items: list[RecommendedMovie]


class RefreshAccepted(BaseModel):
    """A refresh request was accepted."""

    job_id: str
    state: str = Field(description="queued, already_queued or in_progress")
    location: str = Field(description="Where to follow the job: GET /jobs/{job_id}.")


class JobInfo(BaseModel):
    """A background job."""

    job_id: str
    state: str = Field(description="queued, deferred, in_progress, complete, failed or not_found")
    function: str | None = None
    args: list[object] = []
    tries: int | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, object] | None = None
    error: str | None = None


class JobNotFound(BaseModel):
    """No such job: never queued, or its result expired."""

    detail: str
    request_id: str = REQUEST_ID_FIELD
    job_id: str
    state: str = Field(examples=["not_found"])
