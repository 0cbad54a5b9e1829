"""The mixed workload: 90 % reads (a fixed set of list pages, the catalog's single films), 10 %
ratings (``POST /movies/{id}/ratings``), driven by wrk with ``mixed.lua``.

The product runs as it ships (``uvicorn app.main:app`` with MOVIE_* settings: its own SQLite
file seeded with the demo catalog and ratings, the rate limit at its maximum, its own Redis
database index), once for this tree (``after``) and once for ``BEFORE_REV`` (``before``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.load import read_report_line, run_wrk_process
from bench.procs import BenchError

SCRIPT = Path(__file__).with_name("mixed.lua")
WRITE_PERCENT = 10
SEED = 12


@dataclass(frozen=True)
class MixedResult:
    """One wrk run of the mixed workload, as mixed.lua's ``done()`` reported it."""

    requests: int
    duration_s: float
    socket_errors: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    sent: dict[str, int] = field(default_factory=dict)  # list / film / rating
    statuses: dict[str, int] = field(default_factory=dict)  # "200" -> count
    cache: dict[str, int] = field(default_factory=dict)  # HIT / MISS / BYPASS / NONE

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        """Responses outside 2xx."""
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    @property
    def errors(self) -> int:
        """Every non-2xx response and every socket error (connect, read, write, timeout)."""
        return self.non_2xx + self.socket_errors

    @property
    def cache_lookups(self) -> int:
        """Responses that carried an X-Cache header (the GETs)."""
        return sum(self.cache.get(k, 0) for k in ("HIT", "MISS", "BYPASS"))

    @property
    def hit_ratio(self) -> float:
        """X-Cache HIT over the GETs that reported a cache status (NaN without any)."""
        lookups = self.cache_lookups
        return self.cache.get("HIT", 0) / lookups if lookups else float("nan")


def parse_mixed_output(output: str) -> MixedResult:
    """The ``MIXED_JSON`` line of a wrk run with mixed.lua."""
    counts = read_report_line(output, "MIXED_JSON", "mixed.lua")
    data, latency = counts.data, counts.latency_ms
    return MixedResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1_000_000,
        socket_errors=counts.socket_errors,
        latency_p50_ms=latency["p50"],
        latency_p90_ms=latency["p90"],
        latency_p99_ms=latency["p99"],
        latency_max_ms=latency["max"],
        sent={k: int(v) for k, v in data["sent"].items()},
        statuses={k: int(v) for k, v in data["statuses"].items()},
        cache={k: int(v) for k, v in data["cache"].items()},
    )


def mixed_argv(
    wrk: str, base_url: str, ids: Sequence[int], *, duration: float, connections: int, seed: int
) -> list[str]:
    """wrk's command line for the mixed workload against ``base_url`` (127.0.0.1 only)."""
    if not base_url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing to load anything but 127.0.0.1: {base_url}")
    if not ids:
        raise BenchError("the mixed workload needs at least one film id")
    return [
        wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
        "--latency", "-s", str(SCRIPT), base_url, "--",
        str(seed), ",".join(str(i) for i in ids), str(WRITE_PERCENT),
    ]  # fmt: skip


def run_mixed(
    wrk: str,
    base_url: str,
    ids: Sequence[int],
    *,
    duration: float,
    connections: int,
    seed: int = SEED,
    cpu: int | None = None,
) -> MixedResult:
    """Run the mixed workload for ``duration`` seconds; return what mixed.lua counted."""
    argv = mixed_argv(wrk, base_url, ids, duration=duration, connections=connections, seed=seed)
    done = run_wrk_process(argv, duration=duration, cpu=cpu)
    try:
        return parse_mixed_output(done.stdout)
    except ValueError as exc:
        raise BenchError(f"{exc}: {done.stderr.strip()[:300]}") from None


def catalog_ids(base_url: str) -> list[int]:
    """Every film id the API lists (pages of 100)."""
    ids: list[int] = []
    with httpx.Client(timeout=10) as client:
        while True:
            page = client.get(f"{base_url}/movies", params={"limit": 100, "offset": len(ids)})
            page.raise_for_status()
            data = page.json()
            ids += [int(item["id"]) for item in data["items"]]
            if not data["items"] or len(ids) >= int(data["total"]):
                return ids


def product_env(database_url: str, redis_url: str) -> dict[str, str]:
    """MOVIE_* settings of a product served for the mixed workload."""
    return {
        "MOVIE_DATABASE_URL": database_url,
        "MOVIE_REDIS_URL": redis_url,
        "MOVIE_SEED_DEMO_DATA": "true",
        "MOVIE_RATE_LIMIT_PER_MINUTE": "1000000",  # the maximum the settings allow
        "MOVIE_LOG_LEVEL": "WARNING",
        "MOVIE_READY_REQUIRES_WORKER": "false",
    }
