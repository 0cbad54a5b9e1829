"""Soak mode: the mixed workload for N minutes against the local stack, with the API process's
resident memory sampled every 5 s and throughput/errors per 30 s slice.

``uv run --group bench python -m bench soak [--minutes 10]`` starts the stack with the CLI in a
scratch project directory (``movieops up --runtime local``, rate limit raised to its maximum
through the environment), loads it, and always tears it down (``movieops down --volumes --yes``),
also on failure, Ctrl-C or SIGTERM. Writes soak.md, soak.json and soak.png.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.load import find_wrk, wrk_version
from bench.mixed import SEED, MixedResult, catalog_ids, run_mixed
from bench.procs import BenchError, clean_env, free_port, run_command, sigterm_as_interrupt

SAMPLE_EVERY_S = 5.0
SLICE_S = 30
WARMUP_S = 30.0
GROWTH_TARGET_PERCENT = 5.0
CONNECTIONS = 50
UP_TIMEOUT_S = 180


@dataclass(frozen=True)
class RssSample:
    """The API's resident memory at ``seconds`` after the load started."""

    seconds: float
    rss_bytes: int


@dataclass(frozen=True)
class SoakSlice:
    """One wrk run of the soak: when it ran and what it counted."""

    start_s: float
    end_s: float
    result: MixedResult


@dataclass(frozen=True)
class SoakSummary:
    """The whole soak in a few numbers (pure: computed from samples and slices)."""

    minutes: float
    requests: int
    errors: int
    rps: float
    hit_ratio: float
    rss_start_mb: float
    rss_after_warmup_mb: float
    rss_end_mb: float
    growth_percent: float
    slices: int

    @property
    def growth_met(self) -> bool | None:
        """RSS grew less than the target after warm-up (None: not enough samples)."""
        return (
            None
            if math.isnan(self.growth_percent)
            else (self.growth_percent < GROWTH_TARGET_PERCENT)
        )

    @property
    def errors_met(self) -> bool:
        """No error at all."""
        return self.errors == 0

    @classmethod
    def of(
        cls, samples: Sequence[RssSample], slices: Sequence[SoakSlice], warmup_s: float = WARMUP_S
    ) -> SoakSummary:
        """RSS after warm-up: the first sample at or after ``warmup_s`` (the last one when the
        run is shorter); growth: end over that, in percent."""
        mb = 1024 * 1024
        requests = sum(s.result.requests for s in slices)
        seconds = sum(s.result.duration_s for s in slices)
        lookups = sum(s.result.cache_lookups for s in slices)
        hits = sum(s.result.cache.get("HIT", 0) for s in slices)
        if samples:
            warm = next((s for s in samples if s.seconds >= warmup_s), samples[-1])
            start, end = samples[0].rss_bytes / mb, samples[-1].rss_bytes / mb
            after = warm.rss_bytes / mb
            growth = (end - after) / after * 100 if after else math.nan
        else:
            start = after = end = growth = math.nan
        return cls(
            minutes=(slices[-1].end_s / 60) if slices else 0.0,
            requests=requests,
            errors=sum(s.result.errors for s in slices),
            rps=requests / seconds if seconds else 0.0,
            hit_ratio=hits / lookups if lookups else math.nan,
            rss_start_mb=start,
            rss_after_warmup_mb=after,
            rss_end_mb=end,
            growth_percent=growth,
            slices=len(slices),
        )


@dataclass
class SoakResults:
    """Everything one soak produced."""

    command: str
    started_at: str
    minutes: int
    api_pid: int = 0
    samples: list[RssSample] = field(default_factory=list)
    slices: list[SoakSlice] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> SoakSummary:
        """The summary of the samples and slices."""
        return SoakSummary.of(self.samples, self.slices)


def _movieops() -> str:
    candidate = Path(sys.executable).with_name("movieops")
    found = str(candidate) if candidate.exists() else shutil.which("movieops")
    if found is None:
        raise BenchError("the movieops command is not installed (uv sync)")
    return found


def api_process(project: Path, api_port: int) -> psutil.Process:
    """The API process: the ``python -m app`` child of the stack's supervisord (its pid file
    under ``.movieops/``), else whatever listens on the API port."""
    pidfile = project / ".movieops" / "supervisord.pid"
    try:
        supervisor = psutil.Process(int(pidfile.read_text().strip()))
        for child in supervisor.children(recursive=True):
            if child.cmdline()[-2:] == ["-m", "app"]:
                return child
    except (OSError, ValueError, psutil.Error):
        pass
    for conn in psutil.net_connections(kind="tcp"):
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr
        if listening and conn.laddr.port == api_port and conn.pid:
            return psutil.Process(conn.pid)
    raise BenchError(f"could not find the API process (nothing known listens on {api_port})")


