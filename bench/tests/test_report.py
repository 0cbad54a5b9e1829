"""The report renders from made-up results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.before import BeforeStatus
from bench.clitime import CliTiming
from bench.jobs import JobSample
from bench.report import Results, cli_table, mixed_table, targets_table, throughput_table, write
from bench.stack import StartupTiming
from bench.summary import RefreshSummary, evaluate_targets, summarize, summarize_mixed
from bench.tests.test_summary import ROUNDS, _mixed

MIXED = [_mixed("after", 1, 500), _mixed("before", 1, 100)]
CLI = [
    CliTiming("movieops --help", "after", [100.0, 120.0], [0, 0]),
    CliTiming("movieops --help", "before", [2000.0, 2400.0], [0, 0]),
    CliTiming("movieops status", "after", error="a run took over 60s"),
]


def _results() -> Results:
    samples = [JobSample(1, 40.0, 10.0, 45.0), JobSample(2, 30.0, 10.0, 33.0)]
    refresh = RefreshSummary.of(samples)
    return Results(
        command="uv run --group bench python -m bench",
        config={
            "rounds": 3, "duration": 10, "warmup": 1, "connections": 50, "threads": 1,
            "jobs": 2, "calibration_requests": 200, "page_size": 50, "body_bytes": 10359,
            "films": 65, "pinning": "none", "cli_runs": 2, "mixed_write_percent": 10,
            "before_rev": "27deb58240a712540ad1558b70a9decb1a2af241",
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
        targets=evaluate_targets(ROUNDS, {"full": 1.0}, refresh, summarize_mixed(MIXED), CLI),
        checks=["a note"],
        mixed_measurements=MIXED,
        mixed=summarize_mixed(MIXED),
        cli=CLI,
        before=BeforeStatus(None, "27deb58240a712540ad1558b70a9decb1a2af241", "uv is missing"),
    )  # fmt: skip


def test_tables_have_a_row_per_variant_and_target() -> None:
    """One row per measured variant; each target says met, missed or not measured."""
    results = _results()
    table = throughput_table(results.summaries)
    assert table.count("\n") == 2 + 3 - 1
    assert (
        "| in-memory FastAPI (response_model) | 100 (100-200) | 1.00 (1.00-1.00) | n/a |" in table
    )
    assert "| - | - |" in table  # the in-memory route uses no Redis
    targets = targets_table(results.targets)
    assert (
        "| Redis round trips per cached GET (full) | 1.00 | == 1 | **met** | exactly |" in targets
    )
    assert "| un-cached page (baseline) vs before | n/a | >= 5x | not measured |" in targets


def test_mixed_and_cli_tables() -> None:
    """Mixed: after with its ratio to before; CLI: medians, after/before, failures shown."""
    mixed = mixed_table(summarize_mixed(MIXED))
    assert "| after | 500 (500-500) | 5.00 (5.00-5.00) | 2.0 | 9.0 | 75% | 5,000 | 0 |" in mixed
    cli = cli_table(CLI)
    assert "| `movieops --help` | after | 110 | 100 | 120 | 2 | 0 | 0.05 |" in cli
    assert "| `movieops status` | after | n/a | | | 0 | a run took over 60s | |" in cli


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
    assert "Before variants skipped: uv is missing." in markdown
    assert "### What limits it next" in markdown
    data = json.loads(paths[1].read_text())
    assert len(data["rounds"]) == len(ROUNDS)
    assert data["targets"][0]["met"] is None  # no Starlette row in these rounds
    assert data["mixed"]["summary"][0]["target"] == "after"
    assert data["cli"][0]["median_ms"] == 110.0
    assert data["before"] == {
        "rev": "27deb58240a712540ad1558b70a9decb1a2af241",
        "used": False,
        "reason": "uv is missing",
    }
    assert data["refresh"]["summary"]["overhead_median_ms"] == 25.0
    assert paths[2].read_bytes().startswith(b"\x89PNG")
