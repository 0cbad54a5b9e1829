"""Aggregation and targets."""

from __future__ import annotations

import math

import pytest

from bench.jobs import JobSample
from bench.load import WrkResult
from bench.redisstats import RedisUsage
from bench.summary import (
    Measurement,
    RefreshSummary,
    Target,
    evaluate_targets,
    paired_ratios,
    percentile,
    summarize,
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
    _m("baseline", 1, 100), _m("full", 1, 300, 2), _m("slowapi", 1, 90, 3),
    _m("baseline", 2, 200), _m("full", 2, 500, 2), _m("slowapi", 2, 200, 3),
    _m("baseline", 3, 100), _m("full", 3, 260, 2), _m("slowapi", 3, 100, 3),
]  # fmt: skip


def test_percentile_interpolates() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 95) == pytest.approx(10.5)
    assert math.isnan(percentile([], 50))


def test_paired_ratios_pair_rounds() -> None:
    assert paired_ratios(ROUNDS, "full", "baseline") == [3.0, 2.5, 2.6]


def test_summarize_uses_medians_and_paired_ratios() -> None:
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


def test_targets_met_and_missed_with_margin() -> None:
    refresh = RefreshSummary.of([JobSample(1, 80.0, 20.0, 85.0), JobSample(2, 60.0, 20.0, 62.0)])
    targets = {t.name: t for t in evaluate_targets(ROUNDS, {"full": 2.0}, refresh)}
    assert targets["full cached path vs baseline"].met is True
    assert targets["limiter only vs baseline"].met is None
    assert targets["full path vs slowapi (headers on)"].measured == pytest.approx(2.6)
    assert targets["full path vs slowapi (headers on)"].met is True
    assert targets["Redis round trips, cached GET"].met is True
    overhead = targets["refresh latency beyond the computation (median)"]
    assert overhead.measured == 50.0
    assert overhead.met is True


def test_margin_wording() -> None:
    assert Target("x", 1.2, 1.5, True, "x").margin == "0.30x short of the target (-20%)"
    assert Target("x", 3.0, 2.0, True, "x").margin == "1.00x above the target (+50%)"
    assert Target("x", 2.5, 2.0, False, "").margin == "0.50 over the target (-25%)"
    assert Target("x", None, 2.0, False, "").margin == "not measured"
