"""Numbers in, conclusions out: per-variant summaries, paired ratios, the issue's targets.

Everything here is pure (no I/O), so it is unit-tested on made-up rounds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.clitime import CliTiming
from bench.jobs import JobSample
from bench.load import WrkResult
from bench.mixed import MixedResult
from bench.redisstats import RedisUsage
from bench.stack import StartupTiming


@dataclass(frozen=True)
class Variant:
    """A benchmarked variant: its key, table label, description, whether it talks to Redis, and
    where it comes from (``after``: this tree; ``before``: the ``BEFORE_REV`` worktree)."""

    key: str
    label: str
    description: str
    uses_redis: bool = True
    tree: str = "after"
    factory: str = ""  # the bench.variants factory, when it is not the key

    @property
    def factory_name(self) -> str:
        """The factory served with ``uvicorn bench.variants:<name> --factory``."""
        return self.factory or self.key


VARIANTS: tuple[Variant, ...] = (
    Variant("memory", "in-memory FastAPI (response_model)", "50 films held in memory; baseline",
            uses_redis=False),
    Variant("starlette", "bare Starlette, same bytes", "framework ceiling, no DB, no Redis",
            uses_redis=False),
    Variant("memory_fastapi_limiter", "fastapi-limiter 0.2.0, in-memory route",
            "RateLimiter dep., RedisBucket, on the in-memory route"),
    Variant("memory_slowapi", "slowapi (headers on), in-memory route",
            "Limiter(storage_uri=redis://, headers) on the in-memory route"),
    Variant("full", "product, limiter + cache hit", "create_app as shipped, measured on hits"),
    Variant("full_nometrics", "product, limiter + cache hit, metrics off",
            "full with MOVIE_METRICS_ENABLED=false"),
    Variant("limiter", "product rate limiter, un-cached page", "rate limiter on, cache off"),
    Variant("baseline", "product, un-cached page (Redis features off)",
            "no rate limiter, response cache off (cache_enabled=False)", uses_redis=False),
    Variant("before_uncached", "before: product, un-cached page (Redis features off)",
            "the baseline variant of BEFORE_REV, from its own worktree", uses_redis=False,
            tree="before", factory="baseline"),
    Variant("slowapi", "slowapi (headers on), product un-cached route",
            "Limiter(storage_uri=redis://, headers) on the product's route"),
    Variant("fastapi_limiter", "fastapi-limiter 0.2.0, product un-cached route",
            "RateLimiter dep., RedisBucket, on the product's route"),
    Variant("naive", "naive INCR+EXPIRE middleware, un-cached", "@app.middleware('http')"),
)  # fmt: skip
BASELINE = "memory"
CEILING = "starlette"
METRICS_PAIR = ("full", "full_nometrics")
"""The cached GET with metrics on and off: ``--only metrics`` measures just these."""
METRICS_MIN_RATIO = 0.90
"""Metrics may cost at most 10 % of the cached GET's throughput (issue 14)."""
VARIANT_BY_KEY = {v.key: v for v in VARIANTS}


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
    """A variant over all rounds (ratios paired within rounds; Redis work exact when known)."""

    key: str
    label: str
    rps: Spread
    ratio: Spread  # x the baseline (the in-memory FastAPI route)
    vs_ceiling: Spread  # x bare Starlette
    p50_ms: float
    p99_ms: float
    round_trips: float | None  # None: the variant uses no Redis
    commands: float | None
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
    measurements: Sequence[Measurement],
    variants: Sequence[Variant] = VARIANTS,
    exact: Mapping[str, RedisUsage] | None = None,
) -> list[VariantSummary]:
    """One summary per measured variant, in table order. Redis work per request comes from the
    exact sequential count when ``exact`` has it, else from the rounds (median)."""
    exact = exact or {}
    summaries = []
    for variant in variants:
        rounds = [m for m in measurements if m.variant == variant.key]
        if not rounds:
            continue
        round_trips: float | None = None
        commands: float | None = None
        if variant.uses_redis:
            if variant.key in exact:
                round_trips = exact[variant.key].round_trips_per_request
                commands = exact[variant.key].commands_per_request
            else:
                round_trips = statistics.median(m.redis.round_trips_per_request for m in rounds)
                commands = statistics.median(m.redis.commands_per_request for m in rounds)
        summaries.append(
            VariantSummary(
                key=variant.key,
                label=variant.label,
                rps=Spread.of([m.wrk.rps for m in rounds]),
                ratio=Spread.of(paired_ratios(measurements, variant.key, BASELINE)),
                vs_ceiling=Spread.of(paired_ratios(measurements, variant.key, CEILING)),
                p50_ms=statistics.median(m.wrk.latency_p50_ms for m in rounds),
                p99_ms=statistics.median(m.wrk.latency_p99_ms for m in rounds),
                round_trips=round_trips,
                commands=commands,
                clean=all(m.wrk.clean for m in rounds),
                added_us=statistics.median(added_server_us(measurements, variant.key, BASELINE))
                if variant.key != BASELINE
                else 0.0,
            )
        )
    return summaries


