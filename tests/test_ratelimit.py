"""Rate limiting: one atomic round trip, exact 429s, TTLs always set, identity not forgeable,
one bounded counter per client and route template."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app.config import Settings
from app.constants import MAX_RATE_KEY_LENGTH, UNMATCHED_ROUTE_TEMPLATE, rate_key
from app.main import create_app
from app.ratelimit import RouteTemplates, decide
from movieops import ratelimits
from tests.conftest import CLIENT_IP
from tests.support import ThreadedServer, ValkeyProcess

RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
MOVIE = "/movies/{movie_id}"


def test_decision_headers_count_down_and_never_go_negative() -> None:
    """Remaining is limit - count, floored at 0; reset is whole seconds, at least 1."""
    assert decide(20, 60, 1, 59_999).remaining == 19
    over = decide(20, 60, 25, 1)
    assert over.remaining == 0
    assert over.reset_seconds == 1
    assert not over.allowed
    headers = dict(over.headers())
    assert headers[b"retry-after"] == headers[b"x-ratelimit-reset"] == b"1"
    assert headers[b"ratelimit"] == b'"default";r=0;t=1'
    assert headers[b"ratelimit-policy"] == b'"default";q=20;w=60'


async def test_21st_request_gets_exactly_the_documented_429(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """With a limit of 20, request 21 is refused with the exact body, Retry-After and headers."""
    app = create_app(make_settings(rate_limit_per_minute=20))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for expected_remaining in range(19, -1, -1):
                ok = await client.get("/movies")
                assert ok.status_code == 200
                assert ok.headers["x-ratelimit-limit"] == "20"
                assert ok.headers["x-ratelimit-remaining"] == str(expected_remaining)
            refused = await client.get("/movies")
    assert refused.status_code == 429
    assert refused.json() == {
        "detail": "Too many requests",
        "request_id": refused.headers["x-request-id"],
    }
    assert refused.headers["content-type"] == "application/json"
    assert 1 <= int(refused.headers["x-ratelimit-reset"]) <= 60
    # Retry-After is the window's reset, not a separate guess: the two always agree on a 429.
    assert refused.headers["retry-after"] == refused.headers["x-ratelimit-reset"]
    assert refused.headers["x-ratelimit-limit"] == "20"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit"] == f'"default";r=0;t={refused.headers["x-ratelimit-reset"]}'


async def test_limits_are_per_route_and_probes_are_exempt(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Another route has its own counter; /health and /ready never count or get limited."""
    app = create_app(make_settings(rate_limit_per_minute=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses = [(await client.get("/movies")).status_code for _ in range(3)]
            other = await client.get("/movies/1")
            probes = [(await client.get(path)).status_code for path in ["/health", "/ready"] * 3]
            health = await client.get("/health")
    assert statuses == [200, 200, 429]
    assert other.status_code == 404
    assert other.headers["x-ratelimit-remaining"] == "1"
    assert probes == [200] * 6
    assert "x-ratelimit-limit" not in health.headers
    assert await redis.exists(rate_key(CLIENT_IP, "/health")) == 0


def test_100_concurrent_requests_let_exactly_the_limit_through(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Over real HTTP, 100 simultaneous requests against a limit of 20: exactly 20 succeed."""
    app = create_app(make_settings(rate_limit_per_minute=20))

    async def burst(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(*(client.get("/movies") for _ in range(100)))
        return [response.status_code for response in responses]

    with ThreadedServer(app).running() as server:
        statuses = asyncio.run(burst(server.url))
    assert statuses.count(200) == 20
    assert statuses.count(429) == 80


async def test_every_rate_key_has_a_ttl(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Every rate:* key expires, including one that something left without a TTL."""
    await redis.set(rate_key(CLIENT_IP, MOVIE), 5)  # a counter stranded without expiry
    app = create_app(make_settings(rate_limit_per_minute=50))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in ["/movies", "/movies/1", "/movies?limit=3", "/movies/2", "/nowhere"]:
                await client.get(path)
    keys = [key async for key in redis.scan_iter(match="rate:*")]
    assert len(keys) == 3  # /movies, /movies/{movie_id}, /{unmatched}: no query strings
    for key in keys:
        ttl = await redis.pttl(key)
        assert 0 < ttl <= 60_000, key
    assert int(await redis.get(rate_key(CLIENT_IP, MOVIE)) or 0) == 7


async def _statuses_and_keys(
    make_settings: Callable[..., Settings],
    redis: Redis,
    requests: list[tuple[str, str]],
    limit: int = 10_000,
) -> tuple[list[int], dict[str, int]]:
    """Send (method, path) requests from CLIENT_IP; the statuses and every rate key's count."""
    app = create_app(make_settings(rate_limit_per_minute=limit))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses = [(await client.request(m, path)).status_code for m, path in requests]
    keys = {key.decode(): int(await redis.get(key) or 0) async for key in redis.scan_iter("rate:*")}
    return statuses, keys


async def test_spellings_of_one_movie_id_share_one_counter(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """/movies/1, /movies/01 and /movies/+1 are one route: one counter, one budget of 3."""
    paths = ["/movies/1", "/movies/01", "/movies/+1", "/movies/0001"]
    statuses, keys = await _statuses_and_keys(
        make_settings, redis, [("GET", p) for p in paths], limit=3
    )
    assert statuses[-1] == 429
    assert keys == {rate_key(CLIENT_IP, MOVIE): 4}


async def test_unknown_paths_share_one_bucket_per_client(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """50 distinct unknown paths make exactly one key for the client: /{unmatched}."""
    requests = [("GET", f"/nowhere-{n}/x{n}") for n in range(50)]
    statuses, keys = await _statuses_and_keys(make_settings, redis, requests)
    assert set(statuses) == {404}
    assert keys == {rate_key(CLIENT_IP, UNMATCHED_ROUTE_TEMPLATE): 50}


async def test_a_huge_path_makes_no_long_key(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A 5 KB path (matched or not) is counted under a short key, never one holding the path."""
    requests = [("GET", "/" + "a" * 5000), ("GET", "/movies/" + "9" * 5000)]
    _statuses, keys = await _statuses_and_keys(make_settings, redis, requests)
    assert set(keys) == {
        rate_key(CLIENT_IP, UNMATCHED_ROUTE_TEMPLATE),
        rate_key(CLIENT_IP, MOVIE),
    }
    assert max(len(key) for key in keys) <= MAX_RATE_KEY_LENGTH


async def test_a_wrong_method_counts_on_its_route(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """DELETE /movies (405) is the /movies route's request, not an unmatched one."""
    statuses, keys = await _statuses_and_keys(
        make_settings, redis, [("DELETE", "/movies"), ("GET", "/movies")]
    )
    assert statuses == [405, 200]
    assert keys == {rate_key(CLIENT_IP, "/movies"): 2}


def test_route_template_is_the_matched_routes_path(make_settings: Callable[..., Settings]) -> None:
    """Full match first, then a partial one (wrong method), else /{unmatched}."""
    templates = RouteTemplates(create_app(make_settings()).router.routes)

    def template(method: str, path: str) -> str:
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
        return templates.template_for(scope)

    assert template("GET", "/movies/5/ratings") == "/movies/{movie_id}/ratings"
    assert template("PATCH", "/movies/abc") == MOVIE
    assert template("PUT", "/movies") == "/movies"
    assert template("GET", "/movies/5/nope") == UNMATCHED_ROUTE_TEMPLATE


async def test_limiter_recovers_when_redis_forgets_its_script(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """After SCRIPT FLUSH (a Redis restart), EVALSHA's NOSCRIPT falls back to EVAL."""
    app = create_app(make_settings(rate_limit_per_minute=5))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.get("/movies")
            await redis.script_flush()
            second = await client.get("/movies")
    assert first.headers["x-ratelimit-remaining"] == "4"
    assert second.headers["x-ratelimit-remaining"] == "3"


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1"]])
def test_forged_x_forwarded_for_does_not_escape_the_limit(
    make_settings: Callable[..., Settings], redis: Redis, valkey: ValkeyProcess, trusted: list[str]
) -> None:
    """A client sending a fresh X-Forwarded-For on every request stays one client.

    Untrusted peer: the header is ignored. Trusted proxy: only the right-most address (the one
    the proxy itself appended) counts, never the client-chosen left-most entries.
    """
    app = create_app(make_settings(rate_limit_per_minute=3, trusted_proxies=trusted))

    async def forge(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url) as client:
            statuses = []
            for n in range(6):
                headers = {"X-Forwarded-For": f"10.0.0.{n}, 198.51.100.9"}
                statuses.append((await client.get("/movies", headers=headers)).status_code)
            return statuses

    with ThreadedServer(app).running() as server:
        statuses = asyncio.run(forge(server.url))
    assert statuses == [200, 200, 200, 429, 429, 429]
    expected_client = "198.51.100.9" if trusted else "127.0.0.1"
    keys = _rate_keys(valkey)
    assert keys == {rate_key(expected_client, "/movies")}


def _rate_keys(valkey: ValkeyProcess) -> set[str]:
    with SyncRedis.from_url(valkey.url) as client:
        return {key.decode() for key in client.scan_iter(match="rate:*")}


async def test_exemption_secret_skips_the_limit_and_nothing_else_does(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """The configured secret in X-RateLimit-Exempt is not counted; a wrong one is counted."""
    secret = "contract-secret-0123456789"
    app = create_app(make_settings(rate_limit_per_minute=2, rate_limit_exempt_tokens=[secret]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            exempt = [
                await client.get("/movies", headers={"X-RateLimit-Exempt": secret})
                for _ in range(5)
            ]
            wrong = [
                (await client.get("/movies", headers={"X-RateLimit-Exempt": "guess"})).status_code
                for _ in range(3)
            ]
    assert [r.status_code for r in exempt] == [200] * 5
    assert "x-ratelimit-limit" not in exempt[0].headers
    assert wrong == [200, 200, 429]


def test_short_exemption_tokens_are_refused() -> None:
    """A guessable secret is a configuration error."""
    from app.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="MOVIE_RATE_LIMIT_EXEMPT_TOKENS"):
        load_settings(rate_limit_exempt_tokens="short", _env_file=None)


def test_rate_limits_view_filters_by_route_and_normalised_client(
    valkey: ValkeyProcess, redis: Redis
) -> None:
    """`movieops rate-limits`: --path takes a template or a path on it, --client an address
    (IPv6: its /64, IPv4-mapped: its IPv4); --reset normalises the same way."""
    with SyncRedis.from_url(valkey.url) as client:
        for key_client, template in [
            ("2001:db8:1:2::/64", MOVIE),
            ("2001:db8:1:2::/64", "/movies"),
            ("203.0.113.7", MOVIE),
            ("203.0.113.7", UNMATCHED_ROUTE_TEMPLATE),
        ]:
            client.set(rate_key(key_client, template), 3, px=60_000)

        def shown(client_filter: str | None, path: str | None) -> set[tuple[str, str]]:
            counters = ratelimits.read_counters(client, 20, client_filter, path)
            return {(c.client, c.path) for c in counters}

        assert shown(None, "/movies/7") == {("2001:db8:1:2::/64", MOVIE), ("203.0.113.7", MOVIE)}
        assert shown(None, MOVIE) == shown(None, "/movies/7")
        assert shown(None, "/nowhere") == set()
        assert shown(None, UNMATCHED_ROUTE_TEMPLATE) == {("203.0.113.7", UNMATCHED_ROUTE_TEMPLATE)}
        assert shown("2001:db8:1:2::99", None) == {
            ("2001:db8:1:2::/64", MOVIE),
            ("2001:db8:1:2::/64", "/movies"),
        }
        assert shown("::ffff:203.0.113.7", "/movies/1") == {("203.0.113.7", MOVIE)}
        assert ratelimits.reset_client(client, "2001:db8:1:2:ffff::1") == 2
