"""CLI start-up, hyperfine-style: each command run as a process, 1 warm-up then N timed runs,
wall time from fork to exit (median, min, max).

The commands run in a scratch directory with no stack and no ``.env``, so ``status`` reports
an empty project instead of probing someone's running services.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: What is timed: name -> arguments after the entry point.
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("movieops --help", ("--help",)),
    ("movieops status", ("status",)),
    ("movieops status --json", ("--json", "status")),
)
RUN_TIMEOUT_S = 60


@dataclass(frozen=True)
class CliTiming:
    """One command of one tree (``after``/``before``), timed ``len(runs_ms)`` times."""

    name: str
    tree: str
    runs_ms: list[float] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        """Timed at least once (a non-zero exit still counts: ``status`` of no stack may)."""
        return bool(self.runs_ms) and not self.error

    @property
    def median_ms(self) -> float:
        """Median wall time."""
        return statistics.median(self.runs_ms) if self.runs_ms else float("nan")

    @property
    def min_ms(self) -> float:
        """Fastest run."""
        return min(self.runs_ms) if self.runs_ms else float("nan")

    @property
    def max_ms(self) -> float:
        """Slowest run."""
        return max(self.runs_ms) if self.runs_ms else float("nan")


def time_process(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = RUN_TIMEOUT_S
) -> tuple[float, int]:
    """Wall time of one run in milliseconds, and its exit status (output discarded)."""
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - the movieops entry point with fixed arguments
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    return (time.perf_counter() - started) * 1000, done.returncode


def time_cli(
    movieops: Path, tree: str, *, cwd: Path, env: Mapping[str, str], runs: int, warmup: int = 1
) -> list[CliTiming]:
    """Every command of ``COMMANDS`` through the ``movieops`` entry point ``movieops``."""
    timings = []
    for name, args in COMMANDS:
        if not movieops.exists():
            timings.append(CliTiming(name, tree, error=f"{movieops} does not exist"))
            continue
        argv = [str(movieops), *args]
        runs_ms: list[float] = []
        codes: list[int] = []
        try:
            for index in range(warmup + runs):
                elapsed, code = time_process(argv, cwd=cwd, env=env)
                if index >= warmup:
                    runs_ms.append(elapsed)
                    codes.append(code)
        except subprocess.TimeoutExpired:
            timings.append(CliTiming(name, tree, error=f"a run took over {RUN_TIMEOUT_S}s"))
            continue
        timings.append(CliTiming(name, tree, runs_ms, codes))
        print(
            f"cli {tree:<6} {name:<24} median {statistics.median(runs_ms):7.1f} ms "
            f"(min {min(runs_ms):.1f}, max {max(runs_ms):.1f}; exit {sorted(set(codes))})",
            flush=True,
        )
    return timings
