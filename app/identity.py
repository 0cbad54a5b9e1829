"""Who is calling: the socket peer, after the trusted-proxy rewrite (never a forgeable header)."""

from __future__ import annotations

from starlette.types import Scope

UNKNOWN_CLIENT = "unknown"


def client_of(scope: Scope) -> str:
    """The client identity of a request: the peer address as the ASGI scope reports it."""
    client = scope.get("client")
    if not client or not client[0]:
        return UNKNOWN_CLIENT
    return str(client[0])
