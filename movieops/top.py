"""`movieops top`: what the stack is doing, from each process's own metrics and from Redis.

Each API replica and each worker is scraped on its own (the runtime says where:
``Runtime.metrics_targets``); two scrapes an interval apart give rates, ratios and latency
quantiles (movieops.metrics, pure). Redis is read with INFO and a bounded SCAN (never KEYS).
A process that cannot be scraped is shown as down, never a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from redis.exceptions import RedisError

from app.constants import CACHE_ENTRY_PREFIX, IDEMPOTENCY_KEY_PREFIX, QUEUE_NAME, RATE_KEY_PREFIX
from movieops import metrics
from movieops.errors import NotRunning
from movieops.probes import redis_client
from movieops.runtime import MetricsTarget
from movieops.secrets import redact_url

SCRAPE_TIMEOUT_SECONDS = 2.0
MAX_SCRAPE_BYTES = 8 * 1024 * 1024
MAX_SCAN_KEYS = 10_000
"""SCAN stops after this many keys: key counts are then lower bounds (shown as ≥N)."""
SCAN_COUNT = 1_000
# Prefixes key counts are grouped by (every other key counts as "other").
KEY_PREFIXES = (
    RATE_KEY_PREFIX,
    CACHE_ENTRY_PREFIX.split(":", 1)[0] + ":",
    IDEMPOTENCY_KEY_PREFIX,
    "arq:",
    QUEUE_NAME.split(":", 1)[0] + ":",
)
OTHER_KEYS = "other"
TARGETS_REFRESH_EVERY = 10
"""A live view asks the runtime where the processes are again every this many refreshes
(replicas come and go)."""


@dataclass(frozen=True)
class TargetView:
    """One process: up (with what it did in the interval) or down (with why)."""

    service: str
    instance: str
    url: str
    state: str  # up, down
    detail: str | None = None
    note: str | None = None
    api: metrics.ApiRates | None = None
    worker: metrics.WorkerRates | None = None


@dataclass(frozen=True)
class RedisView:
    """Redis memory and key counts by prefix."""

    state: str  # up, down
    detail: str | None = None
    used_memory: int | None = None
    used_memory_human: str | None = None
    maxmemory: int | None = None
    maxmemory_human: str | None = None
    total_keys: int | None = None  # DBSIZE
    keys: dict[str, int] = field(default_factory=dict)  # prefix -> count among scanned keys
    keys_scanned: int = 0
    complete: bool = True  # False: SCAN stopped at MAX_SCAN_KEYS, counts are lower bounds


@dataclass(frozen=True)
class TopSnapshot:
    """Everything `top` shows at one moment."""

    taken_at: datetime
    interval_seconds: float
    targets: list[TargetView]
    redis: RedisView


# --- pure --------------------------------------------------------------------------------------


def key_prefix(key: str) -> str:
    """The group a key counts in: one of KEY_PREFIXES, else "other" (bounded cardinality)."""
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix):
            return prefix
    return OTHER_KEYS


def count_prefixes(keys: list[str]) -> dict[str, int]:
    """Keys per prefix group, every known group present (0 when none)."""
    counts = dict.fromkeys((*KEY_PREFIXES, OTHER_KEYS), 0)
    for key in keys:
        counts[key_prefix(key)] += 1
    return counts


def view_of(
    target: MetricsTarget,
    before: metrics.Scrape | str | None,
    after: metrics.Scrape | str,
    seconds: float,
    now: float,
) -> TargetView:
    """A target's view from two scrape outcomes (a scrape, or why it failed)."""
    if isinstance(after, str):
        return TargetView(
            target.service, target.instance, target.url, "down", after, note=target.note
        )
    if before is None or isinstance(before, str):
        return TargetView(
            target.service,
            target.instance,
            target.url,
            "up",
            "first scrape: rates from the next one",
            note=target.note,
        )
    return TargetView(
        target.service,
        target.instance,
        target.url,
        "up",
        note=target.note,
        api=metrics.api_rates(before, after, seconds) if target.service == "api" else None,
        worker=(
            metrics.worker_rates(before, after, seconds, now)
            if target.service == "worker"
            else None
        ),
    )


