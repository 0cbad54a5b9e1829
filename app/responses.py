"""OpenAPI documentation of statuses and headers, so every answer a route can give is declared,
and the JSON error answer the pure-ASGI middlewares send themselves."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Send

from app.models import Problem, ValidationProblem

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


CACHE_HEADERS: dict[str, Any] = {
    "ETag": _header("Strong validator of the body.", {"type": "string"}, True),
    "X-Cache": _header(
        "HIT, MISS or BYPASS (Redis unavailable).",
        {"type": "string", "enum": ["HIT", "MISS", "BYPASS"]},
        True,
    ),
    "Cache-Control": _header(
        "Always no-cache: revalidate with If-None-Match.", {"type": "string"}, True
    ),
}

_ERRORS: dict[int, tuple[str, type[Any]]] = {
    400: ("Malformed request: invalid JSON or Idempotency-Key.", Problem),
    404: ("No such resource.", Problem),
    409: ("A request with this Idempotency-Key is still in progress.", Problem),
    422: ("Invalid input, or an Idempotency-Key reused with a different body.", ValidationProblem),
    429: ("Too many requests in this window for this client and path.", Problem),
    503: ("A dependency is unavailable (e.g. Redis, for Idempotency-Key requests).", Problem),
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error responses for ``codes``; 429 always, with its required headers."""
    documented: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, 429}):
        description, model = _ERRORS[code]
        entry: dict[str, Any] = {"model": model, "description": description}
        if code == 429:
            entry["headers"] = {
                "Retry-After": _header(
                    "Seconds to wait before retrying.", {"type": "integer", "minimum": 1}, True
                ),
                **rate_limit_headers(required=True),
            }
        elif code in (409, 503):
            entry["headers"] = {
                "Retry-After": _header(
                    "Seconds to wait before retrying.", {"type": "integer", "minimum": 1}, True
                )
            }
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
        "headers": {**rate_limit_headers(required=False), **(headers or {})},
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


async def send_problem(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer from ASGI middleware with the API's error body ``{"detail": ...}``."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
