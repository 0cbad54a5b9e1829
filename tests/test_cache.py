"""GET cache: hits replay the same bytes, ETag/304 work, writes invalidate, no stale fill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from app.cache import (
    CacheStatus,
    Loaded,
    ResponseCache,
    cache_digest,
    etag_matches,
    film_digest,
    front_digest,
    list_digest,
    strong_etag,
)
from app.constants import CACHE_VERSIONS_KEY
from app.redisguard import CircuitBreaker, RedisGuard

MOVIE = {"title": "Heat", "year": 1995, "genres": ["Crime"]}


@pytest.fixture
async def guard(redis: Redis) -> AsyncIterator[RedisGuard]:
    """A guard on the session's server (its pipelining connection closed afterwards)."""
    guarded = RedisGuard(ArqRedis(connection_pool=redis.connection_pool), CircuitBreaker(3, 1.0))
    yield guarded
    if guarded.mux is not None:
        await guarded.mux.aclose()


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


async def test_slow_reader_cannot_store_data_older_than_a_write(
    redis: Redis, guard: RedisGuard
) -> None:
    """Reader reads the generation, a writer commits and invalidates, the reader's old body is
    NOT stored: the next read is a MISS that sees the new data."""
    cache = ResponseCache(guard, ttl_seconds=60)
    database = {"title": "old"}
    reader_loaded = asyncio.Event()
    writer_done = asyncio.Event()

    async def slow_load() -> Loaded:
        body = database["title"].encode()  # the reader's snapshot, taken before the write
        reader_loaded.set()
        await writer_done.wait()  # the write commits and invalidates meanwhile
        return Loaded(body, (1,))

    async def writer() -> None:
        await reader_loaded.wait()
        database["title"] = "new"
        await cache.invalidate([1])
        writer_done.set()

    stale, _ = await asyncio.gather(cache.get_or_load("k", slow_load), writer())
    assert stale.body == b"old"
    assert stale.status is CacheStatus.MISS
    versions = await redis.hgetall(CACHE_VERSIONS_KEY)  # type: ignore[misc]
    assert versions == {b"1": b"1"}
    assert [key async for key in redis.scan_iter(match="cache:movies:*:k")] == []

    async def fresh_load() -> Loaded:
        return Loaded(database["title"].encode(), (1,))

    fresh = await cache.get_or_load("k", fresh_load)
    assert (fresh.body, fresh.status) == (b"new", CacheStatus.MISS)
    hit = await cache.get_or_load("k", fresh_load)
    assert (hit.body, hit.status) == (b"new", CacheStatus.HIT)


async def test_entries_expire_with_the_configured_ttl(redis: Redis, guard: RedisGuard) -> None:
    """A stored entry carries the TTL from settings."""
    cache = ResponseCache(guard, ttl_seconds=7)

    async def load() -> Loaded:
        return Loaded(b"body", (1,))

    await cache.get_or_load("ttl", load)
    keys = [key async for key in redis.scan_iter(match="cache:movies:*:ttl")]
    assert len(keys) == 1
    assert 0 < await redis.pttl(keys[0]) <= 7_000


async def test_an_invalidation_landing_after_the_store_still_makes_the_entry_stale(
    guard: RedisGuard,
) -> None:
    """Reader stores the old body; the writer's invalidation arrives only then: the next read
    misses (the film's version is above the entry's snapshot)."""
    cache = ResponseCache(guard, ttl_seconds=60)
    database = {"title": "old"}

    async def load() -> Loaded:
        return Loaded(database["title"].encode(), (1, 2))

    assert (await cache.get_or_load("k", load)).status is CacheStatus.MISS
    database["title"] = "new"  # committed; the invalidation is still on its way
    assert (await cache.get_or_load("k", load)).body == b"old"  # the window every cache has
    await cache.invalidate([2])
    after = await cache.get_or_load("k", load)
    assert (after.body, after.status) == (b"new", CacheStatus.MISS)


