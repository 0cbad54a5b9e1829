"""GET /metrics: requests, rate-limit decisions, cache and idempotency outcomes, Redis errors,
the breaker and readiness, counted as the contract names them; nothing when switched off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.config import Settings
from app.constants import idempotency_key
from app.idempotency import fingerprint
from app.main import create_app
from app.metrics import ApiMetrics
from tests.conftest import CLIENT_IP
from tests.support import ThreadedServer, ValkeyProcess

MOVIE = {"title": "Heat", "year": 1995, "genres": ["Crime"]}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    """The app's metrics right now."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


@asynccontextmanager
async def serving(app: FastAPI, peer: str = CLIENT_IP) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` started, and a client of it from ``peer``."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def test_metrics_are_served_over_http_in_prometheus_text_format(settings: Settings) -> None:
    """A real scrape: text format 0.0.4 with the API's metrics and the process's own; /metrics is
    not in the OpenAPI schema."""
    with (
        ThreadedServer(create_app(settings)).running() as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert client.get("/movies").status_code == 200
        response = client.get("/metrics")
        schema = client.get("/openapi.json").json()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(response.text)
    labels = {"method": "GET", "route": "/movies", "status": "200"}
    assert value(samples, "movie_http_requests_total", **labels) == 1
    assert value(
        samples, "movie_http_request_duration_seconds_count", method="GET", route="/movies"
    )
    assert any(name.startswith("process_") for name, _ in samples)
    assert any(name.startswith("python_") for name, _ in samples)
    assert "/metrics" not in schema["paths"]


async def test_metrics_switched_off_have_no_route(make_settings: Callable[..., Settings]) -> None:
    """MOVIE_METRICS_ENABLED=false: /metrics is 404 (an unmatched path like any other) and no
    metrics object is built."""
    app = create_app(make_settings(metrics_enabled=False))
    async with serving(app) as client:
        await client.get("/movies")
        response = await client.get("/metrics")
    assert response.status_code == 404
    assert "x-ratelimit-limit" in response.headers  # counted: not an exempt path any more
    assert not hasattr(app.state, "metrics")


async def test_requests_are_counted_by_method_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    """Two spellings of one film are one route; made-up paths are `unmatched`; a method the API
    does not know is OTHER; the scrape itself is in progress while it is answered."""
    await client.get("/movies/1")
    await client.get("/movies/01")
    await client.get("/no/such/path")
    await client.get("/another/made-up/path")
    await client.patch("/movies")
    await client.request("BREW", "/movies")
    samples = await scrape(client)
    requests = "movie_http_requests_total"
    assert value(samples, requests, method="GET", route="/movies/{movie_id}", status="404") == 2
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 2
    assert value(samples, requests, method="PATCH", route="/movies", status="405") == 1
    assert value(samples, requests, method="OTHER", route="/movies", status="405") == 1
    routes = {dict(labels).get("route") for name, labels in samples if name == requests}
    assert routes == {"/movies/{movie_id}", "unmatched", "/movies"}
    count = "movie_http_request_duration_seconds_count"
    assert value(samples, count, method="GET", route="/movies/{movie_id}") == 2
    assert value(samples, "movie_http_requests_in_progress") == 1  # this scrape


async def test_cache_outcomes_count_a_miss_a_hit_and_a_304(client: httpx.AsyncClient) -> None:
    """MISS, then a HIT answered before routing, then a 304 for the current tag."""
    miss = await client.get("/movies?limit=5")
    hit = await client.get("/movies?limit=5")
    revalidated = await client.get(
        "/movies?limit=5", headers={"If-None-Match": hit.headers["etag"]}
    )
    assert [miss.headers["x-cache"], hit.headers["x-cache"]] == ["MISS", "HIT"]
    assert revalidated.status_code == 304
    samples = await scrape(client)
    outcomes = {
        outcome: value(samples, "movie_cache_requests_total", outcome=outcome)
        for outcome in ("hit", "miss", "bypass", "not_modified")
    }
    assert outcomes == {"hit": 1, "miss": 1, "bypass": 0, "not_modified": 1}
    route = {"method": "GET", "route": "/movies"}
    assert value(samples, "movie_http_requests_total", **route, status="200") == 2
    assert value(samples, "movie_http_requests_total", **route, status="304") == 1


async def test_a_cache_switched_off_counts_bypass(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """MOVIE_CACHE_ENABLED=false: every catalog read is a BYPASS."""
    async with serving(create_app(make_settings(cache_enabled=False))) as client:
        await client.get("/movies")
        await client.get("/movies")
        samples = await scrape(client)
    assert value(samples, "movie_cache_requests_total", outcome="bypass") == 2


async def test_rate_limit_decisions_count_allowed_limited_and_exempt(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Limit 2: two allowed, one limited; probes, scrapes and the exemption secret are exempt,
    and scraping never runs into the limit."""
    secret = "s" * 32
    settings = make_settings(rate_limit_per_minute=2, rate_limit_exempt_tokens=[secret])
    async with serving(create_app(settings)) as client:
        statuses = [(await client.get("/movies")).status_code for _ in range(3)]
        await client.get("/health")
        await client.get("/movies", headers={"X-RateLimit-Exempt": secret})
        scrapes = [await client.get("/metrics") for _ in range(5)]
        samples = parse(scrapes[-1].text)
    assert statuses == [200, 200, 429]
    assert [response.status_code for response in scrapes] == [200] * 5
    assert all("x-ratelimit-limit" not in response.headers for response in scrapes)
    decisions = {
        decision: value(samples, "movie_rate_limit_decisions_total", decision=decision)
        for decision in ("allowed", "limited", "exempt", "failed_open")
    }
    # exempt: /health, the secret, and the five scrapes (the last counted before it answered)
    assert decisions == {"allowed": 2, "limited": 1, "exempt": 7, "failed_open": 0}
    limited = {"method": "GET", "route": "/movies", "status": "429"}
    assert value(samples, "movie_http_requests_total", **limited) == 1


async def test_idempotency_outcomes_stored_replayed_mismatch_and_conflict(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    """A first keyed POST is stored, its repeat replayed, another body a mismatch, a key whose
    first request still runs a conflict."""
    first = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "k1"})
    again = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "k1"})
    other = await client.post(
        "/movies", json={**MOVIE, "title": "Ronin"}, headers={"Idempotency-Key": "k1"}
    )
    body = json.dumps(MOVIE).encode()
    claim = {"state": "in_progress", "fingerprint": fingerprint("POST", "/movies", body), "o": 1}
    await redis.set(idempotency_key(CLIENT_IP, "POST", "/movies", "busy"), json.dumps(claim))
    busy = await client.post(
        "/movies",
        content=body,
        headers={"Idempotency-Key": "busy", "content-type": "application/json"},
    )
    assert [first.status_code, again.status_code, other.status_code, busy.status_code] == [
        201,
        201,
        422,
        409,
    ]
    samples = await scrape(client)
    outcomes = {
        outcome: value(samples, "movie_idempotency_requests_total", outcome=outcome)
        for outcome in ("stored", "replayed", "conflict", "mismatch", "unavailable")
    }
    assert outcomes == {
        "stored": 1,
        "replayed": 1,
        "conflict": 1,
        "mismatch": 1,
        "unavailable": 0,
    }


async def test_readiness_gauge_reflects_the_checks_of_ready(client: httpx.AsyncClient) -> None:
    """Database and Redis answer; no worker runs, so no heartbeat: worker 0."""
    samples = await scrape(client)
    ready = {
        dependency: value(samples, "movie_dependency_ready", dependency=dependency)
        for dependency in ("database", "redis", "worker")
    }
    assert ready == {"database": 1, "redis": 1, "worker": 0}
    assert value(samples, "movie_redis_breaker_open") == 0
    assert value(samples, "movie_redis_errors_total") == 0


async def test_redis_down_counts_fail_open_errors_the_open_breaker_and_unreadiness(
    make_settings: Callable[..., Settings],
) -> None:
    """Redis stopped: requests fail open (counted), keyed POSTs are unavailable, every failed
    call is a Redis error, the breaker gauge shows 1 once it opens, and readiness says redis 0."""
    own = ValkeyProcess()
    own.start()
    try:
        settings = make_settings(
            redis_url=own.url, redis_breaker_threshold=2, redis_breaker_cooldown_seconds=60
        )
        async with serving(create_app(settings)) as client:
            assert (await client.get("/movies")).headers["x-cache"] == "MISS"
            own.stop()
            statuses = [(await client.get("/movies")).status_code for _ in range(4)]
            keyed = await client.post("/movies", json=MOVIE, headers={"Idempotency-Key": "down"})
            samples = await scrape(client)
    finally:
        own.stop()
    assert statuses == [200] * 4
    assert keyed.status_code == 503
    failed_open = value(samples, "movie_rate_limit_decisions_total", decision="failed_open")
    assert failed_open == 5  # four GETs and the keyed POST (the scrape is exempt)
    assert value(samples, "movie_idempotency_requests_total", outcome="unavailable") == 1
    assert value(samples, "movie_redis_errors_total") >= 2  # the calls before the breaker opened
    assert value(samples, "movie_redis_breaker_open") == 1
    assert value(samples, "movie_dependency_ready", dependency="redis") == 0
    assert value(samples, "movie_dependency_ready", dependency="database") == 1
    assert value(samples, "movie_cache_requests_total", outcome="bypass") == 4


async def test_readiness_checks_run_at_most_once_per_five_seconds_and_are_shared() -> None:
    """Scrapes close together reuse the last run; concurrent ones share one run; a check that
    raises leaves every dependency at 0 instead of failing the scrape."""
    runs: list[int] = []

    async def probe() -> dict[str, bool]:
        runs.append(1)
        await asyncio.sleep(0.01)
        return {"database": True, "redis": True, "worker": False}

    metrics = ApiMetrics()
    await asyncio.gather(*(metrics.refresh_readiness(probe) for _ in range(5)))
    await metrics.refresh_readiness(probe)
    assert len(runs) == 1
    samples = parse(metrics.exposition().decode())
    assert value(samples, "movie_dependency_ready", dependency="redis") == 1
    assert value(samples, "movie_dependency_ready", dependency="worker") == 0

    async def broken() -> dict[str, bool]:
        raise RuntimeError("unexpected")

    fresh = ApiMetrics()
    await fresh.refresh_readiness(broken)
    samples = parse(fresh.exposition().decode())
    assert value(samples, "movie_dependency_ready", dependency="database") == 0
