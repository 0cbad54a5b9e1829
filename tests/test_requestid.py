"""X-Request-ID: kept when well-formed, replaced otherwise, on every answer and in every error
body, and the current id while the request runs."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.config import Settings
from app.main import create_app
from app.requestid import accept_request_id, bound_request_id, current_request_id
from tests.conftest import CLIENT_IP
from tests.support import ThreadedServer

MOVIE = {"title": "Heat", "year": 1995, "genres": ["Crime"]}
FRESH = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "offered",
    [
        str(uuid.uuid4()),
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # a ULID
        "4bf92f3577b34da6a3ce929d0e0e4736",  # a W3C trace id
        "lb-1.zone_a:42",
        "x" * 128,
    ],
)
def test_a_well_formed_id_is_kept(offered: str) -> None:
    """Letters, digits and . _ : - up to 128 characters, starting with a letter or digit."""
    assert accept_request_id(offered) == offered


@pytest.mark.parametrize(
    "offered", [None, "", "x" * 129, "-leading-dash", "has space", "new\nline", "ünï", "a/b"]
)
def test_anything_else_is_replaced_by_a_fresh_id(offered: str | None) -> None:
    """Missing, empty, too long or other characters: 32 fresh hex digits, never a refusal."""
    fresh = accept_request_id(offered)
    assert FRESH.fullmatch(fresh)
    assert fresh != offered


def test_the_bound_id_is_current_only_inside_its_block() -> None:
    """bound_request_id sets the id for the block and restores the previous one after."""
    assert current_request_id() is None
    with bound_request_id("outer"):
        with bound_request_id("inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == "outer"
    assert current_request_id() is None


async def test_the_clients_id_is_echoed_and_a_malformed_one_replaced(
    client: httpx.AsyncClient,
) -> None:
    """A good id comes back as sent; a bad one, or two of them, gets a fresh id."""
    kept = await client.get("/movies", headers={"X-Request-ID": "client-chosen-1"})
    bad = await client.get("/movies", headers={"X-Request-ID": "bad id; drop table"})
    long = await client.get("/movies", headers={"X-Request-ID": "y" * 129})
    two = await client.get(
        "/movies", headers=[("X-Request-ID", "first-id"), ("X-Request-ID", "second-id")]
    )
    none = await client.get("/movies")
    assert kept.headers["x-request-id"] == "client-chosen-1"
    for response in (bad, long, two, none):
        assert response.status_code == 200
        assert FRESH.fullmatch(response.headers["x-request-id"])
    ids = {r.headers["x-request-id"] for r in (bad, long, two, none)}
    assert len(ids) == 4  # each request its own


async def test_every_status_carries_the_id_and_every_error_body_names_it(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """2xx, a replay, 404, 405, 422, 400 and 429: the header on each, and each error body
    holds the same id beside its detail."""
    app = create_app(make_settings(rate_limit_per_minute=6))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "k"})
            replay = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "k"})
            errors = [
                await client.get("/movies/999"),  # 404
                await client.delete("/movies"),  # 405
                await client.get("/movies?limit=0"),  # 422
                await client.post(  # 400
                    "/movies", content=b"{", headers={"content-type": "application/json"}
                ),
            ]
            limited = [await client.get("/movies/999") for _ in range(6)][-1]
    assert created.status_code == replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert FRESH.fullmatch(created.headers["x-request-id"])
    # The replay is the stored answer, but its id is the replay's own.
    assert FRESH.fullmatch(replay.headers["x-request-id"])
    assert replay.headers["x-request-id"] != created.headers["x-request-id"]
    assert [r.status_code for r in errors] == [404, 405, 422, 400]
    assert limited.status_code == 429
    for response in [*errors, limited]:
        request_id = response.headers["x-request-id"]
        assert FRESH.fullmatch(request_id)
        assert response.json()["request_id"] == request_id
        assert response.json()["detail"]


def test_a_413_from_the_body_limit_carries_the_id_over_http(
    make_settings: Callable[..., Settings],
) -> None:
    """The body limit refuses before any other layer, yet its 413 has the header and the body."""
    app = create_app(make_settings(max_body_bytes=1024))
    with ThreadedServer(app).running() as server, httpx.Client(base_url=server.url) as client:
        refused = client.post(
            "/movies",
            json={**MOVIE, "title": "x" * 5000},
            headers={"X-Request-ID": "big-body-1"},
        )
    assert refused.status_code == 413
    assert refused.headers["x-request-id"] == "big-body-1"
    assert refused.json() == {
        "detail": "Request body larger than 1024 bytes",
        "request_id": "big-body-1",
    }


async def test_an_unhandled_error_is_a_json_500_with_the_id_and_logged_with_it(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash inside a route: problem JSON 500 naming the id, and the traceback's log record
    carries the same id."""
    from app.deps import get_session

    async def broken_session() -> None:
        raise RuntimeError("database exploded")

    app.dependency_overrides[get_session] = broken_session
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    with caplog.at_level(logging.ERROR, logger="app.error"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            crashed = await client.post("/movies", json=MOVIE, headers={"X-Request-ID": "boom-1"})
    assert crashed.status_code == 500
    assert crashed.headers["x-request-id"] == "boom-1"
    assert crashed.json() == {"detail": "Internal Server Error", "request_id": "boom-1"}
    errors = [r for r in caplog.records if r.name == "app.error"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "POST /movies" in errors[0].getMessage()


async def test_the_id_is_current_while_the_request_runs_and_only_then(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Code running for the request (a route here; log formatters alike) reads its id."""
    seen: list[str | None] = []

    @app.get("/probe-id")
    async def probe_id() -> dict[str, str]:
        seen.append(current_request_id())
        return {}

    response = await client.get("/probe-id", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 200
    assert seen == ["trace-me"]
    assert current_request_id() is None  # nothing leaks out of the request
