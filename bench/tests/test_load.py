"""wrk report parsing."""

from __future__ import annotations

import pytest

from bench.load import parse_duration_us, parse_latency_distribution, parse_wrk_output

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:17301/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.35ms    1.41ms  10.97ms   86.30%
    Req/Sec     1.59k   200.78     1.95k    80.00%
  Latency Distribution
     50%  806.00us
     75%    1.36ms
     90%    3.29ms
     99%    6.88ms
  1585 requests in 1.00s, 2.46MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   1583.84
Transfer/sec:      2.46MB
WRK_JSON {"requests": 1585, "duration_us": 1000735, "bytes": 2580380, "errors": {"connect": 1, \
"read": 2, "write": 0, "status": 3, "timeout": 4}, "latency_us": {"min": 307, "mean": 1353.36, \
"stdev": 1407.39, "max": 10973, "p50": 806, "p90": 3292, "p99": 6878, "p999": 9710}}
"""


def test_parse_wrk_output_reads_the_json_line() -> None:
    result = parse_wrk_output(WRK_OUTPUT)
    assert result.requests == 1585
    assert result.duration_s == pytest.approx(1.000735)
    assert result.rps == pytest.approx(1585 / 1.000735)
    assert result.latency_p50_ms == pytest.approx(0.806)
    assert result.latency_p99_ms == pytest.approx(6.878)
    assert result.socket_errors == 7
    assert result.non_2xx_3xx == 3
    assert not result.clean


def test_parse_wrk_output_keeps_the_text_distribution() -> None:
    result = parse_wrk_output(WRK_OUTPUT)
    assert result.distribution_ms == {50: 0.806, 75: 1.36, 90: 3.29, 99: 6.88}


def test_parse_wrk_output_without_the_script_line_fails_clearly() -> None:
    with pytest.raises(ValueError, match="WRK_JSON"):
        parse_wrk_output("Running 1s test @ http://127.0.0.1:1/\n")


@pytest.mark.parametrize(
    ("text", "micros"),
    [("806.00us", 806.0), ("1.36ms", 1360.0), ("2s", 2_000_000.0), ("1.5m", 90_000_000.0)],
)
def test_parse_duration_us(text: str, micros: float) -> None:
    assert parse_duration_us(text) == pytest.approx(micros)


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a wrk duration"):
        parse_duration_us("fast")


def test_distribution_absent_without_latency_flag() -> None:
    assert parse_latency_distribution("  1585 requests in 1.00s, 2.46MB read\n") == {}
