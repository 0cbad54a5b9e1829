"""Response cache of catalog reads, invalidated per film.

What a cached body depends on, and what a write changes:

- the catalog's *shape* (which films a page holds, the ``total``): create, delete and a change of
  a film's genres bump the generation ``cache:movies:gen``, which is part of every entry's key, so
  they orphan every entry at once (entries expire by TTL; no KEYS/SCAN on the request path);
- one film's *content* (title, year, rating summary): a rating or an edit takes the next number
  of the write sequence ``cache:movies:seq`` and records it as that film's version in the hash
  ``cache:movies:versions``. An entry remembers the sequence number it was read under (its
  snapshot) and the films it holds; it is fresh while none of them has a version above it.

So a rating of film 7 misses ``/movies/7`` and the pages that show film 7, and nothing else.

No stale fill: a miss reads the generation and the sequence *before* its database query (the
snapshot) and stores its body only if, at store time, the generation is unchanged and none of the
films it holds was written after the snapshot. A slow reader can never write pre-change data back
after a writer invalidated; a writer whose invalidation lands after the store makes the entry
stale on the next read, since the film's version is then above the entry's snapshot.

Every read is one script call (one round trip), and the rate limiter's front (``app.ratelimit``)
runs the same lookup in the same call as its counter, so a cached GET costs one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import Scope

from app.constants import (
    CACHE_ENTRY_PREFIX,
    CACHE_GENERATION_KEY,
    CACHE_SEQUENCE_KEY,
    CACHE_VERSIONS_KEY,
    MAX_DB_ID,
)
from app.redisguard import RedisGuard, RedisUnavailable

log = logging.getLogger("app.cache")

#: Keys every cache script receives, in this order, after any keys of its own.
CACHE_KEYS = (CACHE_GENERATION_KEY, CACHE_SEQUENCE_KEY, CACHE_VERSIONS_KEY)

# Lua: is the entry (its film ids, comma-separated, and its snapshot) still fresh?
_FRESH_LUA = """
local function fresh(versions_key, ids, snapshot)
  if ids == nil or ids == '' then return true end
  local fields = {}
  for id in string.gmatch(ids, '%d+') do fields[#fields + 1] = id end
  local versions = redis.call('HMGET', versions_key, unpack(fields))
  for i = 1, #versions do
    if versions[i] and tonumber(versions[i]) > snapshot then return false end
  end
  return true
end
"""

# Lua: lookup(gen_key, seq_key, versions_key, prefix, digest) -> {1, etag, body} on a fresh hit,
# else {0, generation, sequence}: the snapshot a miss stores under.
LOOKUP_LUA = (
    _FRESH_LUA
    + """
local function lookup(gen_key, seq_key, versions_key, prefix, digest)
  local gen = redis.call('GET', gen_key) or '0'
  local seq = redis.call('GET', seq_key) or '0'
  local entry = redis.call('HMGET', prefix .. gen .. ':' .. digest, 'snap', 'ids', 'etag', 'body')
  if entry[1] and entry[4] and fresh(versions_key, entry[2], tonumber(entry[1])) then
    return {1, entry[3], entry[4]}
  end
  return {0, gen, seq}
end
"""
)

# KEYS: gen, seq, versions; ARGV: prefix, digest.
READ_SCRIPT = LOOKUP_LUA + "return lookup(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])\n"

# KEYS: gen, seq, versions; ARGV: generation and sequence read before the load, prefix, digest,
# film ids, etag, body, ttl ms -> 1 stored, 0 refused (a write intervened).
STORE_SCRIPT = (
    _FRESH_LUA
    + """
local gen = redis.call('GET', KEYS[1]) or '0'
if gen ~= ARGV[1] then return 0 end
if not fresh(KEYS[3], ARGV[5], tonumber(ARGV[2])) then return 0 end
local key = ARGV[3] .. gen .. ':' .. ARGV[4]
redis.call('HSET', key, 'snap', ARGV[2], 'ids', ARGV[5], 'etag', ARGV[6], 'body', ARGV[7])
redis.call('PEXPIRE', key, ARGV[8])
return 1
"""
)

# KEYS: gen, seq, versions; ARGV: '1' to bump the generation, then film ids -> the new sequence.
INVALIDATE_SCRIPT = """
local seq = redis.call('INCR', KEYS[2])
for i = 2, #ARGV do redis.call('HSET', KEYS[3], ARGV[i], seq) end
if ARGV[1] == '1' then redis.call('INCR', KEYS[1]) end
return seq
"""

#: Films whose invalidation may wait for Redis before a whole-catalog bump replaces them.
MAX_PENDING_FILMS = 1_000


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


@dataclass(frozen=True)
class Loaded:
    """What a miss read from the database: the body and the films it shows."""

    body: bytes
    movie_ids: tuple[int, ...]


@dataclass(frozen=True)
class Snapshot:
    """What a lookup that missed saw: the generation and the write sequence before the load."""

    generation: bytes
    sequence: bytes


@dataclass(frozen=True)
class Hit:
    """A fresh entry."""

    body: bytes
    etag: str


Lookup = Hit | Snapshot


def parse_lookup(raw: list[Any]) -> Lookup:
    """The script's ``{1, etag, body}`` or ``{0, generation, sequence}`` as a value."""
    if int(raw[0]) == 1:
        return Hit(body=bytes(raw[2]), etag=bytes(raw[1]).decode("ascii"))
    return Snapshot(generation=bytes(raw[1]), sequence=bytes(raw[2]))


def strong_etag(body: bytes) -> str:
    """A strong validator from the bytes themselves (identical on every replica)."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def cache_digest(path: str, params: dict[str, str | int | None]) -> str:
    """A stable digest of a read: path plus sorted, non-empty query parameters."""
    query = urlencode(sorted((k, str(v)) for k, v in params.items() if v is not None))
    return hashlib.sha256(f"{path}?{query}".encode()).hexdigest()[:40]


def list_digest(limit: int, offset: int, genre: str | None) -> str:
    """The digest of a ``GET /movies`` page (the genre compared case-insensitively)."""
    key_genre = genre.casefold() if genre is not None else None
    return cache_digest("/movies", {"limit": limit, "offset": offset, "genre": key_genre})


def film_digest(movie_id: int) -> str:
    """The digest of ``GET /movies/{movie_id}``."""
    return cache_digest(f"/movies/{movie_id}", {})


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of tags, or ``*``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


# --- which requests the ASGI front may answer from the cache -----------------------------------

_FILM_PATH = re.compile(r"/movies/([1-9][0-9]{0,9})")
_NUMBER = re.compile(r"[0-9]{1,7}")
# The list route's query parameters and their bounds (as declared in app.routes.movies).
LIST_DEFAULTS = {"limit": 50, "offset": 0}
LIST_BOUNDS = {"limit": (1, 100), "offset": (0, 1_000_000)}
GENRE_MAX_LENGTH = 40


# Query strings repeat: parse and hash each spelling once. Bounded (a flood of distinct query
# strings costs a parse each, never memory).
@functools.lru_cache(maxsize=4096)
def _list_digest_of(query_string: bytes) -> str | None:
    values: dict[str, int] = dict(LIST_DEFAULTS)
    genre: str | None = None
    seen: set[str] = set()
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name not in LIST_BOUNDS and name != "genre":
            continue  # the route ignores unknown parameters, so the digest does too
        if name in seen:
            return None  # repeated: leave the choice of value to the route
        seen.add(name)
        if name == "genre":
            if not 1 <= len(value) <= GENRE_MAX_LENGTH:
                return None
            genre = value
            continue
        if _NUMBER.fullmatch(value) is None:
            return None
        number = int(value)
        low, high = LIST_BOUNDS[name]
        if not low <= number <= high:
            return None
        values[name] = number
    return list_digest(values["limit"], values["offset"], genre)


def front_digest(scope: Scope) -> str | None:
    """The cache digest of a GET the front may answer, or None to leave it to the routes.

    Only canonical spellings qualify (``/movies/7``, decimal query values within the route's
    bounds); anything else (``/movies/07``, ``?limit=abc``, a repeated parameter) goes through
    the routes, which validate it and find the same entry by its parsed values. So the front can
    never answer a request differently from the route it skips.
    """
    if scope["method"] != "GET" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if path == "/movies":
        return _list_digest_of(scope.get("query_string", b""))
    return _film_digest_of(path)


@functools.lru_cache(maxsize=4096)
def _film_digest_of(path: str) -> str | None:
    match = _FILM_PATH.fullmatch(path)
    if match is None or int(match.group(1)) > MAX_DB_ID:
        return None
    return film_digest(int(match.group(1)))


FRONT_LOOKUP_STATE = "cache_lookup"


def front_snapshot(scope: Scope, digest: str) -> Snapshot | None:
    """The snapshot the front's lookup already took for ``digest`` (a miss), if any."""
    found = scope.get("state", {}).get(FRONT_LOOKUP_STATE)
    if found is None or found[0] != digest:
        return None
    snapshot: Snapshot = found[1]
    return snapshot


def remember_snapshot(scope: Scope, digest: str, snapshot: Snapshot) -> None:
    """Hand a miss's snapshot to the route, which loads and stores without reading again."""
    scope.setdefault("state", {})[FRONT_LOOKUP_STATE] = (digest, snapshot)


class ResponseCache:
    """Read-through cache of response bodies, guarded by the Redis breaker."""

    def __init__(self, guard: RedisGuard, ttl_seconds: int, *, enabled: bool = True) -> None:
        self.guard = guard
        self.ttl_ms = ttl_seconds * 1000
        self.enabled = enabled
        self._read = guard.client.register_script(READ_SCRIPT)
        self._store = guard.client.register_script(STORE_SCRIPT)
        self._invalidate = guard.client.register_script(INVALIDATE_SCRIPT)
        # Fills under way, by digest and snapshot (app.cache: one read per snapshot).
        self._in_flight: dict[tuple[str, Snapshot], asyncio.Future[CachedBody]] = {}
        # Writes whose invalidation could not reach Redis: bypass the cache until it does.
        self._pending_films: set[int] = set()
        self._pending_shape = False

    @property
    def usable(self) -> bool:
        """Whether entries may be served: the cache is on and no invalidation of this process is
        still owed."""
        return self.enabled and not self._pending_films and not self._pending_shape

    async def get_or_load(
        self,
        digest: str,
        load: Callable[[], Awaitable[Loaded]],
        snapshot: Snapshot | None = None,
    ) -> CachedBody:
        """The cached body for ``digest``, or ``load()``'s, stored only if no write intervened.

        ``snapshot``: the front already looked ``digest`` up and missed; load and store.
        """
        if not self.enabled:
            return await self._bypass(load)
        if not self.usable and not await self._flush_invalidation():
            return await self._bypass(load)
        if snapshot is None:
            try:
                found = parse_lookup(
                    await self.guard.script(self._read, CACHE_KEYS, [CACHE_ENTRY_PREFIX, digest])
                )
            except RedisUnavailable:
                return await self._bypass(load)
            if isinstance(found, Hit):
                return CachedBody(found.body, found.etag, CacheStatus.HIT)
            snapshot = found
        key = (digest, snapshot)
        flight = self._in_flight.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._fill(digest, snapshot, load))
            self._in_flight[key] = flight
            flight.add_done_callback(lambda _done: self._in_flight.pop(key, None))
        # shield: a caller that goes away (client disconnect) does not cancel the others' fill
        return await asyncio.shield(flight)

    async def _fill(
        self, digest: str, snapshot: Snapshot, load: Callable[[], Awaitable[Loaded]]
    ) -> CachedBody:
        """Load, store if no write intervened, and answer every miss of the same snapshot.

        Misses that looked ``digest`` up under the same snapshot (same generation and write
        sequence: no invalidation between them) share this one database read, so a popular
        page invalidated under load is read once, not once per waiting request. A miss taken
        after a write has a newer snapshot and never joins a read that may predate the write.
        """
        loaded = await load()
        etag = strong_etag(loaded.body)
        await self._store_entry(digest, snapshot, loaded, etag)
        return CachedBody(loaded.body, etag, CacheStatus.MISS)

    async def _store_entry(
        self, digest: str, snapshot: Snapshot, loaded: Loaded, etag: str
    ) -> None:
        ids = ",".join(str(movie_id) for movie_id in loaded.movie_ids)
        args: list[bytes | str | int] = [
            snapshot.generation,
            snapshot.sequence,
            CACHE_ENTRY_PREFIX,
            digest,
            ids,
            etag,
            loaded.body,
            self.ttl_ms,
        ]
        # Redis failing here: the body was served fresh from the database, just not cached.
        with contextlib.suppress(RedisUnavailable):
            await self.guard.script(self._store, CACHE_KEYS, args)

    async def invalidate(self, movie_ids: Iterable[int] = (), *, shape: bool = False) -> None:
        """After a committed write: new versions for ``movie_ids``; ``shape`` when the catalog's
        shape changed (a film created or deleted, genres edited), which orphans every entry."""
        if not self.enabled:
            return
        self._pending_films.update(movie_ids)
        self._pending_shape = self._pending_shape or shape
        if len(self._pending_films) > MAX_PENDING_FILMS:
            self._pending_films.clear()
            self._pending_shape = True
        await self._flush_invalidation()

    async def _flush_invalidation(self) -> bool:
        films = sorted(self._pending_films)
        shape = self._pending_shape

        args: list[str | int] = ["1" if shape else "0", *films]
        try:
            await self.guard.script(self._invalidate, CACHE_KEYS, args)
        except RedisUnavailable:
            log.warning("cache invalidation deferred: redis unavailable")
            return False
        self._pending_films.difference_update(films)
        if shape:
            self._pending_shape = False
        return True

    async def _bypass(self, load: Callable[[], Awaitable[Loaded]]) -> CachedBody:
        loaded = await load()
        return CachedBody(loaded.body, strong_etag(loaded.body), CacheStatus.BYPASS)
