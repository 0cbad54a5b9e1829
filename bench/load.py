"""The load generator: wrk, found (or installed from Debian), run pinned, its report parsed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import BenchError, pin_to

REPORT_SCRIPT = Path(__file__).with_name("wrk_report.lua")
INSTALL_HINT = "install it with: apt-get update && apt-get install -y wrk"
_UNITS_US = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0, "m": 60_000_000.0, "h": 3_600_000_000.0}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(us|ms|s|m|h)\s*$")


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: what it sent, what came back, how long it took."""

    requests: int
    duration_s: float
    bytes_read: int
    socket_errors: int
    non_2xx_3xx: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    latency_mean_ms: float
    distribution_ms: dict[int, float]

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def clean(self) -> bool:
        """No socket error and no response outside 2xx/3xx."""
        return self.socket_errors == 0 and self.non_2xx_3xx == 0


def parse_duration_us(text: str) -> float:
    """wrk's human duration (``812.00us``, ``19.8ms``, ``1.02s``, ``1.5m``) in microseconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_US[match.group(2)]


def parse_latency_distribution(output: str) -> dict[int, float]:
    """The ``--latency`` table of wrk's text report: percentile -> milliseconds."""
    table: dict[int, float] = {}
    in_table = False
    for line in output.splitlines():
        if "Latency Distribution" in line:
            in_table = True
            continue
        if in_table:
            match = re.match(r"^\s*(\d+)%\s+(\S+)\s*$", line)
            if match is None:
                break
            table[int(match.group(1))] = parse_duration_us(match.group(2)) / 1000
    return table


@dataclass(frozen=True)
class WrkCounts:
    """What both Lua reports (wrk_report.lua, mixed.lua) print from wrk's ``done()``."""

    data: dict[str, Any]
    socket_errors: int
    latency_ms: dict[str, float]


def read_report_line(output: str, marker: str, script: str) -> WrkCounts:
    """The ``<marker> {json}`` line a Lua report printed, with its socket errors summed and its
    latencies in milliseconds; ValueError when there is none."""
    match = re.search(rf"^{marker} (\{{.*\}})\s*$", output, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {marker} line in wrk's output (was -s {script} given?)")
    data = json.loads(match.group(1))
    errors = data["errors"]
    socket_errors = int(errors["connect"] + errors["read"] + errors["write"] + errors["timeout"])
    latency = {name: value / 1000 for name, value in data["latency_us"].items()}
    return WrkCounts(data, socket_errors, latency)


def parse_wrk_output(output: str) -> WrkResult:
    """The result of a wrk run from its stdout: the ``WRK_JSON`` line of wrk_report.lua, plus
    the ``--latency`` table of the text report (both come from the same histogram)."""
    counts = read_report_line(output, "WRK_JSON", "wrk_report.lua")
    data, latency = counts.data, counts.latency_ms
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1_000_000,
        bytes_read=int(data["bytes"]),
        socket_errors=counts.socket_errors,
        non_2xx_3xx=int(data["errors"]["status"]),
        latency_p50_ms=latency["p50"],
        latency_p90_ms=latency["p90"],
        latency_p99_ms=latency["p99"],
        latency_max_ms=latency["max"],
        latency_mean_ms=latency["mean"],
        distribution_ms=parse_latency_distribution(output),
    )


def find_wrk(install: bool) -> str:
    """The wrk binary; installed from Debian's archive when missing and allowed (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if not install or apt is None or os.geteuid() != 0:
        raise BenchError(f"wrk is not installed; {INSTALL_HINT}")
    print("wrk is not installed; installing it: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "wrk"]):
        try:
            done = subprocess.run(  # noqa: S603 - apt-get with fixed arguments
                argv, env=env, capture_output=True, text=True, timeout=300, check=False
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"`{' '.join(argv)}` took over 5 minutes; {INSTALL_HINT}") from None
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["failed"]
            raise BenchError(f"`{' '.join(argv)}` failed: {reason[0]}; {INSTALL_HINT}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError(f"wrk is still missing after apt-get; {INSTALL_HINT}")
    return found


def wrk_version(wrk: str) -> str:
    """wrk's version line (``wrk -v`` prints it and exits 1)."""
    done = subprocess.run(  # noqa: S603 - the wrk binary found above
        [wrk, "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    text = (done.stdout + done.stderr).strip()
    first = text.splitlines()[0] if text else "unknown"
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer" -> "debian/4.1.0-3+b2"
    return first.removeprefix("wrk ").split(" [", 1)[0]


def run_wrk(
    wrk: str,
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    cpu: int | None = None,
) -> tuple[WrkResult, str]:
    """Load ``url`` for ``duration`` seconds; return the parsed result and wrk's raw report."""
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing to load anything but 127.0.0.1: {url}")
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(REPORT_SCRIPT),
        url,
    ]
    done = run_wrk_process(argv, duration=duration, cpu=cpu)
    return parse_wrk_output(done.stdout), done.stdout


def run_wrk_process(
    argv: list[str], *, duration: float, cpu: int | None
) -> subprocess.CompletedProcess[str]:
    """Run a wrk command line (pinned to ``cpu``); BenchError when it hangs or fails."""
    try:
        done = subprocess.run(  # noqa: S603 - the wrk binary with our arguments
            argv,
            capture_output=True,
            text=True,
            timeout=duration + 30,
            check=False,
            preexec_fn=pin_to(cpu),  # only sets the CPU affinity before exec
            start_new_session=True,  # Ctrl-C is ours to handle: wrk is stopped by subprocess.run
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish {duration:.0f}s of load within 30s extra") from None
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return done
