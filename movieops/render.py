"""Results as Rich tables for people (the same objects go to JSON with --json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    # Types only: the modules behind them (arq, Redis, HTTP) are the commands' to import.
    from rich.console import Console

    from app.jobs import JobView
    from movieops.contract import ContractResult
    from movieops.errors import MovieOpsError
    from movieops.jobs import RefreshOutcome
    from movieops.load import LoadSummary
    from movieops.probes import Probe
    from movieops.ratelimits import Counter
    from movieops.runtime import Check, ServiceState
    from movieops.stack import ServiceProgress, UpResult
    from movieops.top import RedisView, TopSnapshot

STATE_STYLE = {
    "running": "green",
    "healthy": "green",
    "done": "green",
    "exited": "red",
    "failed": "red",
    "missing": "red",
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_table(rows: Sequence[ServiceProgress]) -> Table:
    """The live per-service display of `up`."""
    table = Table(title="waiting for the stack", title_justify="left", expand=False)
    for column in ("service", "state", "ready after", "detail"):
        table.add_column(column)
    for row in rows:
        style = "green" if row.healthy else "yellow"
        table.add_row(
            row.service,
            f"[{style}]{row.state}[/{style}]",
            f"{row.seconds}s" if row.seconds is not None else "-",
            row.detail[:70],
        )
    return table


def progress_line(row: ServiceProgress) -> str:
    """One plain line per change (no TTY, CI)."""
    return f"{row.service}: {row.state}" + (f" ({row.detail})" if row.detail else "")


def status_table(states: Sequence[ServiceState], title: str) -> Table:
    """`movieops status`."""
    table = Table(title=title, title_justify="left")
    for column in ("service", "state", "health", "restarts", "uptime", "url"):
        table.add_column(column)
    for s in states:
        style = STATE_STYLE.get(s.state, "yellow")
        table.add_row(
            s.service,
            f"[{style}]{s.state}[/{style}]",
            s.health or "-",
            "-" if s.restarts is None else str(s.restarts),
            _duration(s.uptime_seconds),
            s.url or "-",
        )
    return table


def probes_table(probes: Sequence[Probe]) -> Table:
    """`movieops health`."""
    table = Table(title="health", title_justify="left")
    for column in ("probe", "ok", "detail", "latency"):
        table.add_column(column)
    for p in probes:
        table.add_row(
            p.name,
            "[green]yes[/green]" if p.ok else "[red]NO[/red]",
            p.detail,
            f"{p.latency_ms} ms" if p.latency_ms is not None else "-",
        )
    return table


def checks_table(checks: Sequence[Check], title: str = "doctor") -> Table:
    """`movieops doctor` and preflight failures."""
    table = Table(title=title, title_justify="left")
    for column in ("check", "ok", "detail", "fix"):
        table.add_column(column)
    for c in checks:
        table.add_row(
            c.name, "[green]yes[/green]" if c.ok else "[red]NO[/red]", c.detail, c.fix or ""
        )
    return table


def counters_table(counters: Sequence[Counter]) -> Table:
    """`movieops rate-limits`."""
    table = Table(title=f"rate limits ({len(counters)} counters)", title_justify="left")
    for column in ("client", "route", "count", "limit", "remaining", "resets in"):
        table.add_column(column, justify="right" if column not in {"client", "route"} else "left")
    for c in counters:
        style = "red" if c.remaining == 0 else ""
        table.add_row(
            c.client,
            c.path,
            str(c.count),
            str(c.limit),
            f"[{style}]{c.remaining}[/{style}]" if style else str(c.remaining),
            "never (no TTL!)" if c.reset_seconds is None else f"{c.reset_seconds}s",
        )
    return table


def jobs_table(jobs: Sequence[JobView]) -> Table:
    """`movieops jobs ls`."""
    table = Table(title=f"jobs ({len(jobs)})", title_justify="left")
    for column in ("job", "state", "tries", "enqueued", "finished", "outcome"):
        table.add_column(column)
    for j in jobs:
        outcome = j.error or (str(j.result)[:60] if j.result is not None else "")
        table.add_row(
            j.job_id,
            j.state.value,
            "-" if j.tries is None else str(j.tries),
            j.enqueued_at.strftime("%H:%M:%S") if j.enqueued_at else "-",
            j.finished_at.strftime("%H:%M:%S") if j.finished_at else "-",
            outcome,
        )
    return table


def print_job(console: Console, job: JobView) -> None:
    """`movieops jobs show`."""
    console.print(f"[bold]{job.job_id}[/bold]  {job.state.value}")
    for label, value in [
        ("function", job.function),
        ("args", ", ".join(map(str, job.args)) or None),
        ("tries", job.tries),
        ("enqueued", job.enqueued_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("result", job.result),
        ("error", job.error),
    ]:
        if value is not None:
            console.print(f"  {label:<9} {value}")


def print_refresh(console: Console, outcome: RefreshOutcome) -> None:
    """`movieops refresh`."""
    said = {
        "enqueued": "queued a refresh",
        "already_queued": "a refresh is already queued",
        "in_progress": "a refresh is already running",
        "done_recently": "refreshed moments ago (use --force to run again)",
    }[outcome.action.value]
    console.print(
        f"user {outcome.user_id}: {said} — job {outcome.job_id} ({outcome.job.state.value})"
    )


def print_outcome(console: Console, outcome: RefreshOutcome, *, waited: bool) -> None:
    """`movieops refresh`: the job in full once waited for, else what the request did."""
    from movieops.jobs import RefreshAction

    if waited and outcome.action is not RefreshAction.DONE_RECENTLY:
        print_job(console, outcome.job)
    else:
        print_refresh(console, outcome)


def print_counters(console: Console, result: Sequence[Counter] | dict[str, object]) -> None:
    """`movieops rate-limits`: the counters, or what --reset deleted."""
    if isinstance(result, dict):
        console.print(f"deleted {result['deleted']} counter(s) of {result['client']}")
    else:
        console.print(counters_table(result))


def print_contract(console: Console, result: ContractResult) -> None:
    """`movieops contract` that held: where, how long, which report."""
    where = "a disposable API" if result.isolated else result.schema_url
    console.print(
        f"[green]contract holds[/green]: {where} in {result.seconds:g}s; "
        f"JUnit report {result.junit or result.report_dir}"
    )


def print_lines(console: Console, lines: Sequence[str]) -> None:
    """One line each (what `down` did)."""
    for line in lines:
        console.print(line)


def print_up(console: Console, result: UpResult) -> None:
    """URLs and next steps after `up`."""
    if result.already_running:
        console.print(f"[green]already running and healthy[/green] ({result.runtime} runtime)")
    else:
        console.print(
            f"[green]stack is healthy[/green] after {result.seconds:g}s ({result.runtime} runtime)"
        )
    e = result.endpoints
    console.print(f"  API    {e.api_url}")
    console.print(f"  docs   {e.docs_url}")
    if e.proxy_url:
        console.print(f"  proxy  {e.proxy_url}")
    console.print(f"  redis  {e.redis_url}")
    console.print(
        "next: movieops health · movieops rate-limits · movieops refresh --user 42 --wait · "
        "movieops contract · movieops down"
    )


def print_error(console: Console, error: MovieOpsError) -> None:
    """The error line, the blocking service's last log lines (a failed `up`), hint and next step."""
    console.print(f"[red]error:[/red] {error.message}", highlight=False, soft_wrap=True)
    last_lines = error.data.get("last_log_lines") if isinstance(error.data, dict) else None
    if last_lines:
        console.print("last log lines:", highlight=False)
        for line in last_lines:
            console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
    if error.hint:
        console.print(f"hint: {error.hint}", highlight=False, soft_wrap=True)
    if error.next_command:
        console.print(f"next: {error.next_command}", highlight=False, soft_wrap=True)


