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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi.routing import iter_route_contexts
from prometheus_client import Counter
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.cache import (
    CACHE_KEYS,
    LOOKUP_LUA,
    CacheStatus,
    Hit,
    Lookup,
    ResponseCache,
    etag_matches,
    front_digest,
    parse_lookup,
    remember_snapshot,
)
from app.constants import (
    CACHE_ENTRY_PREFIX,
    CACHE_STATUS_HEADER,
    MAX_RATE_KEY_LENGTH,
    UNMATCHED_ROUTE_TEMPLATE,
    rate_key,
)
from app.identity import MAX_CLIENT_ID_LENGTH, client_of
from app.redisguard import RedisGuard, RedisUnavailable
from app.responses import send_problem

log = logging.getLogger("app.ratelimit")

# Lua: count one hit on KEYS[1] (ARGV[1]: window ms) -> count, ttl (ms left in the window).
COUNT_LUA = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
"""

HIT_SCRIPT = COUNT_LUA + "return {count, ttl}\n"

# The front: count, and when the request is allowed (ARGV[2]: limit) look the cache up, all in
# one call. KEYS: rate key, then the cache's keys; ARGV: window ms, limit, prefix, digest.
# -> {count, ttl} over the limit, else {count, ttl, <the cache lookup's three values>}.
FRONT_SCRIPT = (
    LOOKUP_LUA
    + COUNT_LUA
    + """
if count > tonumber(ARGV[2]) then return {count, ttl} end
local found = lookup(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4])
return {count, ttl, found[1], found[2], found[3]}
"""
)

TOO_MANY_REQUESTS = "Too many requests"

EXEMPT_PATHS = frozenset({"/health", "/ready"})
"""Probes, never counted; ``/metrics`` joins them when the app serves metrics."""
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
        self._front = guard.client.register_script(FRONT_SCRIPT)

    def _key(self, client: str, template: str) -> str:
        # Bounded by construction: identities are addresses or /64s, templates the app's routes.
        assert len(client) <= MAX_CLIENT_ID_LENGTH, client
        key = rate_key(client, template)
        assert len(key) <= MAX_RATE_KEY_LENGTH, key
        return key

    async def hit_and_look_up(
        self, client: str, template: str, digest: str
    ) -> tuple[Decision, Lookup | None]:
        """Count one request and, when it is allowed, look ``digest`` up in the response cache:
        one script call. The lookup is None for a refused request."""
        window_ms = self.window_seconds * 1000
        key = self._key(client, template)
        args: list[str | int] = [window_ms, self.limit, CACHE_ENTRY_PREFIX, digest]
        result = await self.guard.script(self._front, [key, *CACHE_KEYS], args)
        decision = decide(self.limit, self.window_seconds, int(result[0]), int(result[1]))
        return decision, (parse_lookup(result[2:]) if len(result) > 2 else None)

    async def hit(self, client: str, template: str) -> Decision:
        """Count one request of ``client`` on a route ``template``; raises RedisUnavailable
        when Redis can't answer."""
        window_ms = self.window_seconds * 1000
        key = self._key(client, template)
        count, ttl_ms = await self.guard.script(self._script, [key], [window_ms])
        return decide(self.limit, self.window_seconds, int(count), int(ttl_ms))


@dataclass(frozen=True)
class _Template:
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method
    template: str


ROUTE_SCOPE_KEY = "movie.route"
"""Where a request's route template is kept once found (for the access log and the metrics)."""


