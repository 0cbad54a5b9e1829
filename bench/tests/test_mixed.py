"""The mixed workload's wrk output parsing and command line."""

from __future__ import annotations

import math

import pytest

from bench.mixed import SCRIPT, mixed_argv, parse_mixed_output
from bench.procs import BenchError

OUTPUT = """\
Running 3s test @ http://127.0.0.1:40000
  1 threads and 50 connections
  1000 requests in 3.00s, 2.46MB read
MIXED_JSON {"requests": 1000, "duration_us": 2000000, "bytes": 99, "errors": {"connect": 0, \
"read": 1, "write": 0, "status": 2, "timeout": 1}, "latency_us": {"mean": 900.50, "max": 9000, \
"p50": 800, "p90": 2000, "p99": 5000}, "sent": {"film": 450, "list": 452, "rating": 98}, \
"statuses": {"200": 897, "201": 99, "404": 1, "503": 1}, "cache": {"BYPASS": 0, "HIT": 600, \
"MISS": 200, "NONE": 200}}
"""


def test_parse_mixed_output_reads_counts_latency_and_cache() -> None:
    """The MIXED_JSON line gives throughput, latency, kinds, statuses and cache outcomes."""
    result = parse_mixed_output(OUTPUT)
    assert result.rps == 500.0
    assert result.latency_p50_ms == 0.8
    assert result.latency_p99_ms == 5.0
    assert result.sent == {"film": 450, "list": 452, "rating": 98}
    assert result.non_2xx == 2
    assert result.socket_errors == 2
    assert result.errors == 4
    assert result.hit_ratio == 0.75  # HIT over HIT + MISS + BYPASS; POSTs carry no X-Cache


def test_hit_ratio_without_cache_headers_is_nan() -> None:
    """No GET reported X-Cache: the hit ratio is unknown, not zero."""
    result = parse_mixed_output(OUTPUT.replace('"HIT": 600', '"HIT": 0').replace(
        '"MISS": 200', '"MISS": 0'))  # fmt: skip
    assert math.isnan(result.hit_ratio)


def test_parse_mixed_output_without_the_line_fails_clearly() -> None:
    """A run without mixed.lua is an error naming the missing line."""
    with pytest.raises(ValueError, match="MIXED_JSON"):
        parse_mixed_output("Running 1s test @ http://127.0.0.1:1/\n")


def test_mixed_argv_passes_seed_ids_and_write_share_to_the_script() -> None:
    """The script gets the seed, the film ids and the write percentage after ``--``."""
    argv = mixed_argv("wrk", "http://127.0.0.1:5", [3, 1, 2], duration=4, connections=50, seed=9)
    assert argv[argv.index("-s") + 1] == str(SCRIPT)
    assert argv[-4:] == ["--", "9", "3,1,2", "10"]
    assert "-t1" in argv


def test_mixed_argv_refuses_other_hosts_and_empty_catalogs() -> None:
    """Load goes to 127.0.0.1 only, and needs films to pick from."""
    with pytest.raises(BenchError, match=r"127\.0\.0\.1"):
        mixed_argv("wrk", "http://example.com", [1], duration=1, connections=1, seed=1)
    with pytest.raises(BenchError, match="film id"):
        mixed_argv("wrk", "http://127.0.0.1:5", [], duration=1, connections=1, seed=1)