def _num(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def top_view(snapshot: TopSnapshot) -> Group:
    """`movieops top`: the API processes, the workers, then Redis memory and keys."""
    api = Table(
        title=f"movieops top — over {snapshot.interval_seconds:g}s to "
        f"{snapshot.taken_at.strftime('%H:%M:%S')} UTC",
        title_justify="left",
    )
    for column in ("api", "state", "req/s", "p50", "p99", "5xx", "429", "cache hit", "note"):
        api.add_column(column, justify="left" if column in {"api", "state", "note"} else "right")
    workers = Table()
    for column in ("worker", "state", "queue", "running", "jobs/s", "job p50", "job p99", "note"):
        workers.add_column(
            column, justify="left" if column in {"worker", "state", "note"} else "right"
        )
    for t in snapshot.targets:
        style = "green" if t.state == "up" else "red"
        state = f"[{style}]{t.state}[/{style}]"
        note = "; ".join(filter(None, [t.note, t.detail]))[:80]
        if t.service == "api":
            a = t.api
            cells = (
                [
                    _num(a.requests_per_second),
                    _num(a.p50_ms, " ms"),
                    _num(a.p99_ms, " ms"),
                    _pct(a.error_ratio),
                    _pct(a.limited_ratio),
                    _pct(a.cache_hit_ratio),
                ]
                if a is not None
                else ["-"] * 6
            )
            api.add_row(t.instance, state, *cells, note)
        else:
            w = t.worker
            cells = (
                [
                    _num(w.queue_depth, digits=0),
                    _num(w.running_jobs, digits=0),
                    _num(w.jobs_per_second),
                    _num(w.job_p50_ms, " ms"),
                    _num(w.job_p99_ms, " ms"),
                ]
                if w is not None
                else ["-"] * 5
            )
            workers.add_row(t.instance, state, *cells, note)
    parts: list[Table | Text] = [api]
    if workers.row_count:
        parts.append(workers)
    parts.append(Text.from_markup(redis_line(snapshot.redis)))  # no number highlighting
    return Group(*parts)


def redis_line(redis: RedisView) -> str:
    """Redis memory and key counts on one line (≥N where SCAN stopped at its bound)."""
    if redis.state != "up":
        return f"redis: [red]down[/red] ({redis.detail})"
    bound = "" if redis.complete else "≥"
    keys = " ".join(f"{prefix}{bound}{n}" for prefix, n in redis.keys.items() if n)
    maxmemory = redis.maxmemory_human if redis.maxmemory else "no limit"
    return f"redis: memory {redis.used_memory_human} of {maxmemory}; {redis.total_keys} keys" + (
        f" ({keys})" if keys else ""
    )


def print_load(console: Console, summary: LoadSummary) -> None:
    """`movieops load`: what was sent, how it was answered, how fast."""
    table = Table(
        title=f"load on {summary.api_url}: {summary.requests} requests in {summary.seconds:g}s"
        + (" (interrupted)" if summary.interrupted else ""),
        title_justify="left",
        show_header=False,
    )
    table.add_column("what")
    table.add_column("value")
    statuses = ", ".join(f"{status}: {n}" for status, n in summary.statuses.items()) or "-"
    errors = ", ".join(f"{error}: {n}" for error, n in summary.transport_errors.items())
    lat = summary.latency_ms
    cache = ", ".join(f"{k} {v}" for k, v in summary.cache.items())
    rows = [
        ("statuses", statuses),
        ("no answer", errors or "0"),
        ("error rate", f"{summary.error_rate:.2%} (5xx and no answer)"),
        ("429s", str(summary.limited)),
        (
            "latency",
            f"p50 {_num(lat.p50, ' ms')} · p90 {_num(lat.p90, ' ms')} · "
            f"p99 {_num(lat.p99, ' ms')} · max {_num(lat.max, ' ms')}",
        ),
        ("cache hit ratio", _pct(summary.cache_hit_ratio) + (f" ({cache})" if cache else "")),
        (
            "throughput",
            f"{summary.throughput_per_second:g} req/s (asked {summary.target_rate:g} req/s)",
        ),
        (
            "writes",
            f"{summary.ratings_written} rating(s) as users {summary.users}; "
            f"{summary.replayed} idempotent replay(s)",
        ),
    ]
    if summary.exempt:
        rows.append(("rate limit", "exempt (the stack's exemption secret)"))
    elif summary.rate_limit:
        rows.append(
            (
                "rate limit",
                f"respected: {summary.rate_limit}, at most ~"
                f"{summary.rate_limit_ceiling_per_second:g} req/s; held back "
                f"{summary.paced_seconds:g}s (--exempt for the full rate)",
            )
        )
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
