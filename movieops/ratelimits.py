"""The rate-limit counters in Redis, read with SCAN (never KEYS) and pipelined in batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from app.constants import RATE_KEY_PREFIX, parse_rate_key, rate_key
from app.ratelimit import seconds_until_reset

SCAN_COUNT = 500


@dataclass(frozen=True)
class Counter:
    """One client's counter on one path."""

    client: str
    path: str
    count: int
    limit: int
    remaining: int
    reset_seconds: int | None  # None: the key has no TTL (it would never reset)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def read_counters(
    redis: Redis, limit: int, client: str | None = None, path: str | None = None
) -> list[Counter]:
    """Every ``rate:*`` counter (optionally of one client and/or path), busiest first."""
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
            if path is not None and key_path != path:
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
    keys = list(redis.scan_iter(rate_key(_glob_escape(client), "*"), SCAN_COUNT))
    deleted = 0
    for start in range(0, len(keys), SCAN_COUNT):
        removed: Any = redis.delete(*keys[start : start + SCAN_COUNT])
        deleted += int(removed)
    return deleted