@dataclass(frozen=True)
class MixedMeasurement:
    """The mixed workload against one tree (``after`` or ``before``) in one round."""

    target: str
    round: int
    result: MixedResult
    load_average: float = math.nan


@dataclass(frozen=True)
class MixedSummary:
    """The mixed workload of one tree over all rounds."""

    target: str
    rps: Spread
    ratio: Spread  # after / before, paired within rounds (1.0 for before)
    p50_ms: float
    p99_ms: float
    hit_ratio: float
    requests: int
    errors: int
    sent: dict[str, int]


def summarize_mixed(measurements: Sequence[MixedMeasurement]) -> list[MixedSummary]:
    """``after`` then ``before``, whichever were measured."""
    before = {m.round: m.result for m in measurements if m.target == "before"}
    out = []
    for target in ("after", "before"):
        rounds = [m for m in measurements if m.target == target]
        if not rounds:
            continue
        ratios = [
            m.result.rps / before[m.round].rps
            for m in rounds
            if m.round in before and before[m.round].rps > 0
        ]
        sent: dict[str, int] = {}
        for m in rounds:
            for kind, count in m.result.sent.items():
                sent[kind] = sent.get(kind, 0) + count
        hits = sum(m.result.cache.get("HIT", 0) for m in rounds)
        gets = sum(m.result.cache_lookups for m in rounds)
        out.append(
            MixedSummary(
                target=target,
                rps=Spread.of([m.result.rps for m in rounds]),
                ratio=Spread.of(ratios),
                p50_ms=statistics.median(m.result.latency_p50_ms for m in rounds),
                p99_ms=statistics.median(m.result.latency_p99_ms for m in rounds),
                hit_ratio=hits / gets if gets else math.nan,
                requests=sum(m.result.requests for m in rounds),
                errors=sum(m.result.errors for m in rounds),
                sent=sent,
            )
        )
    return out


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
    """One of the issue's targets and whether this run's measurement meets it.

    ``op`` is how the measurement must compare with the threshold: ``>=``, ``<=``, ``<`` or
    ``==`` (equal to 2 decimals: exact counts)."""

    name: str
    measured: float | None
    threshold: float
    op: str
    unit: str
    source: str = ""

    @property
    def met(self) -> bool | None:
        """True/False, or None when it could not be measured."""
        if self.measured is None or math.isnan(self.measured):
            return None
        value, limit = self.measured, self.threshold
        return {
            ">=": value >= limit,
            "<=": value <= limit,
            "<": value < limit,
            "==": round(value, 2) == round(limit, 2),
        }[self.op]

    @property
    def margin(self) -> str:
        """How far the measurement is from the threshold, in the threshold's terms."""
        if self.met is None or self.measured is None:
            return "not measured"
        if self.op == "==":
            off = abs(self.measured - self.threshold)
            return "exactly" if self.met else f"{off:.2f}{self.unit} off"
        at_least = self.op == ">="
        diff = self.measured - self.threshold if at_least else self.threshold - self.measured
        relative = diff / self.threshold * 100 if self.threshold else math.inf
        word = "above" if at_least else "below"
        if diff < 0:
            word = "short of" if at_least else "over"
        return f"{abs(diff):.2f}{self.unit} {word} the target ({relative:+.0f}%)"


