"""The report renders from made-up results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.jobs import JobSample
from bench.report import Results, targets_table, throughput_table, write
from bench.stack import StartupTiming
from bench.summary import RefreshSummary, evaluate_targets, summarize
from bench.tests.test_summary import ROUNDS


def _results() -> Results:
    samples = [JobSample(1, 40.0, 10.0, 45.0), JobSample(2, 30.0, 10.0, 33.0)]
    refresh = RefreshSummary.of(samples)
    return Results(
        command="uv run --group bench python -m bench",
        config={
            "rounds": 3, "duration": 10, "warmup": 1, "connections": 50, "threads": 1,
            "jobs": 2, "calibration_requests": 200, "page_size": 50, "body_bytes": 10359,
            "films": 65, "pinning": "none",
        },
        machine={
            "cpu_model": "Test CPU", "cpu_count": 2, "cpus_usable": 2, "os": "Test OS",
            "python": "3.11", "load_average_at_start": [0.1, 0.1, 0.1],
            "load_average_at_end": [0.2, 0.1, 0.1], "versions": {"wrk": "4.1.0"},
        },
        started_at="2026-01-01T00:00:00+00:00",
        run_seconds=400,
        measurements=list(ROUNDS),
        summaries=summarize(ROUNDS),
        refresh=refresh,
        refresh_samples=samples,
        startups=[StartupTiming("movieops up --runtime local", "measured", 5.0, 3.5)],
        targets=evaluate_targets(ROUNDS, {"full": 2.0}, refresh),
        checks=["a note"],
    )  # fmt: skip


def test_tables_have_a_row_per_variant_and_target() -> None:
    results = _results()
    assert throughput_table(results.summaries).count("\n") == 2 + 3 - 1
    assert "| full cached path vs baseline | 2.60x | >= 1.5x | **met** |" in targets_table(
        results.targets
    )
    assert "| limiter only vs baseline | n/a | >= 0.8x | not measured |" in targets_table(
        results.targets
    )


def test_write_produces_markdown_json_and_chart(tmp_path: Path) -> None:
    """results.md, results.json and the ratio chart (the chart needs the bench group)."""
    pytest.importorskip(
        "matplotlib", reason="the chart needs the bench group (uv sync --group bench)"
    )
    paths = write(_results(), tmp_path)
    assert [p.name for p in paths] == ["results.md", "results.json", "ratios.png"]
    markdown = paths[0].read_text()
    assert "ran 6 min 40 s" in markdown
    assert "## Targets" in markdown
    assert "- a note" in markdown
    data = json.loads(paths[1].read_text())
    assert len(data["rounds"]) == len(ROUNDS)
    assert data["targets"][0]["met"] is True
    assert data["refresh"]["summary"]["overhead_median_ms"] == 25.0
    assert paths[2].read_bytes().startswith(b"\x89PNG")
