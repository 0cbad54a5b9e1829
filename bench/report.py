"""Writing the results: results.md (tables, targets, machine), results.json (every raw number)
and ratios.png (req/s relative to the baseline, min-max over rounds)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.jobs import JobSample
from bench.redisstats import RedisUsage
from bench.stack import StartupTiming
from bench.summary import (
    VARIANTS,
    Measurement,
    RefreshSummary,
    Target,
    VariantSummary,
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


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def throughput_table(summaries: Sequence[VariantSummary]) -> str:
    """The main table, as Markdown."""
    lines = [
        "| Variant | req/s median (min-max) | x baseline (min-max) | p50 ms | p99 ms "
        "| server us/req vs baseline | Redis round trips/req | Redis cmds/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        flag = "" if s.clean else " (errors!)"
        lines.append(
            f"| {s.label}{flag} "
            f"| {s.rps.median:,.0f} ({s.rps.low:,.0f}-{s.rps.high:,.0f}) "
            f"| {s.ratio.median:.2f} ({s.ratio.low:.2f}-{s.ratio.high:.2f}) "
            f"| {s.p50_ms:.1f} | {s.p99_ms:.1f} | {s.added_us:+,.0f} "
            f"| {s.round_trips:.2f} | {s.commands:.2f} |"
        )
    return "\n".join(lines)


def _measured(target: Target) -> str:
    value = _num(target.measured)
    return value if value == "n/a" else f"{value}{target.unit}"


def targets_table(targets: Sequence[Target]) -> str:
    """Targets, met or missed, with the margin."""
    lines = ["| Target | Measured | Needed | Result | Margin |", "|---|---:|---:|---|---|"]
    for t in targets:
        result = {True: "**met**", False: "**missed**", None: "not measured"}[t.met]
        needed = f"{'>=' if t.at_least else '<='} {t.threshold:g}{t.unit}"
        note = f" ({t.note})" if t.note else ""
        lines.append(f"| {t.name}{note} | {_measured(t)} | {needed} | {result} | {t.margin} |")
    return "\n".join(lines)


def _reading_section(summaries: Sequence[VariantSummary]) -> list[str]:
    """What the table says, in numbers taken from it."""
    by_key = {s.key: s for s in summaries}
    base, full = by_key.get("baseline"), by_key.get("full")
    out = ["## Reading the numbers", ""]
    if base:
        out.append(
            f"- One worker serves the un-cached page in about {1000 / base.rps.median:.1f} ms "
            "of server time (1 / req/s): the ORM loads 50 films with their genres and rating "
            "statistics, then pydantic serialises them. Next to that a limiter's one to three "
            "Redis round trips are small, so variants 2, 4a, 4b and 5 sit near 1.0x, and most of "
            "their differences are within the round-to-round spread (min-max column)."
        )
    if full:
        out.append(
            f"- A cache hit costs about {1000 / full.rps.median:.2f} ms: limiter + cache, "
            "2 Redis round trips, no database."
        )
    limiters = [
        f"{by_key[k].label.split('. ', 1)[1]} {by_key[k].ratio.median:.2f}x"
        for k in ("limiter", "slowapi", "fastapi_limiter", "naive")
        if k in by_key
    ]
    if limiters:
        out.append("- Limiter against limiter, all on the un-cached route: " + "; ".join(limiters))
    out += [
        "- The targets against slowapi and fastapi-limiter compare the product's cached path "
        "with those libraries on the un-cached route (the issue's set-up): they are met through "
        "the cache, not through a cheaper limiter.",
        "",
    ]
    return out


def _refresh_section(results: Results) -> list[str]:
    out = ["## Background job: refresh enqueue -> complete", ""]
    if results.refresh is None:
        out += [f"Not measured: {results.refresh_error or 'skipped'}.", ""]
        return out
    r = results.refresh
    out += [
        f"{r.jobs} `refresh_recommendations` jobs, one at a time, queued with "
        "`app.jobs.trigger_refresh` and read back with `app.jobs.describe_job`; a real worker "
        "(`python -m app.worker`, `MOVIE_WORKER_POLL_DELAY_MS=50`) on the same Redis and "
        "database. Latency is arq's `finish_time - enqueue_time`.",
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
        "- `x baseline` is the median of per-round ratios (each variant against the baseline of "
        "the same round); min-max over rounds. req/s, p50 and p99 are per round, then median.",
        "- Redis round trips/req: the server's `total_reads_processed` delta over the round "
        "divided by the requests served: wrk's completed requests plus the one request per "
        "connection still in flight when wrk stops (the server serves those too). EVALSHA is one "
        "round trip; a script's inner calls add none. Redis cmds/req: `INFO commandstats` calls "
        "delta / requests served, which also counts every `redis.call()` inside Lua scripts. "
        "Both include the set-up of connections a pool opens during the round (CLIENT SETINFO, "
        "per round in results.json); the round-trip target uses an exact count from "
        f"{c['calibration_requests']} sequential requests per variant after the rounds "
        "(`redis_exact` in results.json).",
        "- The product variants are `app.main.create_app` itself: the baseline drops the "
        "`RateLimitMiddleware` and swaps the response cache for a pass-through; the library "
        "variants are the baseline with the library applied to the same route handler "
        "(`app.routes.movies.list_movies`). See bench/variants.py.",
        "",
    ]


def render_markdown(results: Results) -> str:
    """The whole report."""
    minutes, seconds = divmod(round(results.run_seconds), 60)
    c = results.config
    lines = [
        "# movieops benchmark: the Redis features against the usual alternatives",
        "",
        f"Command: `{results.command}` - started {results.started_at}, "
        f"ran {minutes} min {seconds} s.",
        "",
        f"## Throughput: `GET /movies?limit={c['page_size']}`",
        "",
        throughput_table(results.summaries),
        "",
        f"![req/s relative to the baseline]({CHART})",
        "",
        "## Targets",
        "",
        targets_table(results.targets),
        "",
        *_reading_section(results.summaries),
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
            {"key": v.key, "label": v.label, "description": v.description} for v in VARIANTS
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
    labels = [s.label for s in rows]
    medians = [s.ratio.median for s in rows]
    errors = [
        [s.ratio.median - s.ratio.low for s in rows],
        [s.ratio.high - s.ratio.median for s in rows],
    ]
    product = {"baseline", "limiter", "full"}
    colors = [
        "#2b6cb0" if s.key in product else "#a0aec0" if s.key == "starlette" else "#dd6b20"
        for s in rows
    ]
    fig, ax = plt.subplots(figsize=(9.5, 4.8), dpi=120)
    highest = max(s.ratio.high for s in rows)
    # A log axis keeps 0.9x vs 1.1x visible next to a 100x framework ceiling.
    log = highest > 8
    left = 0.5 if log else 0.0
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
        f"req/s relative to the product with Redis features off{scale}\n"
        "bar: median over rounds; whiskers: min-max"
    )
    ax.set_title("GET /movies?limit=50: one uvicorn worker pinned to one CPU, wrk on the other")
    ax.legend(
        handles=[
            matplotlib.patches.Patch(color="#2b6cb0", label="the product"),
            matplotlib.patches.Patch(color="#dd6b20", label="other limiters (same route)"),
            matplotlib.patches.Patch(color="#a0aec0", label="framework ceiling"),
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
