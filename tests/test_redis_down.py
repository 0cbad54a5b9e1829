"""Redis stopped mid-run: reads bypass, keyed writes refuse, readiness says why, all recover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from app.redisguard import CircuitBreaker
from tests.support import ValkeyProcess

MOVIE = {"title": "Heat", "year": 1995, "genres": ["Crime"]}


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    """K failures open it; it skips calls until the cool-down, then lets one through."""
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_seconds=5, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert not breaker.allow()
    assert breaker.is_open()
    now[0] = 5.0
    assert breaker.allow()
    breaker.record_success()
    assert not breaker.is_open()
    assert breaker.failures == 0


@pytest.fixture
async def own_valkey() -> AsyncIterator[ValkeyProcess]:
    """A valkey-server this test may stop and start."""
    server = ValkeyProcess()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def outage_app(
    make_settings: Callable[..., Settings], own_valkey: ValkeyProcess
) -> AsyncIterator[FastAPI]:
    """The app on the stoppable server, with a short breaker cool-down."""
    app = create_app(
        make_settings(
            redis_url=own_valkey.url,
            rate_limit_per_minute=100,
            redis_breaker_cooldown_seconds=0.2,
        )
    )
    async with app.router.lifespan_context(app):
        yield app


async def test_outage_degrades_as_documented_and_recovers_without_restart(
    outage_app: FastAPI, own_valkey: ValkeyProcess
) -> None:
    """Down: GET 200 BYPASS without rate headers, keyed POST 503, /ready 503, /health 200.
    Back: HIT/MISS and headers again, keyed POST 201, /ready 200 — same app instance."""
    transport = httpx.ASGITransport(app=outage_app, client=("203.0.113.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/movies", json=MOVIE)).status_code == 201
        assert (await client.get("/movies")).headers["x-cache"] == "MISS"

        own_valkey.stop()
        for _ in range(5):  # before and after the breaker opens
            down = await client.get("/movies")
            assert down.status_code == 200
            assert down.headers["x-cache"] == "BYPASS"
            assert "x-ratelimit-limit" not in down.headers
            assert down.json()["items"][0]["title"] == "Heat"
        keyed = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "during"})
        assert keyed.status_code == 503
        assert keyed.headers["retry-after"] == "1"
        plain = await client.post("/movies", json={**MOVIE, "title": "Ronin"})
        assert plain.status_code == 201
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["ok"] is False
        assert ready.json()["checks"]["database"]["ok"] is True
        assert (await client.get("/health")).status_code == 200

        own_valkey.start()
        await asyncio.sleep(0.25)  # the breaker's cool-down
        assert (await client.get("/ready")).status_code == 200
        statuses = [(await client.get("/movies")).headers["x-cache"] for _ in range(3)]
        assert statuses == ["MISS", "HIT", "HIT"]
        back = await client.get("/movies")
        assert back.headers["x-cache"] == "HIT"
        assert "x-ratelimit-limit" in back.headers
        assert [item["title"] for item in back.json()["items"]] == ["Heat", "Ronin"]
        recovered = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "after"})
        assert recovered.status_code == 201


async def test_write_during_outage_is_not_hidden_by_an_old_cache_entry(
    outage_app: FastAPI, own_valkey: ValkeyProcess
) -> None:
    """Redis keeps its entries across a blip; a write made meanwhile must still show afterwards."""
    transport = httpx.ASGITransport(app=outage_app, client=("203.0.113.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/movies")
        assert (await client.get("/movies")).headers["x-cache"] == "HIT"
        # Make Redis unreachable without losing its data: pause the process.
        assert own_valkey.process is not None
        own_valkey.process.send_signal(19)  # SIGSTOP
        try:
            created = await client.post("/movies", json=MOVIE)
            assert created.status_code == 201
        finally:
            own_valkey.process.send_signal(18)  # SIGCONT
        await asyncio.sleep(0.25)
        after = await client.get("/movies")
        assert after.headers["x-cache"] == "MISS"
        assert [item["title"] for item in after.json()["items"]] == ["Heat"]