class RouteTemplates:
    """Which route template a request will reach, found before routing (pure ASGI, no Request).

    Matched like the router does: the first route whose path and method match, else the first
    whose path matches (wrong method: still that route's bucket), else ``/{unmatched}``. FastAPI
    nests included routers, so the routes are flattened into their effective (prefixed) routes;
    the table is rebuilt when the app's route list grows. The answer is kept in the request's
    scope, so the layers that need it (rate limit, access log, metrics) match a request once.
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
        """The template of the route ``scope`` will reach, or ``/{unmatched}`` (matched once
        per request)."""
        found: str | None = scope.get(ROUTE_SCOPE_KEY)
        if found is None:
            found = scope[ROUTE_SCOPE_KEY] = self._match(scope)
        return found

    def _match(self, scope: Scope) -> str:
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


_JSON = (b"content-type", b"application/json")
_NO_CACHE = (b"cache-control", b"no-cache")
_HIT = (CACHE_STATUS_HEADER.lower().encode(), CacheStatus.HIT.value.encode())


def if_none_match(scope: Scope) -> str | None:
    """The request's If-None-Match header, if any."""
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            return value.decode("latin-1")
    return None


async def send_hit(send: Send, scope: Scope, hit: Hit, extra: list[tuple[bytes, bytes]]) -> None:
    """Answer a cache hit from the ASGI layer: the stored bytes with the route's headers, or a
    304 when If-None-Match holds the tag (exactly what the route would send)."""
    etag = (b"etag", hit.etag.encode())
    if etag_matches(if_none_match(scope), hit.etag):
        headers = [etag, _HIT, _NO_CACHE, *extra]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    length = (b"content-length", str(len(hit.body)).encode())
    headers = [length, _JSON, etag, _HIT, _NO_CACHE, *extra]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": hit.body})


class RateLimitMiddleware:
    """Pure ASGI middleware: counts every HTTP request, adds headers, answers 429 over the limit.

    ``routes`` is the app's route list (read at each request, so routes added later count); a
    request is counted on its route's template.

    With a ``cache``, it is also the cache's front: for a canonical catalog GET the counter and
    the cache lookup are one script call, and a hit is answered right here with the stored bytes
    and precomputed headers, without routing, dependency injection or validation. A miss hands
    its snapshot to the route, which loads and stores without reading Redis again.

    Probes are exempt, and so is a request holding a configured exemption secret (the contract
    test run's credential); nobody else is, whatever headers they send.

    ``templates`` is the app's shared route matcher (one match per request for every layer);
    ``decisions`` the pre-bound counters of each decision (``app.metrics``), None: not counted.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        routes: Sequence[BaseRoute],
        exempt_tokens: list[str] | None = None,
        cache: ResponseCache | None = None,
        *,
        templates: RouteTemplates | None = None,
        exempt_paths: frozenset[str] = EXEMPT_PATHS,
        decisions: Mapping[str, Counter] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.templates = templates if templates is not None else RouteTemplates(routes)
        self.exempt_tokens = tuple(token.encode() for token in exempt_tokens or [])
        self.cache = cache
        self.exempt_paths = exempt_paths
        self.decisions = decisions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        decisions = self.decisions
        if scope["path"] in self.exempt_paths or holds_exemption(scope, self.exempt_tokens):
            if decisions is not None:
                decisions["exempt"].inc()
            await self.app(scope, receive, send)
            return
        digest = front_digest(scope) if self.cache is not None and self.cache.usable else None
        try:
            template = self.templates.template_for(scope)
            client = client_of(scope)
            if digest is None:
                decision, found = await self.limiter.hit(client, template), None
            else:
                decision, found = await self.limiter.hit_and_look_up(client, template, digest)
        except RedisUnavailable:
            # Fail open: serve the request, without X-RateLimit headers that would lie.
            scope.setdefault("state", {})["rate_limit"] = "bypass"
            if decisions is not None:
                decisions["failed_open"].inc()
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            if decisions is not None:
                decisions["limited"].inc()
            await send_problem(send, 429, TOO_MANY_REQUESTS, decision.headers())
            return
        if decisions is not None:
            decisions["allowed"].inc()
        extra = decision.headers()
        if isinstance(found, Hit):
            await send_hit(send, scope, found, extra)
            return
        if found is not None and digest is not None:
            remember_snapshot(scope, digest, found)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
