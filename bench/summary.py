"""Numbers in, conclusions out: per-variant summaries, paired ratios, the issue's targets.

Everything here is pure (no I/O), so it is unit-tested on made-up rounds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.jobs import JobSample
from bench.load import WrkResult
from bench.redisstats import RedisUsage


@dataclass(frozen=True)
class Variant:
    """A benchmarked variant: factory name in ``bench.variants``, table label, description."""

    key: str
    label: str
    description: str


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "1. product, Redis features off", "no rate limiter, no cache (baseline)"),
    Variant("limiter", "2. product rate limiter only", "pure-ASGI limiter, one EVALSHA; no cache"),
    Variant("full", "3. product full path, cache hit", "limiter + response cache (HIT)"),
    Variant("slowapi", "4a. slowapi (headers on)", "Limiter(storage_uri=redis://, headers)"),
    Variant("fastapi_limiter", "4b. fastapi-limiter 0.2.0", "RateLimiter dep., RedisBucket"),
    Variant("naive", "5. naive INCR+EXPIRE middleware", "@app.middleware('http'), redis.asyncio"),
    Variant("starlette", "6. bare Starlette, same bytes", "framework ceiling, no DB, no Redis"),
)
BASELINE = "baseline"


@dataclass(frozen=True)
class Measurement:
    """One variant in one round: wrk's result and the Redis work it caused."""

    variant: str
    round: int
    wrk: WrkResult
    redis: RedisUsage
    load_average: float = math.nan


@dataclass(frozen=True)
class Spread:
    """Median with min and max."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (NaN for none)."""
        if not values:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(values), min(values), max(values))


@dataclass(frozen=True)
class VariantSummary:
    """A variant over all rounds."""

    key: str
    label: str
    rps: Spread
    ratio: Spread
    p50_ms: float
    p99_ms: float
    round_trips: float
    commands: float
    clean: bool
    added_us: float


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def _by_round(measurements: Sequence[Measurement], key: str) -> dict[int, Measurement]:
    return {m.round: m for m in measurements if m.variant == key}


def paired_ratios(measurements: Sequence[Measurement], key: str, reference: str) -> list[float]:
    """``key``'s req/s over ``reference``'s, round by round (rounds alternate the variants, so
    pairing within a round cancels slow drift of the machine)."""
    mine, theirs = _by_round(measurements, key), _by_round(measurements, reference)
    return [
        mine[r].wrk.rps / theirs[r].wrk.rps
        for r in sorted(mine)
        if r in theirs and theirs[r].wrk.rps > 0
    ]


def added_server_us(measurements: Sequence[Measurement], key: str, reference: str) -> list[float]:
    """Server time per request that ``key`` adds over ``reference``, round by round, in
    microseconds: 1/rps - 1/rps_reference (the single worker is saturated, so 1/rps is its
    time per request)."""
    mine, theirs = _by_round(measurements, key), _by_round(measurements, reference)
    return [
        1e6 / mine[r].wrk.rps - 1e6 / theirs[r].wrk.rps
        for r in sorted(mine)
        if r in theirs and mine[r].wrk.rps > 0 and theirs[r].wrk.rps > 0
    ] or [math.nan]


def summarize(
    measurements: Sequence[Measurement], variants: Sequence[Variant] = VARIANTS
) -> list[VariantSummary]:
    """One summary per measured variant, in table order."""
    summaries = []
    for variant in variants:
        rounds = [m for m in measurements if m.variant == variant.key]
        if not rounds:
            continue
        summaries.append(
            VariantSummary(
                key=variant.key,
                label=variant.label,
                rps=Spread.of([m.wrk.rps for m in rounds]),
                ratio=Spread.of(paired_ratios(measurements, variant.key, BASELINE)),
                p50_ms=statistics.median(m.wrk.latency_p50_ms for m in rounds),
                p99_ms=statistics.median(m.wrk.latency_p99_ms for m in rounds),
                round_trips=statistics.median(m.redis.round_trips_per_request for m in rounds),
                commands=statistics.median(m.redis.commands_per_request for m in rounds),
                clean=all(m.wrk.clean for m in rounds),
                added_us=statistics.median(added_server_us(measurements, variant.key, BASELINE))
                if variant.key != BASELINE
                else 0.0,
            )
        )
    return summaries


@dataclass(frozen=True)
class RefreshSummary:
    """Refresh jobs: enqueue-to-complete latency and how much of it was the computation."""

    jobs: int
    latency_median_ms: float
    latency_p95_ms: float
    computation_median_ms: float
    overhead_median_ms: float
    overhead_p95_ms: float
    observed_median_ms: float

    @classmethod
    def of(cls, samples: Sequence[JobSample]) -> RefreshSummary:
        """Summarize the timed jobs."""
        latency = [s.latency_ms for s in samples]
        overhead = [s.overhead_ms for s in samples]
        return cls(
            jobs=len(samples),
            latency_median_ms=percentile(latency, 50),
            latency_p95_ms=percentile(latency, 95),
            computation_median_ms=percentile([s.computation_ms for s in samples], 50),
            overhead_median_ms=percentile(overhead, 50),
            overhead_p95_ms=percentile(overhead, 95),
            observed_median_ms=percentile([s.observed_ms for s in samples], 50),
        )


@dataclass(frozen=True)
class Target:
    """One of the issue's targets and whether the measurement meets it."""

    name: str
    measured: float | None
    threshold: float
    at_least: bool
    unit: str
    note: str = ""

    @property
    def met(self) -> bool | None:
        """True/False, or None when it could not be measured."""
        if self.measured is None or math.isnan(self.measured):
            return None
        if self.at_least:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    @property
    def margin(self) -> str:
        """How far the measurement is from the threshold, in the threshold's terms."""
        if self.met is None or self.measured is None:
            return "not measured"
        diff = self.measured - self.threshold if self.at_least else self.threshold - self.measured
        relative = diff / self.threshold * 100 if self.threshold else math.inf
        word = "above" if self.at_least else "below"
        if diff < 0:
            word = "short of" if self.at_least else "over"
        return f"{abs(diff):.2f}{self.unit} {word} the target ({relative:+.0f}%)"


def _ratio(measurements: Sequence[Measurement], key: str, reference: str) -> float | None:
    ratios = paired_ratios(measurements, key, reference)
    return statistics.median(ratios) if ratios else None


def evaluate_targets(
    measurements: Sequence[Measurement],
    exact_round_trips: dict[str, float],
    refresh: RefreshSummary | None,
) -> list[Target]:
    """The issue's six targets, each measured or marked as not measured."""
    return [
        Target("full cached path vs baseline", _ratio(measurements, "full", BASELINE), 1.5, True,
               "x"),
        Target("limiter only vs baseline", _ratio(measurements, "limiter", BASELINE), 0.8, True,
               "x"),
        Target("full path vs slowapi (headers on)", _ratio(measurements, "full", "slowapi"), 2.5,
               True, "x"),
        Target("full path vs fastapi-limiter", _ratio(measurements, "full", "fastapi_limiter"),
               2.0, True, "x"),
        Target("Redis round trips, cached GET", exact_round_trips.get("full"), 2.0, False, "",
               "sequential requests, exact count"),
        Target("refresh latency beyond the computation (median)",
               refresh.overhead_median_ms if refresh else None, 50.0, False, " ms",
               "finish - enqueue - duration_ms"),
    ]  # fmt: skip
