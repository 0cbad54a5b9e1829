"""Idempotency-Key on POST: replay, 409 in progress, 422 on a new body, crash safety."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.types import Message, Receive, Scope, Send

from app import repository
from app.config import Settings
from app.constants import idempotency_key
from app.idempotency import IdempotencyMiddleware, Verdict, fingerprint, judge, should_store
from app.redisguard import RedisGuard
from tests.conftest import CLIENT_IP

MOVIE = {"title": "Heat", "year": 1995, "genres": ["Crime"]}


def test_fingerprint_ignores_json_key_order_and_whitespace() -> None:
    """The same JSON document in another spelling is the same request."""
    a = fingerprint("POST", "/movies", b'{"title": "Heat", "year": 1995}')
    b = fingerprint("POST", "/movies", b'{"year":1995,"title":"Heat"}')
    assert a == b
    assert a != fingerprint("POST", "/movies", b'{"year":1996,"title":"Heat"}')
    assert a != fingerprint("POST", "/movies/1/ratings", b'{"year":1995,"title":"Heat"}')
    assert fingerprint("POST", "/m", b"\xff not json") == fingerprint(
        "POST", "/m", b"\xff not json"
    )


def test_judge_and_storage_rules() -> None:
    """Mismatch beats state; completed replays; 5xx and timing-dependent 4xx are not kept."""
    assert judge({"fingerprint": "a", "state": "completed"}, "b") is Verdict.MISMATCH
    assert judge({"fingerprint": "a", "state": "completed"}, "a") is Verdict.REPLAY
    assert judge({"fingerprint": "a", "state": "in_progress"}, "a") is Verdict.IN_PROGRESS
    assert [should_store(s) for s in (201, 404, 422, 409, 429, 500, 503)] == [
        True, True, True, False, False, False, False,
    ]  # fmt: skip


async def _movie_count(app: FastAPI) -> int:
    async with app.state.services.sessions() as session:
        return await repository.count_movies(session)


async def test_retry_replays_the_first_response_and_creates_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Same key and body: the stored 201 comes back with Idempotent-Replayed, no second row."""
    headers = {"Idempotency-Key": "create-heat-1"}
    first = await client.post("/movies", json=MOVIE, headers=headers)
    # Same document, other key order: still the same request.
    again = await client.post(
        "/movies",
        content=json.dumps(dict(reversed(MOVIE.items()))),
        headers={**headers, "content-type": "application/json"},
    )
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert "x-ratelimit-limit" in again.headers
    assert await _movie_count(app) == 1


async def test_different_body_with_same_key_is_422(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A reused key with another body is refused and creates nothing."""
    headers = {"Idempotency-Key": "k-422"}
    assert (await client.post("/movies", json=MOVIE, headers=headers)).status_code == 201
    other = await client.post("/movies", json={**MOVIE, "title": "Ronin"}, headers=headers)
    assert other.status_code == 422
    assert "different request body" in other.json()["detail"]
    assert await _movie_count(app) == 1


async def test_request_while_first_is_in_progress_gets_409(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    """A key whose first request still runs (its claim holds) answers 409 + Retry-After: 1."""
    body = json.dumps(MOVIE).encode()
    claim = {
        "state": "in_progress",
        "fingerprint": fingerprint("POST", "/movies", body),
        "owner": "x",
    }
    await redis.set(
        idempotency_key(CLIENT_IP, "POST", "/movies", "busy"), json.dumps(claim), px=60_000
    )
    response = await client.post(
        "/movies",
        content=body,
        headers={"Idempotency-Key": "busy", "content-type": "application/json"},
    )
    assert response.status_code == 409
    assert response.json() == {
        "detail": "A request with this Idempotency-Key is in progress",
        "request_id": response.headers["x-request-id"],
    }
    assert response.headers["retry-after"] == "1"


async def test_fifty_concurrent_identical_posts_create_exactly_one_movie(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Racing duplicates: one 201 that did the work, the others 409 or replays of it."""
    headers = {"Idempotency-Key": "race"}
    responses = await asyncio.gather(
        *(client.post("/movies", json=MOVIE, headers=headers) for _ in range(50))
    )
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {201, 409}
    originals = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    assert len(originals) == 1
    for replay in (r for r in responses if r.status_code == 201):
        assert replay.content == originals[0].content
    assert await _movie_count(app) == 1


async def test_failed_handler_releases_the_key_so_a_retry_runs(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis
) -> None:
    """A 5xx is not stored: the claim is removed and the retry creates the movie."""
    from app.deps import get_session

    async def broken_session() -> None:
        raise RuntimeError("database exploded")

    app.dependency_overrides[get_session] = broken_session
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as failing:
        crashed = await failing.post("/movies", json=MOVIE, headers={"Idempotency-Key": "retry-me"})
    app.dependency_overrides.clear()
    assert crashed.status_code == 500
    assert await redis.exists(idempotency_key(CLIENT_IP, "POST", "/movies", "retry-me")) == 0

    retried = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "retry-me"})
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert await _movie_count(app) == 1


