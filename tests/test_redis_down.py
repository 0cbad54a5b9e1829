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


def test_breaker_opens_after_threshold_stalls_and_half_opens_after_cooldown() -> None:
    """K separate failures open it; it skips calls until the cool-down, then a probe closes it."""
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_seconds=5, clock=lambda: now[0])
    first = breaker.acquire()
    assert first is not None
    now[0] = 0.1
    breaker.record_failure(first)
    now[0] = 0.2
    second = breaker.acquire()
    assert second is not None
    now[0] = 0.3
    breaker.record_failure(second)
    assert breaker.is_open()
    assert breaker.acquire() is None
    now[0] = 5.3
    probe = breaker.acquire()
    assert probe is not None
    assert probe.probe
    breaker.record_success(probe)
    assert not breaker.is_open()
    assert breaker.failures == 0


def test_calls_caught_in_one_stall_count_as_one_failure() -> None:
    """Fifty concurrent calls timing out together are one stall: the breaker stays closed."""
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, cooldown_seconds=5, clock=lambda: now[0])
    attempts = [breaker.acquire() for _ in range(50)]
    now[0] = 0.25
    for attempt in attempts:
        breaker.record_failure(attempt)
    assert breaker.failures == 1
    assert not breaker.is_open()
    assert breaker.acquire() is not None


def test_half_open_lets_exactly_one_probe_through_until_it_succeeds() -> None:
    """After the cool-down one caller probes; everyone else stays on the open path meanwhile.
    A failed probe keeps it open for another cool-down; a cancelled one frees the probe."""
    now = [0.0]
    breaker = CircuitBreaker(threshold=1, cooldown_seconds=1, clock=lambda: now[0])
    attempt = breaker.acquire()
    assert attempt is not None
    breaker.record_failure(attempt)
    now[0] = 1.0
    probe = breaker.acquire()
    assert probe is not None
    assert probe.probe
    assert [breaker.acquire() for _ in range(10)] == [None] * 10
    breaker.record_failure(probe)  # still down
    assert breaker.acquire() is None
    now[0] = 2.0
    second_probe = breaker.acquire()
    assert second_probe is not None
    breaker.release(second_probe)  # cancelled: no verdict
    third_probe = breaker.acquire()
    assert third_probe is not None
    assert third_probe.probe
    assert breaker.acquire() is None
    breaker.record_success(third_probe)
    assert all(breaker.acquire() is not None for _ in range(5))


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


async def test_a_brief_stall_is_slow_not_down_under_concurrent_requests(
    outage_app: FastAPI, own_valkey: ValkeyProcess
) -> None:
    """Redis paused for less than the retry budget: every concurrent request succeeds with its
    Redis features (no 503, no BYPASS, rate-limit headers present) and the breaker stays closed."""
    transport = httpx.ASGITransport(app=outage_app, client=("203.0.113.9", 1))
    guard = outage_app.state.services.guard
    process = own_valkey.process
    assert process is not None
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/movies", json=MOVIE)).status_code == 201
        await client.get("/movies")

        async def stall() -> None:
            process.send_signal(19)  # SIGSTOP
            await asyncio.sleep(0.4)  # well inside the 1 s budget, longer than one attempt
            process.send_signal(18)  # SIGCONT

        async def keyed_post(n: int) -> httpx.Response:
            body = {**MOVIE, "title": f"Heat {n}"}
            return await client.post("/movies", json=body, headers={"Idempotency-Key": f"k-{n}"})

        stalled = asyncio.create_task(stall())
        await asyncio.sleep(0.02)
        responses = await asyncio.gather(
            *(client.get("/movies") for _ in range(15)), *(keyed_post(n) for n in range(15))
        )
        await stalled
    reads, writes = responses[:15], responses[15:]
    assert [r.status_code for r in writes] == [201] * 15, [r.text for r in writes]
    assert all(r.status_code == 200 for r in reads)
    assert all(r.headers["x-cache"] in {"HIT", "MISS"} for r in reads)
    assert all("x-ratelimit-limit" in r.headers for r in responses)
    assert not guard.breaker.is_open()


async def test_a_stall_longer_than_the_budget_is_an_outage(
    make_settings: Callable[..., Settings], own_valkey: ValkeyProcess
) -> None:
    """Redis paused beyond the budget: keyed POSTs get 503, reads bypass, and after the
    threshold of stalls the breaker opens; once Redis resumes one probe closes it again."""
    app = create_app(
        make_settings(
            redis_url=own_valkey.url,
            redis_timeout_ms=50,
            redis_retry_budget_ms=150,
            redis_breaker_threshold=2,
            redis_breaker_cooldown_seconds=0.2,
        )
    )
    guard = app.state.services.guard
    assert own_valkey.process is not None
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            own_valkey.process.send_signal(19)  # SIGSTOP
            try:
                keyed = await client.post(
                    "/movies", json=MOVIE, headers={"Idempotency-Key": "stalled"}
                )
                read = await client.get("/movies")
                assert guard.breaker.is_open()
            finally:
                own_valkey.process.send_signal(18)  # SIGCONT
            assert keyed.status_code == 503
            assert read.headers["x-cache"] == "BYPASS"
            await asyncio.sleep(0.25)
            assert (await client.get("/movies")).headers["x-cache"] in {"HIT", "MISS"}
            assert not guard.breaker.is_open()


async def test_an_unreadable_idempotency_record_is_a_503_not_a_crash(
    outage_app: FastAPI, own_valkey: ValkeyProcess
) -> None:
    """A hostile neighbour on Redis overwrote a record with garbage: a clear 503, never a 500,
    and nothing from Redis is evaluated."""
    from redis.asyncio import Redis

    from app.constants import idempotency_key

    transport = httpx.ASGITransport(app=outage_app, client=("203.0.113.9", 1))
    async with Redis.from_url(own_valkey.url) as redis:
        await redis.set(
            idempotency_key("203.0.113.9", "POST", "/movies", "bad"), b"\x80\x04garbage"
        )
        await redis.set(
            idempotency_key("203.0.113.9", "POST", "/movies", "shape"),
            '{"state": "completed", "fingerprint": "x", "owner": "o", "body": 5}',
        )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for key in ("bad", "shape"):
            answer = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": key})
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == "1"
            assert "unreadable" in answer.json()["detail"]
