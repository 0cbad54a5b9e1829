"""Writing the results: results.md (tables, targets, machine), results.json (every raw number)
and ratios.png (req/s relative to the baseline, min-max over rounds)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.before import BeforeStatus
from bench.clitime import CliTiming
from bench.jobs import JobSample
from bench.redisstats import RedisUsage
from bench.stack import StartupTiming
from bench.summary import (
    BASELINE,
    METRICS_MIN_RATIO,
    METRICS_PAIR,
    VARIANTS,
    Measurement,
    MixedMeasurement,
    MixedSummary,
    RefreshSummary,
    Spread,
    Target,
    VariantSummary,
    paired_ratios,
)

MARKDOWN = "results.md"
JSON = "results.json"
CHART = "ratios.png"


@dataclass
class Results:
    """Everything one run produced."""

    command: str
    config: dict[str, Any]
    machine: dict[str, Any]
    started_at: str
    run_seconds: float = 0.0
    measurements: list[Measurement] = field(default_factory=list)
    summaries: list[VariantSummary] = field(default_factory=list)
    exact_redis: dict[str, RedisUsage] = field(default_factory=dict)
    refresh: RefreshSummary | None = None
    refresh_samples: list[JobSample] = field(default_factory=list)
    refresh_error: str | None = None
    startups: list[StartupTiming] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    mixed_measurements: list[MixedMeasurement] = field(default_factory=list)
    mixed: list[MixedSummary] = field(default_factory=list)
    cli: list[CliTiming] = field(default_factory=list)
    before: BeforeStatus | None = None


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _spread(median: float, low: float, high: float, digits: int = 2) -> str:
    if math.isnan(median):
        return "n/a"
    return f"{median:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


def _redis(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def throughput_table(summaries: Sequence[VariantSummary]) -> str:
    """The main table, as Markdown."""
    lines = [
        "| Variant | req/s median (min-max) | x in-memory FastAPI (min-max) "
        "| x bare Starlette | p50 ms | p99 ms | server us/req vs in-memory "
        "| Redis round trips/req | Redis cmds/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        flag = "" if s.clean else " (errors!)"
        lines.append(
            f"| {s.label}{flag} "
            f"| {_spread(s.rps.median, s.rps.low, s.rps.high, 0)} "
            f"| {_spread(s.ratio.median, s.ratio.low, s.ratio.high)} "
            f"| {_num(s.vs_ceiling.median)} "
            f"| {s.p50_ms:.1f} | {s.p99_ms:.1f} | {s.added_us:+,.0f} "
            f"| {_redis(s.round_trips)} | {_redis(s.commands)} |"
        )
    return "\n".join(lines)


def mixed_table(mixed: Sequence[MixedSummary]) -> str:
    """The mixed workload, after and before."""
    lines = [
        "| Tree | req/s median (min-max) | x before (min-max) | p50 ms | p99 ms | GET hit ratio "
        "| requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in mixed:
        lines.append(
            f"| {m.target} | {_spread(m.rps.median, m.rps.low, m.rps.high, 0)} "
            f"| {_spread(m.ratio.median, m.ratio.low, m.ratio.high)} "
            f"| {m.p50_ms:.1f} | {m.p99_ms:.1f} | {_percent(m.hit_ratio)} "
            f"| {m.requests:,} | {m.errors:,} |"
        )
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0%}"


def cli_table(timings: Sequence[CliTiming]) -> str:
    """CLI start-up per command and tree, with after/before ratios."""
    before = {t.name: t for t in timings if t.tree == "before" and t.ok}
    lines = [
        "| Command | Tree | median ms | min ms | max ms | runs | exit status | after / before |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for t in timings:
        if not t.ok:
            lines.append(f"| `{t.name}` | {t.tree} | n/a | | | 0 | {t.error} | |")
            continue
        ratio = ""
        if t.tree == "after" and t.name in before and before[t.name].median_ms > 0:
            ratio = f"{t.median_ms / before[t.name].median_ms:.2f}"
        codes = ", ".join(str(c) for c in sorted(set(t.exit_codes)))
        lines.append(
            f"| `{t.name}` | {t.tree} | {t.median_ms:,.0f} | {t.min_ms:,.0f} | {t.max_ms:,.0f} "
            f"| {len(t.runs_ms)} | {codes} | {ratio} |"
        )
    return "\n".join(lines)


def _measured(target: Target) -> str:
    value = _num(target.measured)
    return value if value == "n/a" else f"{value}{target.unit}"


def metrics_overhead(
    summaries: Sequence[VariantSummary],
    targets: Sequence[Target],
    measurements: Sequence[Measurement],
) -> str:
    """One sentence on what the metrics cost the cached GET, when both sides were measured."""
    by_key = {s.key: s for s in summaries}
    on, off = (by_key.get(key) for key in METRICS_PAIR)
    target = next((t for t in targets if t.threshold == METRICS_MIN_RATIO), None)
    if on is None or off is None or target is None or target.measured is None:
        return ""
    on_vs_off = Spread.of(paired_ratios(measurements, *METRICS_PAIR))
    ratio = target.measured
    verdict = {True: "within", False: "over", None: "unknown against"}[target.met]
    return (
        f"Metrics on the cached GET: median {on.rps.median:,.0f} req/s with, "
        f"{off.rps.median:,.0f} without; paired ratio with/without {ratio:.3f} (median of the "
        f"rounds' ratios, min {on_vs_off.low:.3f}, max {on_vs_off.high:.3f}): an overhead of "
        f"{(1 - ratio) * 100:.1f} % of throughput, {verdict} the "
        f"{1 - METRICS_MIN_RATIO:.0%} budget."
    )


def targets_table(targets: Sequence[Target]) -> str:
    """Targets, met or missed, with the margin."""
    lines = [
        "| Target | Measured | Needed | Result | Margin | Where the figure comes from |",
        "|---|---:|---:|---|---|---|",
    ]
    for t in targets:
        result = {True: "**met**", False: "**missed**", None: "not measured"}[t.met]
        needed = f"{t.op} {t.threshold:g}{t.unit}"
        lines.append(
            f"| {t.name} | {_measured(t)} | {needed} | {result} | {t.margin} | {t.source} |"
        )
    return "\n".join(lines)


def _reading_section(results: Results) -> list[str]:
    """What the tables say, in numbers taken from them, and what is left for the lead."""
    by_key = {s.key: s for s in results.summaries}
    out = ["## Reading the numbers", ""]
    memory, ceiling = by_key.get(BASELINE), by_key.get("starlette")
    if memory:
        out.append(
            f"- The baseline (1.00) is FastAPI serving the same 50 films from memory with "
            f"`response_model`: {memory.rps.median:,.0f} req/s, about "
            f"{1e6 / memory.rps.median:,.0f} us of server time per request (1 / req/s of one "
            "saturated worker); every other row is paired with it round by round."
        )
    if ceiling:
        out.append(
            f"- Bare Starlette returning stored bytes is the framework ceiling: "
            f"{ceiling.rps.median:,.0f} req/s ({1e6 / ceiling.rps.median:,.0f} us/request)."
        )
    for key, what in (
        ("full", "A product cache hit"),
        ("baseline", "An un-cached product page"),
        ("before_uncached", "The un-cached page before this work"),
    ):
        row = by_key.get(key)
        if row:
            trips = "" if row.round_trips is None else f", {row.round_trips:.2f} Redis round trips"
            out.append(
                f"- {what}: {1e6 / row.rps.median:,.0f} us/request "
                f"({row.ratio.median:.2f}x in-memory FastAPI{trips})."
            )
    limiters = [
        f"{by_key[k].label} {by_key[k].ratio.median:.2f}x"
        for k in ("memory_fastapi_limiter", "memory_slowapi")
        if k in by_key
    ]
    if limiters:
        out.append("- Limiters guarding the in-memory route: " + "; ".join(limiters) + ".")
    after = next((m for m in results.mixed if m.target == "after"), None)
    if after:
        out.append(
            f"- Mixed workload (after): {after.rps.median:,.0f} req/s, p50 {after.p50_ms:.1f} ms, "
            f"GET hit ratio {_percent(after.hit_ratio)}, {after.errors} errors."
        )
    out += [
        "",
        "### What limits it next",
        "",
        "From profiles of each path (py-spy and cProfile of the server during these loads):",
        "",
        "- **cached GET**: one EVALSHA on the API's pipelined Redis connection (about 10 us of "
        "Python per call; valkey runs the script on the other core) plus the pure-ASGI layers in "
        "front of it (body limit, client identity, access log, the limiter's front), all inside "
        "Starlette's and FastAPI's own outer layers (ServerErrorMiddleware, FastAPI's telemetry "
        "wrapper and body limit). Next: answer hits from a layer outside the framework's stack, "
        "or a second worker process per core pair.",
        "- **un-cached page**: one SQL statement and one JSON encode are now small; what is left "
        "is fixed cost: SQLAlchemy's session and aiosqlite's hand-offs to its worker thread "
        "(begin, execute, fetch, rollback: about 0.6 ms a request on this machine), then "
        "FastAPI's routing, dependency injection and query validation. Next: a read path "
        "without the thread hand-offs (or PostgreSQL with asyncpg).",
        "- **mixed workload**: with 10 % ratings every rating misses the pages that show that film "
        "(50 of the 65 films for `?limit=50`), so about half the GETs miss and the throughput is "
        "set by the un-cached page and the rating path (a SQLite write transaction of two "
        "statements, body validation, two Redis calls: about 2.5 ms). Next: page bodies "
        "assembled from per-film fragments in Redis, so a rating re-reads one film, not a page.",
        "- **CLI start-up**: the interpreter, Typer/Click and Rich (help rendering loads Rich's "
        "Markdown and syntax modules); `status` also loads pydantic for its settings. The API's "
        "own database layer and FastAPI are no longer imported (a test keeps it so).",
        "",
    ]
    return out


def _before_section(results: Results) -> list[str]:
    before = results.before
    if before is None:
        return []
    if before.tree is None:
        text = f"Before variants skipped: {before.reason}."
    else:
        text = (
            f"`before` is commit `{before.rev}` (the last commit before issue 12), checked out "
            "in a throw-away `git worktree` with its own venv (`uv sync --frozen --group bench`): "
            "`before_uncached` is its `bench.variants:baseline`, the mixed workload's `before` its "
            "`app.main:app`, the CLI's `before` its `movieops` entry point. Same machine, same "
            "rounds, same Redis and settings as `after` (this tree)."
        )
    return ["## Before and after", "", text, ""]


def _mixed_section(results: Results) -> list[str]:
    out = ["## Mixed workload: 90 % reads, 10 % ratings", ""]
    if not results.mixed:
        return [*out, "Not measured.", ""]
    c = results.config
    kinds = ", ".join(
        f"{m.target}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(m.sent.items()))
        for m in results.mixed
    )
    return [
        *out,
        mixed_table(results.mixed),
        "",
        f"`wrk -t1 -c{c['connections']}` with `bench/mixed.lua`, {c['rounds']} rounds of "
        f"{c['duration']} s (after a {c['warmup']} s warm-up), in the same rounds as the table "
        "above. Each request is drawn from a seeded RNG: "
        f"{100 - c.get('mixed_write_percent', 10)} % GETs, half over a fixed set of list pages "
        "(`?limit=50`, `?limit=20&offset=20`, `?genre=Drama` ...), half over single films "
        f"(`/movies/{{id}}`, every id of the catalog); {c.get('mixed_write_percent', 10)} % "
        "`POST /movies/{id}/ratings` with a random user (1-5000) and half-step score. The product "
        "runs as shipped (`uvicorn app.main:app`, seeded demo catalog with ratings, rate limit "
        "1,000,000/min, its own SQLite file and Redis database). Errors: every non-2xx response "
        "and every socket error. Hit ratio: X-Cache HIT over GET responses carrying X-Cache. "
        f"Requests sent by kind: {kinds}.",
        "",
    ]


def _cli_section(results: Results) -> list[str]:
    out = ["## CLI start-up", ""]
    if not results.cli:
        return [*out, "Not measured.", ""]
    return [
        *out,
        cli_table(results.cli),
        "",
        f"Each command is a process (the venv's `movieops` entry point) in an empty scratch "
        f"directory with no stack and no MOVIE_* settings: 1 warm-up, then "
        f"{results.config.get('cli_runs', 10)} timed runs, wall time from start to exit "
        "(hyperfine-style). `status` with no stack may exit non-zero: that is still its answer.",
        "",
    ]


def _refresh_section(results: Results) -> list[str]:
    out = ["## Background job: refresh enqueue -> complete", ""]
    if results.refresh is None:
        out += [f"Not measured: {results.refresh_error or 'skipped'}.", ""]
        return out
    r = results.refresh
    out += [
        f"{r.jobs} `refresh_recommendations` jobs, one at a time, queued with "
        "`app.jobs.trigger_refresh` and read back with `app.jobs.describe_job`; a real worker "
        "(`python -m app.worker` as shipped: the default `MOVIE_WORKER_POLL_DELAY_MS`, woken "
        "on enqueue) on the same Redis and database. Latency is arq's "
        "`finish_time - enqueue_time`.",
        "",
        "| | median | p95 |",
        "|---|---:|---:|",
        f"| enqueue -> complete | {r.latency_median_ms:.1f} ms | {r.latency_p95_ms:.1f} ms |",
        f"| of which computation (`duration_ms`) | {r.computation_median_ms:.1f} ms | |",
        f"| latency beyond the computation | {r.overhead_median_ms:.1f} ms "
        f"| {r.overhead_p95_ms:.1f} ms |",
        f"| seen by the client (polling every 5 ms) | {r.observed_median_ms:.1f} ms | |",
        "",
    ]
    return out


def _startup_section(startups: Sequence[StartupTiming]) -> list[str]:
    out = [
        "## Time to healthy",
        "",
        "| Command | Result | Wall time | Reported by movieops |",
        "|---|---|---:|---:|",
    ]
    for s in startups:
        wall = f"{s.seconds:.1f} s" if s.seconds is not None else ""
        reported = f"{s.reported_seconds:.1f} s" if s.reported_seconds is not None else ""
        result = s.status + (f": {s.detail}" if s.detail else "")
        out.append(f"| `{s.name}` | {result} | {wall} | {reported} |")
    out += [
        "",
        "Wall time: the command until it returns with every service healthy. Each run gets free "
        "ports (and Compose its own project and subnet, with the existing `movieops-app:local` "
        "image: start-up, not build) and is torn down with its volumes afterwards.",
        "",
    ]
    return out


def _machine_section(results: Results) -> list[str]:
    m = results.machine
    config = results.config
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    out = [
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpus_usable']} usable)",
        f"- OS: {m['os']}; Python {m['python']}",
        f"- Pinning: {config['pinning']}",
        f"- Load average (1/5/15 min) at start {m['load_average_at_start']}, "
        f"at end {m.get('load_average_at_end', 'n/a')}",
        f"- Versions: {versions}",
        "",
    ]
    if m["load_average_at_start"][0] > 0.5:
        out += [
            "Other processes were busy on this machine during the run (see the load averages; "
            "per-round values are in results.json). Rounds alternate the variants, so the noise "
            "hits them alike, but absolute numbers and min-max spreads are wider than on an "
            "idle machine.",
            "",
        ]
    return out


def _method_section(results: Results) -> list[str]:
    c = results.config
    return [
        "## How it was measured",
        "",
        f"- Every variant is a uvicorn server with one worker process serving "
        f"`GET /movies?limit={c['page_size']}` (the same {c['body_bytes']}-byte page of the "
        "65-film seeded catalog, from one SQLite file) against one embedded valkey-server. All "
        "servers run for the whole benchmark; measurements go round-robin "
        f"(all variants, then all again), {c['rounds']} rounds of {c['duration']} s each after "
        f"a {c['warmup']} s warm-up, with `wrk -t{c['threads']} -c{c['connections']} --latency`.",
        "- Limits are set so no request is refused (product: 1,000,000/min, its maximum; "
        "libraries: 10^9/min). "
        + (
            "wrk counted no socket error and no non-2xx/3xx response in any round."
            if all(m.wrk.clean for m in results.measurements)
            else "SOME ROUNDS HAD ERRORS (marked in the table; counts in results.json)."
        ),
        "- `x in-memory FastAPI` (the baseline, 1.00) and `x bare Starlette` are medians of "
        "per-round ratios (each variant against the reference of the same round); min-max over "
        "rounds. req/s, p50 and p99 are per round, then median.",
        "- Redis round trips/req and cmds/req in the table are exact: "
        f"{c['calibration_requests']} sequential requests per Redis-using variant after the "
        "rounds (nothing in flight when the counters are read): the server's "
        "`total_reads_processed` delta (EVALSHA is one round trip; a script's inner calls add "
        "none) and `INFO commandstats` calls (which also count every `redis.call()` inside Lua "
        "scripts), each divided by the requests. `-`: the variant uses no Redis. Per-round "
        "figures under load (results.json, `rounds[].redis`, and the RT/req printed while it "
        "runs) count the server's reads, not calls: the product pipelines the script calls of "
        "concurrent requests on one connection, so many requests share one read and the "
        "figure falls below 1 while each request still makes its one call.",
        "- The product variants are `app.main.create_app` itself: the un-cached baseline drops "
        "the `RateLimitMiddleware` and turns the response cache off (`cache_enabled=False`); "
        "the library "
        "variants on the product route apply the library to `app.routes.movies.list_movies`. The "
        "in-memory variants are a plain `FastAPI()` with one `GET /movies` route declared with "
        "`response_model=MoviePage` returning a page built at start-up (FastAPI validates and "
        "serialises it per request); the libraries guard that route. See bench/variants.py.",
        "",
    ]


def _overhead_section(results: Results) -> list[str]:
    sentence = metrics_overhead(results.summaries, results.targets, results.measurements)
    return ["## Metrics overhead", "", sentence, ""] if sentence else []


def render_markdown(results: Results) -> str:
    """The whole report."""
    minutes, seconds = divmod(round(results.run_seconds), 60)
    c = results.config
    lines = [
        "# movieops benchmark: the product against an in-memory FastAPI route, before and after",
        "",
        f"Command: `{results.command}` - started {results.started_at}, "
        f"ran {minutes} min {seconds} s.",
        "",
        f"## Throughput: `GET /movies?limit={c['page_size']}`",
        "",
        throughput_table(results.summaries),
        "",
        f"![req/s relative to the in-memory FastAPI route]({CHART})",
        "",
        "## Targets",
        "",
        targets_table(results.targets),
        "",
        *_overhead_section(results),
        *_mixed_section(results),
        *_cli_section(results),
        *_reading_section(results),
        *_before_section(results),
        *_refresh_section(results),
        *_startup_section(results.startups),
        *_machine_section(results),
        *_method_section(results),
    ]
    if results.checks:
        lines += ["## Checks and notes", "", *[f"- {note}" for note in results.checks], ""]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def to_json(results: Results) -> dict[str, Any]:
    """Every number of the run, raw per round included."""
    data = {
        "command": results.command,
        "started_at": results.started_at,
        "run_seconds": round(results.run_seconds, 1),
        "config": results.config,
        "machine": results.machine,
        "variants": [
            {"key": v.key, "label": v.label, "description": v.description, "tree": v.tree}
            for v in VARIANTS
        ],
        "rounds": [
            {
                "variant": m.variant,
                "round": m.round,
                "rps": round(m.wrk.rps, 1),
                "load_average_1min": m.load_average,
                "wrk": asdict(m.wrk),
                "redis": {
                    **asdict(m.redis),
                    "round_trips_per_request": round(m.redis.round_trips_per_request, 4),
                    "commands_per_request": round(m.redis.commands_per_request, 4),
                },
            }
            for m in results.measurements
        ],
        "summary": [asdict(s) for s in results.summaries],
        "redis_exact": {
            key: {
                **asdict(usage),
                "round_trips_per_request": round(usage.round_trips_per_request, 4),
                "commands_per_request": round(usage.commands_per_request, 4),
            }
            for key, usage in results.exact_redis.items()
        },
        "refresh": {
            "summary": asdict(results.refresh) if results.refresh else None,
            "jobs": [{**asdict(s), "overhead_ms": s.overhead_ms} for s in results.refresh_samples],
            "error": results.refresh_error,
        },
        "startup": [asdict(s) for s in results.startups],
        "mixed": {
            "rounds": [
                {
                    "target": m.target,
                    "round": m.round,
                    "rps": round(m.result.rps, 1),
                    "hit_ratio": m.result.hit_ratio,
                    "errors": m.result.errors,
                    "load_average_1min": m.load_average,
                    "result": asdict(m.result),
                }
                for m in results.mixed_measurements
            ],
            "summary": [asdict(m) for m in results.mixed],
        },
        "cli": [
            {**asdict(t), "median_ms": t.median_ms, "min_ms": t.min_ms, "max_ms": t.max_ms}
            for t in results.cli
        ],
        "before": (
            {
                "rev": results.before.rev,
                "used": results.before.tree is not None,
                "reason": results.before.reason,
            }
            if results.before
            else None
        ),
        "targets": [{**asdict(t), "met": t.met, "margin": t.margin} for t in results.targets],
        "checks": results.checks,
    }
    return dict(_jsonable(data))


def render_chart(summaries: Sequence[VariantSummary], path: Path) -> None:
    """Horizontal bars: median ratio to the baseline, whiskers min-max over rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = list(reversed(summaries))
    rows = [s for s in rows if not math.isnan(s.ratio.median)]
    labels = [s.label for s in rows]
    medians = [s.ratio.median for s in rows]
    errors = [
        [s.ratio.median - s.ratio.low for s in rows],
        [s.ratio.high - s.ratio.median for s in rows],
    ]
    product = {"baseline", "limiter", "full", "full_nometrics"}
    reference = {"memory", "starlette"}
    colors = [
        "#2b6cb0" if s.key in product
        else "#718096" if s.key == "before_uncached"
        else "#a0aec0" if s.key in reference
        else "#dd6b20"
        for s in rows
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 5.6), dpi=120)
    highest = max(s.ratio.high for s in rows)
    lowest = min(s.ratio.low for s in rows)
    # A log axis keeps 0.02x, 0.3x and a 3x framework ceiling all readable.
    log = highest / max(lowest, 1e-9) > 8
    left = lowest * 0.5 if log else 0.0
    bars = ax.barh(
        labels,
        [m - left for m in medians],
        left=left,
        xerr=errors,
        color=colors,
        capsize=4,
        ecolor="#2d3748",
    )
    ax.axvline(1.0, color="#2d3748", linestyle="--", linewidth=1)
    for bar, s in zip(bars, rows, strict=True):
        ax.text(
            max(s.ratio.high, 1.0) * (1.12 if log else 1.0) + (0 if log else 0.04),
            bar.get_y() + bar.get_height() / 2,
            f"{s.ratio.median:.2f}x  ({s.rps.median:,.0f} req/s)",
            va="center",
            fontsize=9,
        )
    if log:
        ax.set_xscale("log")
        ax.set_xlim(left, highest * 6)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}x"))
    else:
        ax.set_xlim(0, highest * 1.35)
    scale = ", log scale" if log else ""
    ax.set_xlabel(
        f"req/s relative to FastAPI serving the page from memory{scale}\n"
        "bar: median over rounds; whiskers: min-max"
    )
    ax.set_title("GET /movies?limit=50: one uvicorn worker pinned to one CPU, wrk on the other")
    ax.legend(
        handles=[
            matplotlib.patches.Patch(color="#2b6cb0", label="the product (after)"),
            matplotlib.patches.Patch(color="#718096", label="the product before"),
            matplotlib.patches.Patch(color="#dd6b20", label="other limiters"),
            matplotlib.patches.Patch(color="#a0aec0", label="references (in-memory, Starlette)"),
        ],
        loc="upper right",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results: Results, out_dir: Path) -> list[Path]:
    """Write the three result files; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, raw, chart = out_dir / MARKDOWN, out_dir / JSON, out_dir / CHART
    markdown.write_text(render_markdown(results) + "\n")
    raw.write_text(json.dumps(to_json(results), indent=2) + "\n")
    if results.summaries:
        render_chart(results.summaries, chart)
    return [markdown, raw, chart]
