"""Fixed-window rate limiting per client and route: one atomic Redis round trip per request.

The counter is keyed on the matched route's template (``/movies/{movie_id}``), never the raw
path: ``/movies/1``, ``/movies/01`` and ``/movies/+1`` are one route, and every path no route
matches shares one bucket per client, so a client cannot mint keys (or long keys) at will.

The Lua script increments the counter, gives it an expiry when it has none (a new key, or one left
without a TTL by anything else), and returns the count and the milliseconds left in the window.
INCR-then-EXPIRE as two calls can leave a key that never expires and lock a client out for good.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.routing import iter_route_contexts
from redis.asyncio import Redis
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.constants import MAX_RATE_KEY_LENGTH, UNMATCHED_ROUTE_TEMPLATE, rate_key
from app.identity import MAX_CLIENT_ID_LENGTH, client_of
from app.redisguard import RedisGuard, RedisUnavailable
from app.responses import send_problem

log = logging.getLogger("app.ratelimit")

HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

TOO_MANY_REQUESTS = "Too many requests"

EXEMPT_PATHS = frozenset({"/health", "/ready"})
EXEMPT_HEADER = b"x-ratelimit-exempt"


@dataclass(frozen=True)
class Decision:
    """The outcome of counting one request."""

    limit: int
    count: int
    reset_seconds: int
    window_seconds: int

    @property
    def allowed(self) -> bool:
        """Whether this request is within the limit."""
        return self.count <= self.limit

    @property
    def remaining(self) -> int:
        """Requests left in the window, never below 0."""
        return max(0, self.limit - self.count)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """X-RateLimit-* (reset in seconds) and the IETF draft RateLimit/RateLimit-Policy pair."""
        pairs = [
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(self.reset_seconds)),
            ("ratelimit-policy", f'"default";q={self.limit};w={self.window_seconds}'),
            ("ratelimit", f'"default";r={self.remaining};t={self.reset_seconds}'),
        ]
        if not self.allowed:
            pairs.append(("retry-after", str(self.reset_seconds)))
        return [(name.encode(), value.encode()) for name, value in pairs]


def seconds_until_reset(ttl_ms: int) -> int:
    """A counter's milliseconds left as the documented reset: whole seconds, at least 1."""
    return max(1, math.ceil(ttl_ms / 1000))


def decide(limit: int, window_seconds: int, count: int, ttl_ms: int) -> Decision:
    """Turn the script's (count, ms left) into a decision."""
    reset = seconds_until_reset(ttl_ms)
    return Decision(limit=limit, count=count, reset_seconds=reset, window_seconds=window_seconds)


class RateLimiter:
    """Counts hits in Redis through the guarded client."""

    def __init__(self, guard: RedisGuard, limit: int, window_seconds: int) -> None:
        if limit < 1 or window_seconds < 1:
            raise ValueError("limit and window must be at least 1")
        self.guard = guard
        self.limit = limit
        self.window_seconds = window_seconds
        self._script = guard.client.register_script(HIT_SCRIPT)

    async def hit(self, client: str, template: str) -> Decision:
        """Count one request of ``client`` on a route ``template``; raises RedisUnavailable
        when Redis can't answer."""
        window_ms = self.window_seconds * 1000
        # Bounded by construction: identities are addresses or /64s, templates the app's routes.
        assert len(client) <= MAX_CLIENT_ID_LENGTH, client
        key = rate_key(client, template)
        assert len(key) <= MAX_RATE_KEY_LENGTH, key

        async def run(redis: Redis) -> list[int]:
            # redis-py's Script runs EVALSHA and falls back to EVAL on NOSCRIPT.
            result = await self._script(keys=[key], args=[window_ms], client=redis)
            return [int(x) for x in result]

        count, ttl_ms = await self.guard.call(run)
        return decide(self.limit, self.window_seconds, count, ttl_ms)


@dataclass(frozen=True)
class _Template:
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method
    template: str


class RouteTemplates:
    """Which route template a request will reach, found before routing (pure ASGI, no Request).

    Matched like the router does: the first route whose path and method match, else the first
    whose path matches (wrong method: still that route's bucket), else ``/{unmatched}``. FastAPI
    nests included routers, so the routes are flattened into their effective (prefixed) routes;
    the table is rebuilt when the app's route list grows.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = routes
        self._table: list[_Template] = []
        self._built_for = -1

    def _build(self) -> list[_Template]:
        table = []
        for route in iter_route_contexts(self.routes):
            template = route.path_format or route.path
            regex = getattr(route, "path_regex", None)
            if not isinstance(template, str) or not isinstance(regex, re.Pattern):
                continue  # a route without a path (a Host): it has no template to count on
            methods = frozenset(route.methods) if route.methods else None
            table.append(_Template(regex, methods, template))
        return table

    def template_for(self, scope: Scope) -> str:
        """The template of the route ``scope`` will reach, or ``/{unmatched}``."""
        if self._built_for != len(self.routes):
            self._table, self._built_for = self._build(), len(self.routes)
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        partial: str | None = None
        for entry in self._table:
            if entry.regex.match(path) is None:
                continue
            if entry.methods is None or scope["method"] in entry.methods:
                return entry.template
            if partial is None:
                partial = entry.template
        return partial or UNMATCHED_ROUTE_TEMPLATE


def holds_exemption(scope: Scope, tokens: tuple[bytes, ...]) -> bool:
    """Whether the request carries one of the configured exemption secrets (constant time)."""
    if not tokens:
        return False
    for name, value in scope["headers"]:
        if name == EXEMPT_HEADER:
            return any(hmac.compare_digest(value, token) for token in tokens)
    return False


class RateLimitMiddleware:
    """Pure ASGI middleware: counts every HTTP request, adds headers, answers 429 over the limit.

    ``routes`` is the app's route list (read at each request, so routes added later count); a
    request is counted on its route's template.

    Probes are exempt, and so is a request holding a configured exemption secret (the contract
    test run's credential); nobody else is, whatever headers they send.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        routes: Sequence[BaseRoute],
        exempt_tokens: list[str] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.templates = RouteTemplates(routes)
        self.exempt_tokens = tuple(token.encode() for token in exempt_tokens or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in EXEMPT_PATHS
            or holds_exemption(scope, self.exempt_tokens)
        ):
            await self.app(scope, receive, send)
            return
        try:
            template = self.templates.template_for(scope)
            decision = await self.limiter.hit(client_of(scope), template)
        except RedisUnavailable:
            # Fail open: serve the request, without X-RateLimit headers that would lie.
            scope.setdefault("state", {})["rate_limit"] = "bypass"
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            await send_problem(send, 429, TOO_MANY_REQUESTS, decision.headers())
            return
        extra = decision.headers()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
