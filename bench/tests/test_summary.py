"""Aggregation and targets."""

from __future__ import annotations

import math

import pytest

from bench.clitime import CliTiming
from bench.jobs import JobSample
from bench.load import WrkResult
from bench.mixed import MixedResult
from bench.redisstats import RedisUsage
from bench.stack import StartupTiming
from bench.summary import (
    Measurement,
    MixedMeasurement,
    RefreshSummary,
    Target,
    evaluate_targets,
    paired_ratios,
    percentile,
    summarize,
    summarize_mixed,
)


def _m(variant: str, round_: int, rps: float, round_trips: int = 0) -> Measurement:
    requests = int(rps * 10)
    wrk = WrkResult(
        requests=requests,
        duration_s=10.0,
        bytes_read=0,
        socket_errors=0,
        non_2xx_3xx=0,
        latency_p50_ms=1.0 * round_,
        latency_p90_ms=2.0,
        latency_p99_ms=3.0 * round_,
        latency_max_ms=4.0,
        latency_mean_ms=1.0,
        distribution_ms={},
    )
    usage = RedisUsage(requests, round_trips * requests, round_trips * requests, {})
    return Measurement(variant, round_, wrk, usage)


ROUNDS = [
    _m("memory", 1, 100), _m("full", 1, 300, 2), _m("slowapi", 1, 90, 3),
    _m("memory", 2, 200), _m("full", 2, 500, 2), _m("slowapi", 2, 200, 3),
    _m("memory", 3, 100), _m("full", 3, 260, 2), _m("slowapi", 3, 100, 3),
]  # fmt: skip


def test_percentile_interpolates() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 95) == pytest.approx(10.5)
    assert math.isnan(percentile([], 50))


def test_paired_ratios_pair_rounds() -> None:
    """Ratios are taken within a round, never across rounds."""
    assert paired_ratios(ROUNDS, "full", "memory") == [3.0, 2.5, 2.6]


def test_summarize_uses_medians_and_paired_ratios() -> None:
    """req/s are medians over rounds; ratios to the in-memory route are paired medians."""
    baseline, full, slowapi = summarize(ROUNDS)
    assert baseline.ratio.median == 1.0
    assert full.rps.median == 300
    assert (full.rps.low, full.rps.high) == (260, 500)
    assert full.ratio.median == 2.6
    assert (full.ratio.low, full.ratio.high) == (2.5, 3.0)
    assert full.p99_ms == 6.0
    assert full.round_trips == 2.0
    assert slowapi.ratio.median == pytest.approx(1.0)
    assert baseline.added_us == 0.0
    # 1/300 - 1/100 s, 1/500 - 1/200 s, 1/260 - 1/100 s -> median -6,153.8 us
    assert full.added_us == pytest.approx(1e6 / 260 - 1e6 / 100)


def test_redis_work_is_exact_when_calibrated_and_absent_without_redis() -> None:
    """The table shows the calibrated count, and "-" (None) for variants that use no Redis."""
    exact = {"full": RedisUsage(100, 100, 300, {})}
    memory, full, slowapi = summarize(ROUNDS, exact=exact)
    assert memory.round_trips is None
    assert full.round_trips == 1.0
    assert full.commands == 3.0
    assert slowapi.round_trips == 3.0  # no exact count: the rounds' median


def test_ratio_to_bare_starlette_is_paired() -> None:
    """x bare Starlette pairs each variant with the Starlette row of its round."""
    rounds = [*ROUNDS, _m("starlette", 1, 1000), _m("starlette", 2, 1000), _m("starlette", 3, 1000)]
    by_key = {s.key: s for s in summarize(rounds)}
    assert by_key["full"].vs_ceiling.median == pytest.approx(0.3)
    assert by_key["starlette"].vs_ceiling.median == 1.0