async def test_deterministic_4xx_is_stored_and_replayed(client: httpx.AsyncClient) -> None:
    """A 404 (rating a missing film) replays as the same 404."""
    headers = {"Idempotency-Key": "rate-missing"}
    body = {"user_id": 1, "score": 3}
    first = await client.post("/movies/999/ratings", json=body, headers=headers)
    second = await client.post("/movies/999/ratings", json=body, headers=headers)
    assert first.status_code == second.status_code == 404
    assert second.headers["idempotent-replayed"] == "true"


async def test_invalid_keys_are_400_and_requests_without_key_run_normally(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Empty, too long or non-visible keys → 400; no header → plain POST."""
    for bad in ["", "x" * 256, "has space", "tab\tkey"]:
        response = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": bad})
        assert response.status_code == 400, bad
        assert "Idempotency-Key" in response.json()["detail"]
    assert await _movie_count(app) == 0
    plain = [await client.post("/movies", json=MOVIE) for _ in range(2)]
    assert [r.status_code for r in plain] == [201, 201]
    assert await _movie_count(app) == 2


async def test_completed_record_is_kept_for_a_day(client: httpx.AsyncClient, redis: Redis) -> None:
    """The stored response lives idempotency_ttl_seconds (24 h by default)."""
    await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "ttl"})
    ttl = await redis.pttl(idempotency_key(CLIENT_IP, "POST", "/movies", "ttl"))
    assert 86_000_000 < ttl <= 86_400_000


class _BigResponder:
    """An endpoint whose 201 body (three parts of 2 000 bytes) is larger than the storage cap."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await receive()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        for last in (False, False, True):
            await send({"type": "http.response.body", "body": b"x" * 2_000, "more_body": not last})


async def test_response_over_the_cap_is_sent_not_stored_and_the_key_released(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Too large to keep: the client gets it whole, the key is free (a retry runs), a warning."""
    endpoint = _BigResponder()
    guard = RedisGuard.from_settings(settings)
    middleware = IdempotencyMiddleware(
        endpoint, guard, lease_seconds=60, ttl_seconds=3_600, max_response_bytes=1_024
    )
    transport = httpx.ASGITransport(app=middleware, client=(CLIENT_IP, 1))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for _ in range(2):
                response = await http.post("/big", content=b"{}", headers={"Idempotency-Key": "b"})
                assert response.status_code == 201
                assert response.content == b"x" * 6_000
                assert "idempotent-replayed" not in response.headers
    finally:
        await guard.aclose()
    assert endpoint.calls == 2
    assert await redis.exists(idempotency_key(CLIENT_IP, "POST", "/big", "b")) == 0
    assert "not stored: response larger than 1024 bytes" in caplog.text


async def test_client_leaving_mid_body_claims_and_runs_nothing(
    settings: Settings, redis: Redis
) -> None:
    """A body cut by a disconnect is neither fingerprinted nor run (it would store a 400)."""
    endpoint = _BigResponder()
    guard = RedisGuard.from_settings(settings)
    middleware = IdempotencyMiddleware(
        endpoint, guard, lease_seconds=60, ttl_seconds=3_600, max_response_bytes=1_024
    )
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"title": "He', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/movies",
        "headers": [(b"idempotency-key", b"gone")],
        "client": (CLIENT_IP, 1),
    }
    try:
        await middleware(scope, receive, send)
    finally:
        await guard.aclose()
    assert endpoint.calls == 0
    assert sent == []
    assert await redis.exists(idempotency_key(CLIENT_IP, "POST", "/movies", "gone")) == 0