def _ratio(measurements: Sequence[Measurement], key: str, reference: str) -> float | None:
    ratios = paired_ratios(measurements, key, reference)
    return statistics.median(ratios) if ratios else None


def _cli_median(cli: Sequence[CliTiming], name: str) -> float | None:
    found = [t for t in cli if t.name == name and t.tree == "after" and t.ok]
    return found[0].median_ms if found else None


def evaluate_targets(
    measurements: Sequence[Measurement],
    exact_round_trips: Mapping[str, float],
    refresh: RefreshSummary | None,
    mixed: Sequence[MixedSummary] = (),
    cli: Sequence[CliTiming] = (),
    startups: Sequence[StartupTiming] = (),
) -> list[Target]:
    """The issue 12 (and 14: metrics overhead) targets, each computed from this run or marked
    as not measured."""
    by_name = {t.name: t for t in startups if t.status == "measured"}
    cold = by_name.get("movieops up --runtime local")
    noop = by_name.get("movieops up --runtime local (already healthy)")
    after = next((m for m in mixed if m.target == "after"), None)
    mixed_ratio = after.ratio.median if after and not math.isnan(after.ratio.median) else None
    return [
        Target("product cached path (full) vs bare Starlette",
               _ratio(measurements, "full", CEILING), 0.25, ">=", "x",
               "paired per-round req/s ratio, full / starlette"),
        Target("product cached path (full) vs fastapi-limiter on the in-memory route",
               _ratio(measurements, "full", "memory_fastapi_limiter"), 2.0, ">=", "x",
               "paired per-round req/s ratio, full / memory_fastapi_limiter"),
        Target("cached GET with metrics vs without (full / full_nometrics)",
               _ratio(measurements, *METRICS_PAIR), METRICS_MIN_RATIO, ">=", "x",
               "paired per-round req/s ratio; 1 - it is the metrics' overhead"),
        Target("Redis round trips per cached GET (full)", exact_round_trips.get("full"), 1.0,
               "==", "", "sequential requests, exact count of total_reads_processed"),
        Target("un-cached page (baseline) vs before", _ratio(measurements, "baseline",
               "before_uncached"), 5.0, ">=", "x",
               "paired per-round req/s ratio, baseline / before_uncached"),
        Target("mixed workload throughput, after vs before", mixed_ratio, 5.0, ">=", "x",
               "paired per-round req/s ratio of the mixed workload"),
        Target("mixed workload errors (after)", float(after.errors) if after else None, 0.0,
               "==", "", "non-2xx responses + socket errors over every round"),
        Target("refresh latency beyond the computation (median)",
               refresh.overhead_median_ms if refresh else None, 15.0, "<=", " ms",
               "arq finish - enqueue - duration_ms (was <= 50 ms)"),
        Target("CLI `movieops --help` start-up (median)", _cli_median(cli, "movieops --help"),
               500.0, "<", " ms", "process wall time, 1 warm-up + N runs"),
        Target("CLI `movieops status` start-up (median)", _cli_median(cli, "movieops status"),
               500.0, "<", " ms", "process wall time, no stack running"),
        Target("cold local `movieops up`: time to healthy as reported",
               cold.reported_seconds if cold else None, 2.0, "<=", " s",
               "`data.seconds` of `movieops up --json`, scratch project, after `down -v`"),
        Target("`movieops up` on a healthy local stack (whole command)",
               noop.seconds if noop else None, 1.0, "<", " s",
               "process wall time of a second `up` right after the cold one"),
    ]  # fmt: skip