async def test_a_rating_misses_only_the_rated_film_and_the_pages_that_show_it(
    client: httpx.AsyncClient,
) -> None:
    """Per-film versions: rating film B leaves film A and A's page cached."""
    a = (await client.post("/movies", json=MOVIE)).json()["id"]
    b = (await client.post("/movies", json={**MOVIE, "title": "Ronin"})).json()["id"]
    paths = [
        "/movies?limit=1",
        "/movies?limit=1&offset=1",
        "/movies",
        f"/movies/{a}",
        f"/movies/{b}",
    ]
    for path in paths:
        await client.get(path)
        assert (await client.get(path)).headers["x-cache"] == "HIT", path

    await client.post(f"/movies/{b}/ratings", json={"user_id": 7, "score": 4.5})

    outcome = {path: (await client.get(path)) for path in paths}
    assert {path: r.headers["x-cache"] for path, r in outcome.items()} == {
        "/movies?limit=1": "HIT",
        "/movies?limit=1&offset=1": "MISS",
        "/movies": "MISS",
        f"/movies/{a}": "HIT",
        f"/movies/{b}": "MISS",
    }
    assert outcome[f"/movies/{b}"].json()["rating_average"] == 4.5
    assert outcome["/movies?limit=1&offset=1"].json()["items"][0]["rating_count"] == 1


async def test_a_title_edit_keeps_other_films_cached_and_a_genre_edit_regroups(
    client: httpx.AsyncClient,
) -> None:
    """Same genres: only the edited film's entries miss. New genres: genre pages show the move."""
    a = (await client.post("/movies", json=MOVIE)).json()["id"]
    b = (await client.post("/movies", json={**MOVIE, "title": "Ronin"})).json()["id"]
    for path in [f"/movies/{b}", "/movies?genre=Drama", f"/movies/{a}"]:
        await client.get(path)

    await client.put(f"/movies/{a}", json={**MOVIE, "title": "Heat (1995)"})
    assert (await client.get(f"/movies/{b}")).headers["x-cache"] == "HIT"
    assert (await client.get("/movies?genre=Drama")).headers["x-cache"] == "HIT"
    assert (await client.get(f"/movies/{a}")).json()["title"] == "Heat (1995)"

    await client.put(f"/movies/{a}", json={**MOVIE, "genres": ["Drama"]})
    drama = await client.get("/movies?genre=Drama")
    assert drama.headers["x-cache"] == "MISS"
    assert [item["id"] for item in drama.json()["items"]] == [a]


async def _reads_processed(redis: Redis) -> int:
    stats = await redis.info("stats")
    return int(stats["total_reads_processed"])


async def _round_trips(redis: Redis, requests: int, send: object) -> float:
    """Redis reads the server processed per request (each INFO of the count adds one)."""
    before = await _reads_processed(redis)
    for _ in range(requests):
        await send()  # type: ignore[operator]
    return (await _reads_processed(redis) - before - 1) / requests