def rss_bytes(process: psutil.Process) -> int:
    """Resident memory of the process and its children (uvicorn may fork workers)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return int(total)


class RssSampler(threading.Thread):
    """Samples ``rss_bytes`` every ``SAMPLE_EVERY_S`` seconds from ``started`` on."""

    def __init__(self, process: psutil.Process, started: float) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.started = started
        self.samples: list[RssSample] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        """Sample until stopped (or the process is gone)."""
        while True:
            try:
                rss = rss_bytes(self.process)
            except psutil.Error:
                return
            self.samples.append(RssSample(round(time.monotonic() - self.started, 2), rss))
            if self.stopped.wait(SAMPLE_EVERY_S):
                return


def run_soak(minutes: float, command: str, install_wrk: bool = True) -> SoakResults:
    """Start the local stack, load it for ``minutes``, sample, tear down; return the results."""
    wrk = find_wrk(install_wrk)
    results = SoakResults(
        command=command,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        minutes=int(minutes),
        versions={"wrk": wrk_version(wrk)},
    )
    movieops = _movieops()
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="movieops-soak-") as tmp,
    ):
        project = Path(tmp) / "project"
        project.mkdir()
        api_port = free_port()
        env = clean_env(
            {
                "MOVIE_PORT": str(api_port),
                "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                "MOVIE_RATE_LIMIT_PER_MINUTE": "1000000",  # the maximum; the load is not refused
                "MOVIE_LOG_LEVEL": "WARNING",
            }
        )
        base = [movieops, "--runtime", "local", "--project-dir", str(project)]
        api = f"http://127.0.0.1:{api_port}"
        try:
            print(f"soak: starting the local stack in {project}", flush=True)
            try:
                up = run_command(
                    [*base, "--json", "up", "--timeout", "120"],
                    env=env,
                    cwd=project,
                    timeout=UP_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                raise BenchError(f"the stack was not healthy within {UP_TIMEOUT_S}s") from None
            if up.returncode != 0:
                raise BenchError(f"movieops up failed: {(up.stderr or up.stdout).strip()[-300:]}")
            limit = httpx.get(f"{api}/movies?limit=1", timeout=10).headers.get("x-ratelimit-limit")
            if limit != "1000000":
                raise BenchError(f"the API's rate limit is {limit}, not 1000000 (env ignored?)")
            process = api_process(project, api_port)
            results.api_pid = process.pid
            ids = catalog_ids(api)
            print(
                f"soak: API pid {process.pid}, {len(ids)} films; mixed workload for "
                f"{minutes:g} min in {SLICE_S} s slices",
                flush=True,
            )
            started = time.monotonic()
            sampler = RssSampler(process, started)
            sampler.start()
            try:
                total = minutes * 60
                index = 0
                while (elapsed := time.monotonic() - started) < total - 1:
                    length = min(SLICE_S, total - elapsed)
                    result = run_mixed(
                        wrk, api, ids, duration=length, connections=CONNECTIONS, seed=SEED + index
                    )
                    end = time.monotonic() - started
                    results.slices.append(SoakSlice(round(elapsed, 2), round(end, 2), result))
                    rss = sampler.samples[-1].rss_bytes / 2**20 if sampler.samples else math.nan
                    print(
                        f"soak {end:6.0f} s  {result.rps:8,.0f} req/s  errors {result.errors}  "
                        f"hit {result.hit_ratio:4.0%}  RSS {rss:6.1f} MB",
                        flush=True,
                    )
                    index += 1
            finally:
                sampler.stopped.set()
                sampler.join(10)
                results.samples = list(sampler.samples)
        finally:
            try:
                run_command(
                    [*base, "down", "--volumes", "--yes"], env=env, cwd=project, timeout=120
                )
            except subprocess.TimeoutExpired:
                print("warning: movieops down took over 120s", file=sys.stderr)
    return results


def _num(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def render_markdown(results: SoakResults) -> str:
    """soak.md."""
    s = results.summary
    growth = {True: "**met**", False: "**missed**", None: "not measured"}[s.growth_met]
    errors = "**met**" if s.errors_met else "**missed**"
    return "\n".join(
        [
            "# movieops soak: the mixed workload against the local stack",
            "",
            f"Command: `{results.command}` - started {results.started_at}, "
            f"{s.minutes:.1f} min of load.",
            "",
            "| | |",
            "|---|---:|",
            f"| requests | {s.requests:,} |",
            f"| errors (non-2xx + socket) | {s.errors:,} |",
            f"| throughput (mean) | {s.rps:,.0f} req/s |",
            f"| GET hit ratio | {_num(s.hit_ratio * 100, 0)} % |",
            f"| API RSS at start | {_num(s.rss_start_mb)} MB |",
            f"| API RSS after warm-up ({WARMUP_S:.0f} s) | {_num(s.rss_after_warmup_mb)} MB |",
            f"| API RSS at the end | {_num(s.rss_end_mb)} MB |",
            f"| RSS growth after warm-up | {_num(s.growth_percent)} % |",
            "",
            "| Target | Result |",
            "|---|---|",
            f"| 0 errors | {errors} ({s.errors}) |",
            f"| RSS growth after warm-up < {GROWTH_TARGET_PERCENT:g} % | {growth} "
            f"({_num(s.growth_percent)} %) |",
            "",
            "![API RSS and throughput over time](soak.png)",
            "",
            "## How it was measured",
            "",
            "- `movieops up --runtime local` in a scratch project directory (embedded valkey, "
            "API, worker under supervisord; rate limit 1,000,000/min through "
            "MOVIE_RATE_LIMIT_PER_MINUTE), torn down with `movieops down --volumes --yes` "
            "afterwards.",
            f"- Load: the mixed workload (`bench/mixed.lua`: 90 % GETs over list pages and single "
            f"films, 10 % ratings), `wrk -t1 -c{CONNECTIONS}`, in {SLICE_S} s slices back to back "
            f"({s.slices} slices), each with its own seed.",
            f"- RSS: the API process (pid {results.api_pid}, found through the supervisord pid "
            f"file) and its children, every {SAMPLE_EVERY_S:g} s with psutil. After warm-up: the "
            f"first sample at or after {WARMUP_S:.0f} s; growth = end / after-warm-up - 1.",
            f"- Versions: {', '.join(f'{k} {v}' for k, v in results.versions.items())}.",
            "",
        ]
    )


def to_json(results: SoakResults) -> dict[str, Any]:
    """soak.json: every sample and slice."""
    s = results.summary

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return dict(
        clean(
            {
                "command": results.command,
                "started_at": results.started_at,
                "api_pid": results.api_pid,
                "summary": {
                    **asdict(s),
                    "growth_met": s.growth_met,
                    "errors_met": s.errors_met,
                    "growth_target_percent": GROWTH_TARGET_PERCENT,
                },
                "rss": [asdict(x) for x in results.samples],
                "slices": [
                    {
                        "start_s": x.start_s,
                        "end_s": x.end_s,
                        "rps": round(x.result.rps, 1),
                        "errors": x.result.errors,
                        "hit_ratio": x.result.hit_ratio,
                        "result": asdict(x.result),
                    }
                    for x in results.slices
                ],
                "versions": results.versions,
            }
        )
    )


def render_chart(results: SoakResults, path: Path) -> None:
    """RSS (MB) and per-slice throughput over time, on two axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, rss_axis = plt.subplots(figsize=(9.5, 4.5), dpi=120)
    times = [s.seconds / 60 for s in results.samples]
    rss_axis.plot(times, [s.rss_bytes / 2**20 for s in results.samples], color="#2b6cb0")
    rss_axis.set_xlabel("minutes of load")
    rss_axis.set_ylabel("API RSS (MB)", color="#2b6cb0")
    rss_axis.axvline(WARMUP_S / 60, color="#a0aec0", linestyle="--", linewidth=1)
    rps_axis = rss_axis.twinx()
    if results.slices:
        rps_axis.stairs(
            [x.result.rps for x in results.slices],
            [results.slices[0].start_s / 60, *[x.end_s / 60 for x in results.slices]],
            color="#dd6b20",
        )
    rps_axis.set_ylabel("req/s per slice", color="#dd6b20")
    rps_axis.set_ylim(bottom=0)
    rss_axis.set_title("Soak: mixed workload against the local stack")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results: SoakResults, out_dir: Path) -> list[Path]:
    """soak.md, soak.json and soak.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, raw, chart = out_dir / "soak.md", out_dir / "soak.json", out_dir / "soak.png"
    markdown.write_text(render_markdown(results) + "\n")
    raw.write_text(json.dumps(to_json(results), indent=2) + "\n")
    if results.samples or results.slices:
        render_chart(results, chart)
    return [markdown, raw, chart]


def main(minutes: float, out_dir: Path, command: str, install_wrk: bool) -> int:
    """The ``soak`` subcommand: run, write, print the summary; exit status like the bench's."""
    try:
        results = run_soak(minutes, command, install_wrk)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the stack was taken down", file=sys.stderr)
        return 130
    paths = write(results, out_dir)
    s = results.summary
    print(
        f"soak: {s.requests:,} requests, {s.errors} errors, RSS {_num(s.rss_after_warmup_mb)} -> "
        f"{_num(s.rss_end_mb)} MB ({_num(s.growth_percent)} %); wrote "
        + ", ".join(str(p) for p in paths)
    )
    return 0
