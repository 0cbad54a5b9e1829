"""The rate-limit counters in Redis, read with SCAN (never KEYS) and pipelined in batches.

A counter is one client's on one route template (``/movies/{movie_id}``; ``/{unmatched}`` for
every path no route matches). Filters take what an operator has at hand: ``--client`` an address
(an IPv6 one means its /64) and ``--path`` a template or a concrete path (``/movies/7``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from starlette.routing import compile_path

from app.constants import RATE_KEY_PREFIX, UNMATCHED_ROUTE_TEMPLATE, parse_rate_key, rate_key
from app.identity import identity_of, parse_ip
from app.ratelimit import seconds_until_reset
from movieops.errors import NotRunning, UsageError
from movieops.probes import redis_client
from movieops.secrets import redact_url

SCAN_COUNT = 500


@dataclass(frozen=True)
class Counter:
    """One client's counter on one route."""

    client: str
    path: str  # the route template, e.g. /movies/{movie_id}
    count: int
    limit: int
    remaining: int
    reset_seconds: int | None  # None: the key has no TTL (it would never reset)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def client_identity(client: str) -> str:
    """The identity counters use for ``client``: an address normalised (IPv6: its /64), an
    identity (``2001:db8::/64``, ``unknown``) as given."""
    address = parse_ip(client)
    return identity_of(address) if address is not None else client


def path_matches(template: str, path: str) -> bool:
    """Whether a counter's template is ``path``, or a route template that ``path`` falls on."""
    if template == path:
        return True
    if template == UNMATCHED_ROUTE_TEMPLATE or "{" not in template:
        return False
    return compile_path(template)[0].match(path) is not None


def read_counters(
    redis: Redis, limit: int, client: str | None = None, path: str | None = None
) -> list[Counter]:
    """Every ``rate:*`` counter (optionally of one client and/or path), busiest first."""
    if client:
        client = client_identity(client)
    pattern = rate_key(_glob_escape(client), "*") if client else f"{RATE_KEY_PREFIX}*"
    keys = [k.decode() if isinstance(k, bytes) else k for k in redis.scan_iter(pattern, SCAN_COUNT)]
    counters: list[Counter] = []
    for start in range(0, len(keys), SCAN_COUNT):
        batch = keys[start : start + SCAN_COUNT]
        pipe = redis.pipeline(transaction=False)
        for key in batch:
            pipe.get(key)
            pipe.pttl(key)
        values: list[Any] = pipe.execute()
        for index, key in enumerate(batch):
            parsed = parse_rate_key(key)
            raw, ttl_ms = values[2 * index], values[2 * index + 1]
            if parsed is None or raw is None:
                continue  # not a counter, or it expired between SCAN and GET
            key_client, key_path = parsed
            if path is not None and not path_matches(key_path, path):
                continue
            count = int(raw)
            counters.append(
                Counter(
                    client=key_client,
                    path=key_path,
                    count=count,
                    limit=limit,
                    remaining=max(0, limit - count),
                    reset_seconds=seconds_until_reset(ttl_ms) if ttl_ms >= 0 else None,
                )
            )
    counters.sort(key=lambda c: (-c.count, c.client, c.path))
    return counters


def reset_client(redis: Redis, client: str) -> int:
    """Delete every counter of one client; return how many."""
    pattern = rate_key(_glob_escape(client_identity(client)), "*")
    keys = list(redis.scan_iter(pattern, SCAN_COUNT))
    deleted = 0
    for start in range(0, len(keys), SCAN_COUNT):
        removed: Any = redis.delete(*keys[start : start + SCAN_COUNT])
        deleted += int(removed)
    return deleted


def watch(
    read: Callable[[], list[Counter]], interval: float, count: int | None = None
) -> Iterator[list[Counter]]:
    """Snapshots from ``read`` every ``interval`` seconds; ``count`` of them, or forever."""
    taken = 0
    while count is None or taken < count:
        yield read()
        taken += 1
        if count is None or taken < count:
            time.sleep(interval)


@contextmanager
def connected(url: str) -> Iterator[Redis]:
    """A Redis client that answered PING; any Redis failure inside becomes NotRunning."""
    try:
        with redis_client(url) as redis:
            redis.ping()
            yield redis
    except (OSError, RedisError) as exc:
        raise NotRunning(
            f"cannot reach Redis at {redact_url(url)}: {exc}",
            hint="start the stack with `movieops up`, or pass --redis-url",
        ) from None


def reset(redis: Redis, client: str | None) -> dict[str, Any]:
    """Delete every counter of ``client`` (lifts its limit now): {client, deleted}."""
    if not client:
        raise UsageError("--reset needs --client", hint="e.g. --client 172.30.57.1")
    return {"client": client, "deleted": reset_client(redis, client)}