async def test_a_cached_get_costs_one_redis_round_trip_and_a_miss_two(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    """The front counts and reads in one script call; a miss adds only the store."""
    movie = (await client.post("/movies", json=MOVIE)).json()["id"]
    await client.get("/movies")

    async def hit() -> None:
        assert (await client.get("/movies")).headers["x-cache"] == "HIT"

    async def film_miss() -> None:
        await client.post(f"/movies/{movie}/ratings", json={"user_id": 1, "score": 3})
        assert (await client.get(f"/movies/{movie}")).headers["x-cache"] == "MISS"

    async def rate() -> None:
        await client.post(f"/movies/{movie}/ratings", json={"user_id": 1, "score": 3})

    assert await _round_trips(redis, 20, hit) == 1
    # rating: its limit + its invalidation = 2; then the miss.
    assert await _round_trips(redis, 10, film_miss) - await _round_trips(redis, 10, rate) == 2


async def test_the_front_answers_a_hit_exactly_as_the_route_would(
    client: httpx.AsyncClient,
) -> None:
    """/movies/1 (answered by the front) and /movies/01 (routed, same entry): same status,
    body and headers, for 200 and for 304."""
    movie = (await client.post("/movies", json=MOVIE)).json()["id"]
    await client.get(f"/movies/{movie}")

    def comparable(response: httpx.Response) -> dict[str, str]:
        # One more request was counted, and each request has its own id.
        varying = {"x-ratelimit-remaining", "ratelimit", "x-request-id"}
        return {k: v for k, v in response.headers.items() if k not in varying}

    front = await client.get(f"/movies/{movie}")
    routed = await client.get(f"/movies/0{movie}")
    assert front.headers["x-cache"] == routed.headers["x-cache"] == "HIT"
    assert (front.status_code, front.content) == (routed.status_code, routed.content)
    assert comparable(front) == comparable(routed)
    tag = {"If-None-Match": front.headers["etag"]}
    front_304 = await client.get(f"/movies/{movie}", headers=tag)
    routed_304 = await client.get(f"/movies/0{movie}", headers=tag)
    assert front_304.status_code == routed_304.status_code == 304
    assert comparable(front_304) == comparable(routed_304)


def _scope(path: str, query: bytes = b"", method: str = "GET") -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/movies", b"", list_digest(50, 0, None)),
        ("/movies", b"offset=20&limit=20", list_digest(20, 20, None)),
        ("/movies", b"genre=Sci-Fi&x=1", list_digest(50, 0, "sci-fi")),
        ("/movies", b"genre=Film+Noir", list_digest(50, 0, "Film Noir")),
        ("/movies/7", b"", film_digest(7)),
        ("/movies", b"limit=0", None),
        ("/movies", b"limit=101", None),
        ("/movies", b"limit=abc", None),
        ("/movies", b"limit=5&limit=6", None),
        ("/movies", b"genre=", None),
        ("/movies", b"offset=-1", None),
        ("/movies/07", b"", None),
        ("/movies/+7", b"", None),
        ("/movies/2147483648", b"", None),
        ("/movies/7/ratings", b"", None),
        ("/jobs/x", b"", None),
    ],
)
def test_the_front_takes_only_canonical_reads_and_keys_them_like_the_routes(
    path: str, query: bytes, expected: str | None
) -> None:
    """A canonical read has the route's digest; anything else is left to the routes."""
    assert front_digest(_scope(path, query)) == expected


def test_the_front_leaves_other_methods_to_the_routes() -> None:
    """Only GET is answered from the cache."""
    assert front_digest(_scope("/movies", method="HEAD")) is None
    assert front_digest(_scope("/movies", method="POST")) is None


async def test_concurrent_misses_of_one_snapshot_share_one_database_read(guard: RedisGuard) -> None:
    """Ten requests miss together: one load, ten identical answers. A miss after a write does
    not join a read that may predate the write."""
    cache = ResponseCache(guard, ttl_seconds=60)
    loads: list[str] = []
    release = asyncio.Event()
    database = {"title": "old"}

    async def load() -> Loaded:
        loads.append(database["title"])
        await release.wait()
        return Loaded(database["title"].encode(), (1,))

    together = [asyncio.create_task(cache.get_or_load("page", load)) for _ in range(10)]
    await asyncio.sleep(0.05)
    database["title"] = "new"
    await cache.invalidate([1])  # a write lands while the first read is still running
    after_write = asyncio.create_task(cache.get_or_load("page", load))
    await asyncio.sleep(0.05)
    release.set()
    answers = await asyncio.gather(*together)
    assert {(a.body, a.status) for a in answers} == {(b"new", CacheStatus.MISS)}
    assert (await after_write).body == b"new"
    assert loads == ["old", "new"]  # one read for the ten, one for the request after the write