def _mixed(target: str, round_: int, rps: float, errors: int = 0) -> MixedMeasurement:
    requests = int(rps * 10)
    result = MixedResult(
        requests=requests, duration_s=10.0, socket_errors=errors, latency_p50_ms=2.0,
        latency_p90_ms=3.0, latency_p99_ms=9.0, latency_max_ms=20.0,
        sent={"list": requests // 2, "film": requests // 2}, statuses={"200": requests},
        cache={"HIT": 3, "MISS": 1},
    )  # fmt: skip
    return MixedMeasurement(target, round_, result)


def test_mixed_summary_pairs_after_with_before() -> None:
    """after / before is paired per round; errors and requests add up over rounds."""
    mixed = summarize_mixed(
        [_mixed("after", 1, 500), _mixed("before", 1, 100), _mixed("after", 2, 800, errors=2),
         _mixed("before", 2, 200)]
    )  # fmt: skip
    after, before = mixed
    assert after.ratio.median == pytest.approx(4.5)
    assert after.errors == 2
    assert after.requests == 13_000
    assert after.hit_ratio == 0.75
    assert before.ratio.median == 1.0  # before against itself


def test_targets_met_and_missed_with_margin() -> None:
    """Each issue 12 target is computed from the run, or not measured."""
    refresh = RefreshSummary.of([JobSample(1, 30.0, 20.0, 35.0), JobSample(2, 40.0, 20.0, 42.0)])
    rounds = [*ROUNDS, _m("starlette", 1, 1000), _m("starlette", 2, 1000), _m("starlette", 3, 1000)]
    mixed = summarize_mixed([_mixed("after", 1, 600), _mixed("before", 1, 100)])
    cli = [CliTiming("movieops --help", "after", [120.0, 100.0, 140.0], [0, 0, 0]),
           CliTiming("movieops status", "after", [900.0], [0])]  # fmt: skip
    targets = {t.name: t for t in evaluate_targets(rounds, {"full": 1.0}, refresh, mixed, cli)}
    assert targets["product cached path (full) vs bare Starlette"].measured == pytest.approx(0.3)
    assert targets["product cached path (full) vs bare Starlette"].met is True
    assert targets["Redis round trips per cached GET (full)"].met is True
    assert targets["Redis round trips per cached GET (full)"].margin == "exactly"
    assert targets["un-cached page (baseline) vs before"].met is None
    assert targets["mixed workload throughput, after vs before"].measured == 6.0
    assert targets["mixed workload errors (after)"].met is True
    assert targets["refresh latency beyond the computation (median)"].measured == 15.0
    assert targets["refresh latency beyond the computation (median)"].met is True
    assert targets["CLI `movieops --help` start-up (median)"].measured == 120.0
    assert targets["CLI `movieops status` start-up (median)"].met is False


def test_local_up_targets_read_the_reported_cold_time_and_the_no_op_wall_time() -> None:
    """Cold up: the seconds `up` reports (<= 2 s); a second up on the healthy stack: its whole
    wall time (< 1 s); a failed measurement is not measured, never met."""
    startups = [
        StartupTiming("movieops up --runtime local", "measured", 3.4, 1.6),
        StartupTiming("movieops up --runtime local (already healthy)", "measured", 1.2, 0.01),
    ]
    targets = {t.name: t for t in evaluate_targets([], {}, None, startups=startups)}
    cold = targets["cold local `movieops up`: time to healthy as reported"]
    noop = targets["`movieops up` on a healthy local stack (whole command)"]
    assert (cold.measured, cold.met) == (1.6, True)
    assert (noop.measured, noop.met) == (1.2, False)
    failed = [StartupTiming("movieops up --runtime local", "failed", detail="boom")]
    again = {t.name: t for t in evaluate_targets([], {}, None, startups=failed)}
    assert again["cold local `movieops up`: time to healthy as reported"].met is None


def test_two_round_trips_miss_the_exact_target() -> None:
    """Exactly one round trip: two is a miss, with how far off it is."""
    target = next(t for t in evaluate_targets([], {"full": 2.0}, None) if t.op == "==")
    assert target.met is False
    assert target.margin == "1.00 off"


def test_margin_wording() -> None:
    """The margin says how far, in the target's unit and in percent."""
    assert Target("x", 1.2, 1.5, ">=", "x").margin == "0.30x short of the target (-20%)"
    assert Target("x", 3.0, 2.0, ">=", "x").margin == "1.00x above the target (+50%)"
    assert Target("x", 2.5, 2.0, "<=", "").margin == "0.50 over the target (-25%)"
    assert Target("x", None, 2.0, "<=", "").margin == "not measured"
    assert Target("x", 500.0, 500.0, "<", " ms").met is False


def test_metrics_overhead_is_the_paired_ratio_of_the_cached_get_with_and_without() -> None:
    """full / full_nometrics per round, median: 0.95 is within the 10 % budget, 0.85 is not;
    the report's sentence names the overhead in percent."""
    from bench.report import metrics_overhead

    name = "cached GET with metrics vs without (full / full_nometrics)"
    within = [_m("memory", 1, 100), _m("full", 1, 950), _m("full_nometrics", 1, 1000),
              _m("memory", 2, 100), _m("full", 2, 1900), _m("full_nometrics", 2, 2000)]  # fmt: skip
    targets = evaluate_targets(within, {}, None)
    target = next(t for t in targets if t.name == name)
    assert target.measured == pytest.approx(0.95)
    assert target.met is True
    sentence = metrics_overhead(summarize(within), targets, within)
    assert "overhead of 5.0 %" in sentence
    assert "min 0.950, max 0.950" in sentence
    assert "within the 10% budget" in sentence
    over = [_m("full", 1, 850), _m("full_nometrics", 1, 1000)]
    assert next(t for t in evaluate_targets(over, {}, None) if t.name == name).met is False
    assert metrics_overhead(summarize(ROUNDS), evaluate_targets(ROUNDS, {}, None), ROUNDS) == ""
