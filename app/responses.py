"""OpenAPI documentation of statuses and headers, so every answer a route can give is declared,
the JSON error answer the pure-ASGI middlewares send themselves, and validation errors bounded so
that an error never repeats more than a little of what the client sent."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi.encoders import jsonable_encoder
from starlette.types import Send

from app.constants import CACHE_STATUS_HEADER, RETRY_AFTER_HEADER
from app.models import Problem, ValidationProblem
from app.requestid import REQUEST_ID_HEADER, current_request_id

_INT = {"type": "integer", "minimum": 0}


def _header(description: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"description": description, "schema": schema, "required": required}


def rate_limit_headers(required: bool) -> dict[str, Any]:
    """X-RateLimit-* as sent on limited responses (optional on 2xx: the limiter fails open)."""
    return {
        "X-RateLimit-Limit": _header("Requests allowed per window.", _INT, required),
        "X-RateLimit-Remaining": _header("Requests left in this window.", _INT, required),
        "X-RateLimit-Reset": _header(
            "Seconds until the window resets (integer, at least 1).",
            {"type": "integer", "minimum": 1},
            required,
        ),
        "RateLimit-Policy": _header(
            "IETF draft policy: quota and window.", {"type": "string"}, required
        ),
        "RateLimit": _header(
            "IETF draft state: remaining and reset.", {"type": "string"}, required
        ),
    }


REQUEST_ID_HEADERS: dict[str, Any] = {
    REQUEST_ID_HEADER: _header(
        "The request's id: the client's when well-formed, else a fresh one (also in every "
        "error body and log line).",
        {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
        True,
    )
}

CACHE_HEADERS: dict[str, Any] = {
    "ETag": _header("Strong validator of the body.", {"type": "string"}, True),
    CACHE_STATUS_HEADER: _header(
        "HIT, MISS or BYPASS (Redis unavailable).",
        {"type": "string", "enum": ["HIT", "MISS", "BYPASS"]},
        True,
    ),
    "Cache-Control": _header(
        "Always no-cache: revalidate with If-None-Match.", {"type": "string"}, True
    ),
}

_ERRORS: dict[int, tuple[str, type[Any]]] = {
    400: ("Malformed request: invalid JSON, Content-Length or Idempotency-Key.", Problem),
    404: ("No such resource.", Problem),
    408: ("The request body did not arrive in time (each part within the body timeout).", Problem),
    409: ("A request with this Idempotency-Key is still in progress.", Problem),
    413: ("The request body is larger than the API accepts.", Problem),
    422: ("Invalid input, or an Idempotency-Key reused with a different body.", ValidationProblem),
    429: ("Too many requests in this window for this client and path.", Problem),
    503: ("A dependency is unavailable (e.g. Redis, for Idempotency-Key requests).", Problem),
}


# A route that can answer 400 reads a body (or an Idempotency-Key): the body limits apply to it.
_BODY_LIMIT_ERRORS = (408, 413)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error responses for ``codes``; 422 and 429 always (429 with its required
    headers), the body limits' 408 and 413 wherever 400 is declared, and X-Request-ID on each.

    422 is declared here rather than left to FastAPI, whose own entry documents a body without
    ``request_id`` (every route using this takes a parameter, so it can answer 422).
    """
    documented: dict[int | str, dict[str, Any]] = {}
    limits = _BODY_LIMIT_ERRORS if 400 in codes else ()
    for code in sorted({*codes, *limits, 422, 429}):
        description, model = _ERRORS[code]
        entry: dict[str, Any] = {"model": model, "description": description}
        entry["headers"] = dict(REQUEST_ID_HEADERS)
        if code == 429:
            entry["headers"].update(
                {
                    RETRY_AFTER_HEADER: _header(
                        "Seconds to wait before retrying.", {"type": "integer", "minimum": 1}, True
                    ),
                    **rate_limit_headers(required=True),
                }
            )
        elif code in (409, 503):
            entry["headers"][RETRY_AFTER_HEADER] = _header(
                "Seconds to wait before retrying.", {"type": "integer", "minimum": 1}, True
            )
        documented[code] = entry
    return documented


def success(
    code: int,
    description: str,
    headers: dict[str, Any] | None = None,
    links: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """A documented success response with the optional rate-limit headers (and any others)."""
    entry: dict[str, Any] = {
        "description": description,
        "headers": {**rate_limit_headers(required=False), **REQUEST_ID_HEADERS, **(headers or {})},
    }
    if links:
        entry["links"] = links
    return {code: entry}


def movie_links(id_expression: str) -> dict[str, Any]:
    """OpenAPI links from a response naming a film to every operation on that film."""
    parameters = {"movie_id": id_expression}
    return {
        name: {"operationId": operation, "parameters": parameters}
        for name, operation in [
            ("GetMovie", "read_movie"),
            ("ReplaceMovie", "replace_movie"),
            ("DeleteMovie", "delete_movie"),
            ("RateMovie", "rate_movie"),
        ]
    }


def problem(detail: Any, **fields: Any) -> dict[str, Any]:
    """The API's error body: ``detail``, the current request's id beside it, and ``fields``."""
    return {"detail": detail, "request_id": current_request_id(), **fields}


async def send_problem(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer from ASGI middleware with the API's error body ``{"detail", "request_id"}``."""
    body = json.dumps(problem(detail)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


ECHO_LIMIT = 100
"""Characters of client input a validation error repeats (longer strings are cut, with "…")."""
MAX_REPORTED_ERRORS = 20
"""Validation errors listed in one answer (the first ones)."""
_MSG_LIMIT = 300
_OMIT = object()


def _cut(text: str, limit: int = ECHO_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _echo(value: Any) -> Any:
    """``value`` as JSON if short, a cut string, or ``_OMIT`` (a large object or array)."""
    value = jsonable_encoder(value)
    if isinstance(value, str):
        return _cut(value)
    if len(json.dumps(value)) <= ECHO_LIMIT:
        return value
    return _OMIT


def bounded_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as ``{type, loc, msg[, input][, ctx]}`` that repeat little of the input.

    Pydantic puts the offending value in ``input`` (for a missing field: the whole body) and may
    put it in ``ctx``; an answer repeating a 1 MB title would cost more than the request. Strings
    are cut at ``ECHO_LIMIT`` characters, large objects and arrays left out, and only the first
    ``MAX_REPORTED_ERRORS`` errors listed (each unknown field is an error of its own).
    """
    bounded: list[dict[str, Any]] = []
    for error in list(errors)[:MAX_REPORTED_ERRORS]:
        item: dict[str, Any] = {
            "type": str(error["type"]),
            "loc": [_cut(part) if isinstance(part, str) else part for part in error["loc"]],
            "msg": _cut(str(error["msg"]), _MSG_LIMIT),
        }
        if "input" in error and (echoed := _echo(error["input"])) is not _OMIT:
            item["input"] = echoed
        if error.get("ctx"):
            ctx = {key: _echo(value) for key, value in error["ctx"].items()}
            item["ctx"] = {key: value for key, value in ctx.items() if value is not _OMIT}
        bounded.append(item)
    return bounded
