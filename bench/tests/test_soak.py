"""The soak summary and its report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.mixed import MixedResult
from bench.soak import RssSample, SoakResults, SoakSlice, SoakSummary, render_markdown, write

MB = 2**20


def _slice(start: float, end: float, requests: int, errors: int = 0) -> SoakSlice:
    result = MixedResult(
        requests=requests, duration_s=end - start, socket_errors=errors, latency_p50_ms=1.0,
        latency_p90_ms=2.0, latency_p99_ms=3.0, latency_max_ms=4.0, sent={"list": requests},
        statuses={"200": requests}, cache={"HIT": 9, "MISS": 1},
    )  # fmt: skip
    return SoakSlice(start, end, result)


SAMPLES = [RssSample(0.0, 80 * MB), RssSample(30.0, 100 * MB), RssSample(60.0, 102 * MB)]
SLICES = [_slice(0, 30, 3000), _slice(30, 60, 3000, errors=1)]


def test_growth_is_measured_from_the_first_sample_after_warm_up() -> None:
    """RSS at 30 s is the reference; the start-up jump before it does not count."""
    summary = SoakSummary.of(SAMPLES, SLICES)
    assert summary.rss_start_mb == 80.0
    assert summary.rss_after_warmup_mb == 100.0
    assert summary.rss_end_mb == 102.0
    assert summary.growth_percent == pytest.approx(2.0)
    assert summary.growth_met is True
    assert summary.requests == 6000
    assert summary.rps == 100.0
    assert summary.errors == 1
    assert summary.errors_met is False
    assert summary.hit_ratio == 0.9
    assert summary.minutes == 1.0


def test_no_samples_means_growth_not_measured() -> None:
    """Without RSS samples the growth target is not measured rather than met."""
    summary = SoakSummary.of([], SLICES)
    assert math.isnan(summary.growth_percent)
    assert summary.growth_met is None


def test_write_produces_markdown_json_and_chart(tmp_path: Path) -> None:
    """soak.md, soak.json and soak.png (the chart needs the bench group)."""
    pytest.importorskip("matplotlib", reason="the chart needs the bench group")
    results = SoakResults("python -m bench soak --minutes 1", "2026-01-01T00:00:00+00:00", 1,
                          api_pid=42, samples=SAMPLES, slices=SLICES)  # fmt: skip
    paths = write(results, tmp_path)
    assert [p.name for p in paths] == ["soak.md", "soak.json", "soak.png"]
    markdown = paths[0].read_text()
    assert "| RSS growth after warm-up | 2.0 % |" in markdown
    assert "| 0 errors | **missed** (1) |" in markdown
    data = json.loads(paths[1].read_text())
    assert data["summary"]["requests"] == 6000
    assert len(data["rss"]) == 3
    assert paths[2].read_bytes().startswith(b"\x89PNG")
    assert render_markdown(results) + "\n" == markdown
