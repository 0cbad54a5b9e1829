"""Generation-based response cache for catalog reads.

Entries live at ``cache:movies:{gen}:{digest}``. Every write bumps ``cache:movies:gen`` after its
commit, which orphans all entries at once (they expire by TTL; no KEYS/SCAN on the request path).
A miss stores its body only if the generation is still the one read before the database query, so
a slow reader can never write pre-change data back after a writer invalidated.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlencode

from redis.asyncio import Redis

from app.constants import CACHE_ENTRY_PREFIX, CACHE_GENERATION_KEY
from app.redisguard import RedisGuard, RedisUnavailable

log = logging.getLogger("app.cache")

# KEYS[1] generation key; ARGV[1] entry prefix, ARGV[2] digest -> {generation, entry or false}
READ_SCRIPT = """
local gen = redis.call('GET', KEYS[1]) or '0'
local entry = redis.call('GET', ARGV[1] .. gen .. ':' .. ARGV[2])
return {gen, entry}
"""

# KEYS[1] generation key; ARGV: generation read, entry prefix, digest, value, ttl ms -> 1 stored
STORE_SCRIPT = """
local gen = redis.call('GET', KEYS[1]) or '0'
if gen ~= ARGV[1] then return 0 end
redis.call('SET', ARGV[2] .. gen .. ':' .. ARGV[3], ARGV[4], 'PX', ARGV[5])
return 1
"""


class CacheStatus(StrEnum):
    """Outcome reported in X-Cache."""

    HIT = "HIT"
    MISS = "MISS"
    BYPASS = "BYPASS"


@dataclass(frozen=True)
class CachedBody:
    """A response body with its strong ETag and how it was obtained."""

    body: bytes
    etag: str
    status: CacheStatus


def strong_etag(body: bytes) -> str:
    """A strong validator from the bytes themselves (identical on every replica)."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def cache_digest(path: str, params: dict[str, str | int | None]) -> str:
    """A stable digest of a read: path plus sorted, non-empty query parameters."""
    query = urlencode(sorted((k, str(v)) for k, v in params.items() if v is not None))
    return hashlib.sha256(f"{path}?{query}".encode()).hexdigest()[:40]


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of tags, or ``*``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def _encode(etag: str, body: bytes) -> bytes:
    return etag.encode() + b"\n" + body


def _decode(raw: bytes) -> tuple[str, bytes]:
    etag, _, body = raw.partition(b"\n")
    return etag.decode(), body


class ResponseCache:
    """Read-through cache of response bodies, guarded by the Redis breaker."""

    def __init__(self, guard: RedisGuard, ttl_seconds: int) -> None:
        self.guard = guard
        self.ttl_ms = ttl_seconds * 1000
        self._read = guard.client.register_script(READ_SCRIPT)
        self._store = guard.client.register_script(STORE_SCRIPT)
        # A write whose invalidation could not reach Redis: bypass the cache until it does.
        self._pending_invalidation = False

    async def get_or_load(self, digest: str, load: Callable[[], Awaitable[bytes]]) -> CachedBody:
        """The cached body for ``digest``, or ``load()``'s, stored only if no write intervened."""
        if self._pending_invalidation and not await self._flush_invalidation():
            return await self._bypass(load)
        try:
            generation, raw = await self.guard.call(
                lambda r: self._read(
                    keys=[CACHE_GENERATION_KEY], args=[CACHE_ENTRY_PREFIX, digest], client=r
                )
            )
        except RedisUnavailable:
            return await self._bypass(load)
        if raw is not None:
            etag, body = _decode(raw)
            return CachedBody(body, etag, CacheStatus.HIT)
        body = await load()
        etag = strong_etag(body)
        # Redis failing here: the body was served fresh from the database, just not cached.
        with contextlib.suppress(RedisUnavailable):
            await self.guard.call(
                lambda r: self._store(
                    keys=[CACHE_GENERATION_KEY],
                    args=[generation, CACHE_ENTRY_PREFIX, digest, _encode(etag, body), self.ttl_ms],
                    client=r,
                )
            )
        return CachedBody(body, etag, CacheStatus.MISS)

    async def invalidate(self) -> None:
        """After a committed write: one INCR orphans every entry."""
        self._pending_invalidation = True
        await self._flush_invalidation()

    async def _flush_invalidation(self) -> bool:
        async def bump(redis: Redis) -> int:
            return int(await redis.incr(CACHE_GENERATION_KEY))

        try:
            await self.guard.call(bump)
        except RedisUnavailable:
            log.warning("cache invalidation deferred: redis unavailable")
            return False
        self._pending_invalidation = False
        return True

    async def _bypass(self, load: Callable[[], Awaitable[bytes]]) -> CachedBody:
        body = await load()
        return CachedBody(body, strong_etag(body), CacheStatus.BYPASS)