def nothing_answers(snapshot: TopSnapshot) -> bool:
    """Whether no process and not Redis answered: the stack is not running."""
    return snapshot.redis.state == "down" and all(t.state == "down" for t in snapshot.targets)


# --- I/O ---------------------------------------------------------------------------------------


async def _scrape_one(client: httpx.AsyncClient, url: str) -> metrics.Scrape | str:
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_SCRAPE_BYTES:
                    return f"more than {MAX_SCRAPE_BYTES} bytes of metrics"
    except httpx.HTTPError as exc:
        return type(exc).__name__  # ConnectError, ReadTimeout …: the message adds nothing
    try:
        return metrics.parse(body.decode("utf-8", errors="replace"))
    except metrics.MetricsParseError as exc:
        return str(exc)[:200]


def scrape(targets: list[MetricsTarget]) -> dict[str, metrics.Scrape | str]:
    """Every target's metrics at once (URL -> scrape, or why it failed)."""

    async def everything() -> list[metrics.Scrape | str]:
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_SECONDS) as client:
            return await asyncio.gather(*(_scrape_one(client, t.url) for t in targets))

    if not targets:
        return {}
    return dict(zip((t.url for t in targets), asyncio.run(everything()), strict=True))


def read_redis(url: str, max_keys: int = MAX_SCAN_KEYS) -> RedisView:
    """INFO memory, DBSIZE and key counts by prefix from a SCAN that stops after ``max_keys``."""
    try:
        with redis_client(url) as client:
            memory: Any = client.info("memory")
            total: Any = client.dbsize()
            keys: list[str] = []
            complete = True
            for key in client.scan_iter(count=SCAN_COUNT):
                if len(keys) >= max_keys:
                    complete = False
                    break
                keys.append(key.decode(errors="replace") if isinstance(key, bytes) else str(key))
    except (RedisError, OSError) as exc:
        return RedisView("down", f"{redact_url(url)}: {type(exc).__name__}: {exc}"[:200])
    return RedisView(
        "up",
        used_memory=int(memory.get("used_memory", 0)),
        used_memory_human=str(memory.get("used_memory_human", "")) or None,
        maxmemory=int(memory.get("maxmemory", 0)),
        maxmemory_human=str(memory.get("maxmemory_human", "")) or None,
        total_keys=int(total),
        keys=count_prefixes(keys),
        keys_scanned=len(keys),
        complete=complete,
    )


def watch(
    targets: Callable[[], list[MetricsTarget]],
    redis_url: str,
    interval: float,
    count: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[TopSnapshot]:
    """Snapshots every ``interval`` seconds, each over the interval before it (the first after
    one interval); ``count`` of them, or forever. Raises NotRunning when the first finds
    nothing answering."""
    found = targets()
    previous = scrape(found)
    started = time.monotonic()
    taken = 0
    while count is None or taken < count:
        sleep(interval)
        if taken and taken % TARGETS_REFRESH_EVERY == 0:
            found = targets()
        current = scrape(found)
        now = time.monotonic()
        seconds = max(now - started, 1e-6)
        wall = time.time()
        snapshot = TopSnapshot(
            taken_at=datetime.now(UTC),
            interval_seconds=round(seconds, 3),
            targets=[view_of(t, previous.get(t.url), current[t.url], seconds, wall) for t in found],
            redis=read_redis(redis_url),
        )
        if taken == 0 and nothing_answers(snapshot):
            raise NotRunning(
                "nothing answers: "
                + "; ".join(
                    [f"{t.instance}: {t.detail}" for t in snapshot.targets]
                    + [f"redis: {snapshot.redis.detail}"]
                ),
                hint="start the stack with `movieops up` (or check --api-url/--redis-url)",
                data=snapshot,
            )
        yield snapshot
        previous, started = current, now
        taken += 1
