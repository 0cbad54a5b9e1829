"""Client identity: normalised addresses, IPv6 by /64, X-Forwarded-For only from trusted proxies
and only when it is an address."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.constants import rate_key
from app.identity import (
    UNKNOWN_CLIENT,
    TrustedProxies,
    client_of,
    identity_of,
    parse_ip,
)
from app.main import create_app

PROXY = "10.0.0.5"


@pytest.mark.parametrize(
    ("text", "identity"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7:8080 ", "203.0.113.7"),
        ("2001:DB8:0001:0002:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::1]:443", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::/64"),
    ],
)
def test_addresses_become_canonical_bounded_identities(text: str, identity: str) -> None:
    """IPv4-mapped → IPv4, IPv6 → its /64 in compressed form, ports and zones dropped."""
    address = parse_ip(text)
    assert address is not None
    assert identity_of(address) == identity


@pytest.mark.parametrize("text", ["evil-not-an-ip", "", "unknown", "1.2.3", "[::1", "\x1b[31m"])
def test_non_addresses_do_not_parse(text: str) -> None:
    """Anything that is not an IP address is not an address."""
    assert parse_ip(text) is None


def _resolve(peer: str, forwarded_for: str | None, trusted: list[str]) -> str:
    address = parse_ip(peer)
    assert address is not None
    return identity_of(TrustedProxies(trusted).client_address(address, forwarded_for))


def test_forwarded_for_is_read_right_to_left_from_trusted_proxies_only() -> None:
    """Untrusted peer: ignored. Trusted: the right-most untrusted entry; trusted hops skipped."""
    xff = "198.51.100.1, 198.51.100.9, 10.0.0.7"
    assert _resolve("203.0.113.7", xff, []) == "203.0.113.7"
    assert _resolve("203.0.113.7", xff, ["10.0.0.0/8"]) == "203.0.113.7"
    assert _resolve(PROXY, xff, ["10.0.0.0/8"]) == "198.51.100.9"
    assert _resolve(PROXY, "10.0.0.9, 10.0.0.8", ["10.0.0.0/8"]) == "10.0.0.9"
    assert _resolve(PROXY, "2001:db8:5:6::7", ["10.0.0.0/8"]) == "2001:db8:5:6::/64"
    assert _resolve("::ffff:10.0.0.5", "198.51.100.9", ["10.0.0.5"]) == "198.51.100.9"


@pytest.mark.parametrize(
    "forwarded_for", ["evil-not-an-ip", "198.51.100.9, evil", "", "198.51.100.9,", "\x1b[31m"]
)
def test_a_non_ip_forwarded_for_never_becomes_an_identity(forwarded_for: str) -> None:
    """The first untrusted entry must be an address; otherwise the proxy stays the client."""
    assert _resolve(PROXY, forwarded_for, ["10.0.0.0/8"]) == PROXY


def test_client_of_without_the_middleware_normalises_the_peer() -> None:
    """A scope IdentityMiddleware never saw still gives a bounded, normalised identity."""
    assert client_of({"client": ("::ffff:203.0.113.7", 1)}) == "203.0.113.7"
    assert client_of({"client": ("2001:db8::1", 1)}) == "2001:db8::/64"
    assert client_of({"client": ("not an address " * 100, 1)}) == UNKNOWN_CLIENT
    assert client_of({"client": None}) == UNKNOWN_CLIENT


async def _remaining(
    make_settings: Callable[..., Settings],
    peers: list[str],
    headers: dict[str, str] | None = None,
    trusted: list[str] | None = None,
) -> list[str]:
    """X-RateLimit-Remaining of one GET /movies from each peer in turn (limit 10)."""
    app = create_app(make_settings(rate_limit_per_minute=10, trusted_proxies=trusted or []))
    remaining = []
    async with app.router.lifespan_context(app):
        for peer in peers:
            transport = httpx.ASGITransport(app=app, client=(peer, 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/movies", headers=headers)
                remaining.append(response.headers["x-ratelimit-remaining"])
    return remaining


async def test_ipv6_peers_in_one_64_share_a_budget(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Two addresses of one /64 count as one client; another /64 is another client."""
    peers = ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:3::1"]
    assert await _remaining(make_settings, peers) == ["9", "8", "9"]
    keys = {key.decode() async for key in redis.scan_iter("rate:*")}
    assert keys == {rate_key(f"2001:db8:1:{n}::/64", "/movies") for n in (2, 3)}


async def test_an_ipv4_mapped_peer_is_its_ipv4_client(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """::ffff:203.0.113.7 and 203.0.113.7 are one client with one budget."""
    assert await _remaining(make_settings, ["::ffff:203.0.113.7", "203.0.113.7"]) == ["9", "8"]
    assert [key async for key in redis.scan_iter("rate:*")] == [
        rate_key("203.0.113.7", "/movies").encode()
    ]


async def test_trusted_proxy_sending_garbage_forwarded_for_is_the_client(
    make_settings: Callable[..., Settings], redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """X-Forwarded-For: evil-not-an-ip from a trusted proxy: the proxy is counted and logged."""
    with caplog.at_level(logging.INFO, logger="app.access"):
        remaining = await _remaining(
            make_settings,
            [PROXY, PROXY],
            headers={"X-Forwarded-For": "evil-not-an-ip"},
            trusted=["10.0.0.0/8"],
        )
    assert remaining == ["9", "8"]
    assert [key async for key in redis.scan_iter("rate:*")] == [rate_key(PROXY, "/movies").encode()]
    lines = [r.getMessage() for r in caplog.records if r.name == "app.access"]
    assert len(lines) == 2
    assert all(f" client={PROXY} rid=" in line for line in lines)


async def test_trusted_proxy_forwarded_for_names_the_client(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """From a trusted proxy, the forwarded address is the client (normalised)."""
    headers = {"X-Forwarded-For": "::ffff:198.51.100.9"}
    await _remaining(make_settings, [PROXY], headers=headers, trusted=["10.0.0.0/8"])
    assert [key async for key in redis.scan_iter("rate:*")] == [
        rate_key("198.51.100.9", "/movies").encode()
    ]


async def test_an_untrusted_peers_forwarded_for_is_ignored(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A peer that is not a trusted proxy is itself the client, whatever it forwards."""
    headers = {"X-Forwarded-For": "198.51.100.9"}
    await _remaining(make_settings, ["203.0.113.7"], headers=headers, trusted=["10.0.0.0/8"])
    assert [key async for key in redis.scan_iter("rate:*")] == [
        rate_key("203.0.113.7", "/movies").encode()
    ]


async def test_trusted_proxy_forwarded_proto_keeps_redirects_on_https(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """X-Forwarded-Proto from the proxy is the scheme (a slash redirect stays https); from
    anyone else it is ignored."""
    app = create_app(make_settings(trusted_proxies=[PROXY]))
    locations = []
    async with app.router.lifespan_context(app):
        for peer in [PROXY, "203.0.113.7"]:
            transport = httpx.ASGITransport(app=app, client=(peer, 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/movies/", headers={"X-Forwarded-Proto": "https"})
                locations.append(response.headers["location"])
    assert locations == ["https://t/movies", "http://t/movies"]


def test_trusted_proxy_networks_accept_ipv4_mapped_entries() -> None:
    """A proxy listed as ::ffff:10.0.0.5 is the IPv4 peer 10.0.0.5."""
    assert ipaddress.ip_address(PROXY) in TrustedProxies(["::ffff:10.0.0.5"])
