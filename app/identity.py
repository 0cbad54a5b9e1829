"""Who is calling: one bounded identity per request, from the socket peer and trusted proxies only.

The identity is an IPv4 address (an IPv4-mapped IPv6 peer counts as its IPv4 address) or, for
IPv6, the client's /64 network (``2001:db8:1:2::/64``): one IPv6 host holds a whole /64, so
counting per address would give it 2**64 budgets. ``X-Forwarded-For`` is read only when the
socket peer is a trusted proxy, right to left, skipping trusted hops; the first untrusted entry
must be an IP address, or the proxy itself stays the client (a header is never an identity).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN_CLIENT: Final = "unknown"
IPV6_CLIENT_PREFIX: Final = 64
# The longest identity: a full IPv6 /64 network, "ffff:ffff:ffff:ffff::/64" (24 characters).
MAX_CLIENT_ID_LENGTH: Final = 24
CLIENT_ID_SCOPE_KEY: Final = "movie.client_id"
FORWARDED_FOR: Final = b"x-forwarded-for"
FORWARDED_PROTO: Final = b"x-forwarded-proto"
_SCHEMES: Final = frozenset({"http", "https"})


def parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or an X-Forwarded-For entry, normalised; None if it is not one.

    Accepts a bare address, ``[v6]``, ``[v6]:port`` and ``v4:port`` (proxies that add the
    port); drops an IPv6 zone; an IPv4-mapped IPv6 address becomes its IPv4 address.
    """
    text = text.strip()
    if text.startswith("["):
        text, bracket, _port = text[1:].partition("]")
        if not bracket:
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(address.packed)  # without a %zone
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def identity_of(address: IPAddress) -> str:
    """The client identity of an address: itself for IPv4, its /64 network for IPv6."""
    if isinstance(address, ipaddress.IPv4Address):
        identity = str(address)
    else:
        identity = str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    assert len(identity) <= MAX_CLIENT_ID_LENGTH, identity
    return identity


def parse_network(entry: str) -> IPNetwork:
    """A trusted-proxy entry (address or CIDR) as a network; IPv4-mapped ones become IPv4."""
    network = ipaddress.ip_network(entry.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class TrustedProxies:
    """The peers whose X-Forwarded-For (and X-Forwarded-Proto) is believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(parse_network(entry) for entry in entries)

    def __contains__(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def client_address(self, peer: IPAddress, forwarded_for: str | None) -> IPAddress:
        """The address a request came from: the peer, or what trusted proxies say in front of it.

        Right to left: trusted hops are skipped; the first untrusted entry is the client if it
        is an IP address, and if it is not (garbage, an empty entry), the peer stays the client.
        A chain of trusted hops only ends at its left-most one.
        """
        if forwarded_for is None or peer not in self:
            return peer
        client = peer
        for entry in reversed(forwarded_for.split(",")):
            address = parse_ip(entry)
            if address is None:
                return peer
            client = address
            if address not in self:
                break
        return client


def client_of(scope: Scope) -> str:
    """The client identity of a request: what IdentityMiddleware stored, else the peer's own."""
    stored = scope.get(CLIENT_ID_SCOPE_KEY)
    if isinstance(stored, str):
        return stored
    address = _peer_address(scope)
    return identity_of(address) if address is not None else UNKNOWN_CLIENT


def _peer_address(scope: Scope) -> IPAddress | None:
    """The socket peer's address as the server reports it, or None (a Unix socket, no peer)."""
    peer = scope.get("client")
    return _parse_peer(str(peer[0])) if peer and peer[0] else None


# Peers repeat (keep-alive connections, a proxy): parse each one once. Bounded, so a flood of
# distinct peers costs a miss each, never memory.
_parse_peer = functools.lru_cache(maxsize=4096)(parse_ip)


def _forwarded_headers(scope: Scope) -> tuple[str | None, str | None]:
    forwarded_for: list[bytes] = []
    proto: bytes | None = None
    for name, value in scope["headers"]:
        if name == FORWARDED_FOR:
            forwarded_for.append(value)
        elif name == FORWARDED_PROTO:
            proto = value
    return (
        b",".join(forwarded_for).decode("latin-1") if forwarded_for else None,
        proto.decode("latin-1").strip().lower() if proto is not None else None,
    )


class IdentityMiddleware:
    """Pure ASGI: computes the client identity once per request (the outermost middleware).

    Stores it under ``scope["movie.client_id"]`` (read it with :func:`client_of`) and rewrites
    ``scope["client"]`` to the normalised client address; a trusted proxy's X-Forwarded-Proto
    (http or https) becomes ``scope["scheme"]``, so redirects keep the client's scheme.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        peer_address = _peer_address(scope)
        if peer_address is None:
            scope[CLIENT_ID_SCOPE_KEY] = UNKNOWN_CLIENT
            await self.app(scope, receive, send)
            return
        forwarded_for, proto = _forwarded_headers(scope) if self.trusted else (None, None)
        address = self.trusted.client_address(peer_address, forwarded_for)
        if proto in _SCHEMES and peer_address in self.trusted:
            scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
        port = int(peer[1]) if address == peer_address and peer and peer[1] is not None else 0
        scope["client"] = (str(address), port)
        scope[CLIENT_ID_SCOPE_KEY] = identity_of(address)
        await self.app(scope, receive, send)
