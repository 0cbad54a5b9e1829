"""GET cache: hits replay the same bytes, ETag/304 work, writes invalidate, no stale fill."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from app.cache import CacheStatus, ResponseCache, cache_digest, etag_matches, strong_etag
from app.constants import CACHE_GENERATION_KEY
from app.redisguard import CircuitBreaker, RedisGuard

MOVIE = {"title": "Heat", "year": 1995, "genres": ["Crime"]}


def test_etag_is_strong_and_stable_and_if_none_match_uses_weak_comparison() -> None:
    """Same bytes → same quoted tag; If-None-Match accepts lists, W/ and *."""
    tag = strong_etag(b"abc")
    assert tag == strong_etag(b"abc") != strong_etag(b"abd")
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert etag_matches(tag, tag)
    assert etag_matches(f'"other", W/{tag}', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"other"', tag)
    assert not etag_matches(None, tag)


def test_digest_ignores_parameter_order_and_missing_values() -> None:
    """The cache key depends on the query's meaning, not its spelling."""
    assert cache_digest("/movies", {"a": 1, "b": None, "c": "x"}) == cache_digest(
        "/movies", {"c": "x", "a": 1}
    )
    assert cache_digest("/movies", {"a": 1}) != cache_digest("/movies", {"a": 2})


async def test_second_get_is_a_hit_with_identical_bytes_and_etag(client: httpx.AsyncClient) -> None:
    """MISS then HIT, same body and ETag, Cache-Control no-cache."""
    await client.post("/movies", json=MOVIE)
    first = await client.get("/movies")
    second = await client.get("/movies")
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"] == strong_etag(first.content)
    assert second.headers["cache-control"] == "no-cache"
    assert first.json()["items"][0]["title"] == "Heat"


async def test_if_none_match_gives_304_without_body(client: httpx.AsyncClient) -> None:
    """A current tag → 304 with the tag and no body; a stale one → 200."""
    created = (await client.post("/movies", json=MOVIE)).json()
    for path in ["/movies", f"/movies/{created['id']}"]:
        etag = (await client.get(path)).headers["etag"]
        not_modified = await client.get(path, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304
        assert not_modified.content == b""
        assert not_modified.headers["etag"] == etag
        stale = await client.get(path, headers={"If-None-Match": '"stale"'})
        assert stale.status_code == 200


@pytest.mark.parametrize("write", ["post", "put", "delete", "rate"])
async def test_every_write_makes_the_next_get_a_fresh_miss(
    client: httpx.AsyncClient, write: str
) -> None:
    """After POST/PUT/DELETE/rating, the list is re-read and shows the change."""
    movie = (await client.post("/movies", json=MOVIE)).json()
    await client.get("/movies")
    assert (await client.get("/movies")).headers["x-cache"] == "HIT"
    single = await client.get(f"/movies/{movie['id']}")
    assert (await client.get(f"/movies/{movie['id']}")).headers["x-cache"] == "HIT"

    if write == "post":
        await client.post("/movies", json={**MOVIE, "title": "Ronin"})
    elif write == "put":
        await client.put(f"/movies/{movie['id']}", json={**MOVIE, "title": "Heat (1995)"})
    elif write == "delete":
        assert (await client.delete(f"/movies/{movie['id']}")).status_code == 204
    else:
        await client.post(f"/movies/{movie['id']}/ratings", json={"user_id": 7, "score": 4})

    after = await client.get("/movies")
    assert after.headers["x-cache"] == "MISS"
    items = after.json()["items"]
    titles = [item["title"] for item in items]
    if write == "post":
        assert titles == ["Heat", "Ronin"]
    elif write == "put":
        assert titles == ["Heat (1995)"]
    elif write == "delete":
        assert titles == []
    else:
        assert items[0]["rating_average"] == 4.0
        assert items[0]["rating_count"] == 1
    again = await client.get(f"/movies/{movie['id']}")
    if write == "delete":
        assert again.status_code == 404
    else:
        assert again.headers["x-cache"] == "MISS"
        # A new film leaves this one's bytes (and so its tag) as they were.
        assert (again.headers["etag"] == single.headers["etag"]) is (write == "post")


async def test_slow_reader_cannot_store_data_older_than_a_write(redis: Redis) -> None:
    """Reader reads the generation, a writer commits and invalidates, the reader's old body is
    NOT stored: the next read is a MISS that sees the new data."""
    guard = RedisGuard(ArqRedis(connection_pool=redis.connection_pool), CircuitBreaker(3, 1.0))
    cache = ResponseCache(guard, ttl_seconds=60)
    database = {"title": "old"}
    reader_loaded = asyncio.Event()
    writer_done = asyncio.Event()

    async def slow_load() -> bytes:
        body = database["title"].encode()  # the reader's snapshot, taken before the write
        reader_loaded.set()
        await writer_done.wait()  # the write commits and invalidates meanwhile
        return body

    async def writer() -> None:
        await reader_loaded.wait()
        database["title"] = "new"
        await cache.invalidate()
        writer_done.set()

    stale, _ = await asyncio.gather(cache.get_or_load("k", slow_load), writer())
    assert stale.body == b"old"
    assert stale.status is CacheStatus.MISS
    assert int(await redis.get(CACHE_GENERATION_KEY) or 0) == 1
    assert [key async for key in redis.scan_iter(match="cache:movies:*:k")] == []

    async def fresh_load() -> bytes:
        return database["title"].encode()

    fresh = await cache.get_or_load("k", fresh_load)
    assert (fresh.body, fresh.status) == (b"new", CacheStatus.MISS)
    hit = await cache.get_or_load("k", fresh_load)
    assert (hit.body, hit.status) == (b"new", CacheStatus.HIT)


async def test_entries_expire_with_the_configured_ttl(redis: Redis) -> None:
    """A stored entry carries the TTL from settings."""
    guard = RedisGuard(ArqRedis(connection_pool=redis.connection_pool), CircuitBreaker(3, 1.0))
    cache = ResponseCache(guard, ttl_seconds=7)

    async def load() -> bytes:
        return b"body"

    await cache.get_or_load("ttl", load)
    keys = [key async for key in redis.scan_iter(match="cache:movies:*:ttl")]
    assert len(keys) == 1
    assert 0 < await redis.pttl(keys[0]) <= 7_000
