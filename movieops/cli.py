"""The ``movieops`` command line: thin commands over the operations, for people and for CI.

Every command takes --json (one versioned envelope on stdout; progress and logs on stderr) and
exits with a documented code (movieops.errors.ExitCode).

Start-up cost matters here (`--help` and `status` answer at once): at module level this imports
Typer and movieops' light modules only. Each command imports what it needs (the runtimes, Redis,
HTTP, arq, Schemathesis, the renderers) inside its body; tests/test_architecture.py guards that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.constants import JOB_ID_PATTERN, MAX_DB_ID
from movieops import options as opt
from movieops.clikit import (
    SHOWN,
    ApiUrlOption,
    App,
    JsonOption,
    Options,
    ProjectDirOption,
    RedisUrlOption,
    RuntimeOption,
    app_of,
    command,
    github_group,
    interactive,
    progress_display,
    run,
    show_snapshots,
)
from movieops.errors import NotRunning, PreflightFailed, ThresholdExceeded, Unhealthy, UsageError

if TYPE_CHECKING:
    from movieops.probes import Probe
    from movieops.runtime import Check, ServiceState

cli = typer.Typer(
    name="movieops",
    help="Run and operate the movie API stack: up, health, rate limits, jobs, contract tests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
jobs_cli = typer.Typer(help="Background jobs: list them, or show one.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")


def _version(value: bool) -> None:
    if value:
        from movieops import __version__

        print(f"movieops {__version__}")
        raise typer.Exit()


@cli.callback()
def root(
    ctx: typer.Context,
    json_output: JsonOption = False,
    # MOVIEOPS_RUNTIME, MOVIEOPS_API_URL and MOVIEOPS_REDIS_URL are read by CliSettings.
    runtime: RuntimeOption = None,
    api_url: ApiUrlOption = None,
    redis_url: RedisUrlOption = None,
    project_dir: ProjectDirOption = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run and operate the movie API stack.

    The global options work before the command or after it (`movieops up --runtime local`).
    """
    ctx.obj = Options(json_output, runtime, api_url, redis_url, project_dir)


# --- lifecycle -------------------------------------------------------------------------------


@command(cli)
def up(
    ctx: typer.Context,
    build: Annotated[bool, typer.Option(help="Rebuild images / restart even if healthy.")] = False,
    proxy: Annotated[bool, typer.Option(help="Also start nginx in front of the API.")] = False,
    replicas: opt.Replicas = 1,
    database: opt.DatabaseOption = None,
    timeout: opt.HealthBudget = None,
    image: opt.Image = None,
    monitoring: Annotated[
        bool, typer.Option(help="Also start Prometheus and a Redis exporter (compose).")
    ] = False,
) -> None:
    """Start the stack and wait until every service is healthy, then print its URLs.

    Preflight first (Docker and Compose, free ports naming what holds them, valid config). On an
    already-healthy stack this is a quick no-op. On failure it names the service that blocked and
    saves a failure bundle under .movieops/reports/.
    """
    if replicas > 1:
        proxy = True

    def operation(app: App) -> Any:
        from movieops import contract
        from movieops.runtime import UpOptions
        from movieops.runtime.selection import remember_runtime
        from movieops.stack import bring_up

        # The contract run's rate-limit exemption secret, handed to the API at start.
        runtime = app.runtime(token=contract.ensure_token(app.state_dir))
        if image is not None and runtime.name != "swarm":
            raise UsageError(
                f"--image deploys a given image to a swarm; the {runtime.name} runtime builds "
                "its own",
                hint="use --runtime swarm, or drop --image",
            )
        if database is opt.Database.postgres and runtime.name == "local":
            raise UsageError(
                "the local runtime supports SQLite only; --database postgres needs compose",
                hint="use --runtime compose (Docker), or drop --database postgres",
            )
        if monitoring and runtime.name != "compose":
            raise UsageError(
                f"--monitoring starts the compose monitoring profile; not on {runtime.name}",
                hint="use --runtime compose, or drop --monitoring",
            )
        if database is opt.Database.sqlite and runtime.name == "swarm":
            raise UsageError(
                "the swarm runtime runs PostgreSQL (a SQLite file cannot be shared by nodes)",
                hint="drop --database sqlite",
            )
        options = UpOptions(
            build=build,
            proxy=proxy,
            replicas=replicas,
            database=database.value if database else None,
            image=image,
            monitoring=monitoring,
        )
        live = progress_display(app)
        with github_group("movieops up"), live as update:
            result = bring_up(
                runtime,
                options,
                budget_seconds=timeout or app.cli_settings.health_timeout,
                worker_interval=app.stack.worker_health_check_seconds,
                reports_dir=app.state_dir / "reports",
                on_progress=update,
                on_output=lambda line: app.say(f"  {line}") if line else None,
            )
        remember_runtime(app.state_dir, runtime.name)
        return result

    def show(app: App, result: Any) -> None:
        from movieops import render

        render.print_up(app.err, result)

    run(ctx, "up", operation, show)


@command(cli)
def down(
    ctx: typer.Context,
    volumes: opt.Volumes = False,
    yes: opt.Yes = False,
) -> None:
    """Stop the stack (every profile). With --volumes also delete its data (asks first)."""

    def operation(app: App) -> Any:
        if app.attached:
            raise UsageError("down manages a stack movieops runs; drop --api-url/--redis-url")
        if volumes and not yes:
            if not interactive(app):
                raise UsageError(
                    "refusing to delete data without confirmation",
                    hint="add --yes to delete the volumes non-interactively",
                )
            if not typer.confirm("Delete the database and Redis data?", default=False, err=True):
                raise UsageError("nothing deleted")
        from movieops.runtime.selection import forget_runtime

        runtime = app.runtime()
        done = runtime.stop(volumes)
        forget_runtime(app.state_dir)
        return {"runtime": runtime.name, "done": done}

    def show(app: App, result: Any) -> None:
        from movieops import render

        render.print_lines(app.err, result["done"])

    run(ctx, "down", operation, show)


@command(cli)
def rollback(ctx: typer.Context, timeout: opt.HealthBudget = None) -> None:
    """Swarm: put the app services back on their previous version, and wait until healthy.

    Swarm rolls a failed update back by itself; this is for an update that deployed fine but
    misbehaves. Exits 2 when there is nothing to roll back (no earlier version).
    """

    def operation(app: App) -> Any:
        if app.attached:
            raise UsageError("rollback manages a stack movieops runs; drop --api-url/--redis-url")
        from movieops.runtime.swarm import SwarmRuntime
        from movieops.stack import wait_healthy

        runtime = app.runtime()
        if not isinstance(runtime, SwarmRuntime):
            raise UsageError(
                f"rollback is for the swarm runtime; the {runtime.name} runtime has no previous "
                "versions",
                hint="movieops --runtime swarm rollback",
            )
        rolled = runtime.rollback()
        live = progress_display(app)
        with github_group("movieops rollback"), live as update:
            wait_healthy(
                runtime,
                timeout or app.cli_settings.health_timeout,
                app.stack.worker_health_check_seconds,
                update,
                watch_rollout=False,
            )
        return {"runtime": runtime.name, "rolled_back": rolled, "services": runtime.status()}

    def show(app: App, result: Any) -> None:
        from movieops import render

        render.print_lines(
            app.err, [f"rolled back {', '.join(result['rolled_back'])}; every service is healthy"]
        )

    run(ctx, "rollback", operation, show)


@command(cli)
def status(ctx: typer.Context) -> None:
    """Every service: state, health, restarts, uptime, URL."""

    def operation(app: App) -> list[ServiceState]:
        if app.attached:
            from movieops.status import attached_status

            return attached_status(app.endpoints(), app.stack.worker_health_check_seconds)
        return app.runtime().status()

    def show(app: App, states: list[ServiceState]) -> None:
        from movieops import render

        title = "attached stack" if app.attached else f"{app.runtime().name} runtime"
        app.out.print(render.status_table(states, title))

    run(ctx, "status", operation, show)


@command(cli)
def health(
    ctx: typer.Context,
    wait: Annotated[bool, typer.Option(help="Wait until every probe passes.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds --wait waits.")] = 60,
) -> None:
    """Probe the stack: API /health and /ready, Redis PING, worker heartbeat, the proxy route.

    Exits 5 if any probe fails (after --timeout with --wait), with the reason for each.
    """

    from movieops import render
    from movieops.probes import check_health

    def operation(app: App) -> list[Probe]:
        try:
            return check_health(
                app.endpoints(), app.stack.worker_health_check_seconds, wait=wait, timeout=timeout
            )
        except Unhealthy as exc:
            if not app.json and isinstance(exc.data, list):
                app.out.print(render.probes_table(exc.data))
            raise

    run(ctx, "health", operation, lambda app, probes: app.out.print(render.probes_table(probes)))


@command(cli)
def logs(
    ctx: typer.Context,
    services: Annotated[list[str] | None, typer.Argument(help="Services (default: all).")] = None,
    follow: opt.Follow = False,
    tail: Annotated[int | None, typer.Option(min=1, help="Only the last N lines.")] = None,
    since: opt.Since = None,
) -> None:
    """Service logs (to stdout), optionally followed."""

    def operation(app: App) -> Any:
        from movieops.timeparse import parse_since

        if follow and app.json:
            raise UsageError("--follow cannot be combined with --json")
        parse_since(since)  # a bad value is a usage error, whatever the runtime
        runtime = app.runtime()
        unknown = [s for s in services or [] if s not in runtime.services]
        if unknown:
            raise UsageError(
                f"unknown service {unknown[0]!r}",
                hint=f"choose from: {', '.join(runtime.services)}",
            )
        lines = runtime.logs(list(services or []), tail, since, follow)
        if app.json:
            return {"lines": list(lines)}
        for line in lines:
            print(line, flush=follow)
        return SHOWN

    run(ctx, "logs", operation)


# --- operating -------------------------------------------------------------------------------


@command(cli, "rate-limits")
def rate_limits(
    ctx: typer.Context,
    client: opt.Client = None,
    path: opt.RoutePath = None,
    limit: opt.Limit = None,
    watch: Annotated[bool, typer.Option(help="Refresh every --interval seconds.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 1.0,
    count: opt.Count = None,
    reset: opt.Reset = False,
) -> None:
    """Every rate:* counter (via SCAN, never KEYS): client, route, count, limit, remaining, reset.

    Busiest first. --watch shows a live view; --reset --client IP clears one client.
    """
    if path is not None and not path.startswith("/"):
        raise typer.BadParameter("a path starts with /", param_hint="--path")
    from movieops import ratelimits, render

    def operation(app: App) -> Any:
        configured = limit or app.stack.rate_limit_per_minute
        with ratelimits.connected(app.endpoints().redis_url) as redis:
            if reset:
                return ratelimits.reset(redis, client)

            def read() -> list[ratelimits.Counter]:
                return ratelimits.read_counters(redis, configured, client, path)

            if not watch:
                return read()
            show_snapshots(
                app, "rate-limits", ratelimits.watch(read, interval, count), render.counters_table
            )
            return SHOWN

    run(ctx, "rate-limits", operation, lambda app, result: render.print_counters(app.out, result))


@command(cli)
def top(
    ctx: typer.Context,
    interval: opt.TopInterval = 1.0,
    once: opt.Once = False,
    count: opt.TopCount = None,
    worker_metrics_url: opt.WorkerMetricsUrl = None,
) -> None:
    """What the stack is doing, live: per API replica and worker, and Redis.

    Each process is scraped on its own (its Prometheus /metrics): req/s, p50/p99 latency, 5xx
    and 429 ratios, cache hit ratio; queue depth, running jobs, jobs/s and job latency; Redis
    memory and key counts by prefix (a SCAN bounded at 10 000 keys, never KEYS: ≥N when
    reached). A process that cannot be scraped shows as down. --once --json for scripts;
    without a terminal it prints one snapshot.
    """
    import sys

    if worker_metrics_url is not None and not worker_metrics_url.startswith(
        ("http://", "https://")
    ):
        raise typer.BadParameter("an http:// or https:// URL", param_hint="--worker-metrics-url")
    from movieops import render
    from movieops import top as top_module
    from movieops.runtime import MetricsTarget

    def operation(app: App) -> Any:
        endpoints = app.endpoints()
        if app.attached:
            attached = [MetricsTarget("api", "api", f"{endpoints.api_url}/metrics")]
            if worker_metrics_url:
                attached.append(MetricsTarget("worker", "worker", worker_metrics_url))

            def targets() -> list[MetricsTarget]:
                return attached
        elif worker_metrics_url:
            raise UsageError(
                "--worker-metrics-url is for attach mode; movieops finds its own stack's worker",
                hint="add --api-url, or drop --worker-metrics-url",
            )
        else:
            targets = app.runtime().metrics_targets
        if once or (count is None and (app.json or not sys.stdout.isatty())):
            return next(top_module.watch(targets, endpoints.redis_url, interval, 1))
        snapshots = top_module.watch(targets, endpoints.redis_url, interval, count)
        show_snapshots(app, "top", snapshots, render.top_view)
        return SHOWN

    run(ctx, "top", operation, lambda app, snapshot: app.out.print(render.top_view(snapshot)))


@command(cli)
def load(
    ctx: typer.Context,
    rate: opt.Rate = 10.0,
    duration: opt.Duration = None,
    requests: opt.Requests = None,
    concurrency: opt.Concurrency = 16,
    exempt: opt.Exempt = False,
    max_error_rate: opt.MaxErrorRate = None,
    max_p99: opt.MaxP99 = None,
    seed: opt.Seed = None,
) -> None:
    """Send traffic to the API and summarise it: statuses, latency, cache hits, 429s.

    A mixed read/write profile at --rate for --duration seconds (or --requests N): pages and
    genre filters of GET /movies (repeated, so the cache hits), GET /movies/{id}, conditional
    GETs (If-None-Match), and POST /movies/{id}/ratings with an Idempotency-Key (some sent twice).
    WRITES: it rates films as users 2000000001-2000000100 (a range the demo data never uses;
    rating again replaces the score); it never deletes anything. It is one client (this host)
    and forges no header; it respects the rate limit (X-RateLimit-*), holding each route back
    until its window resets, unless --exempt. --max-error-rate and --max-p99 make it a CI gate
    (exit 11).
    """
    import sys

    from movieops import load as load_module
    from movieops import render

    def operation(app: App) -> Any:
        duration_s, count = load_module.validate(rate, duration, requests, concurrency)
        load_module.validate_thresholds(max_error_rate, max_p99)
        token = None
        if exempt:
            if app.attached:
                raise UsageError(
                    "--exempt is for a stack movieops runs (its exemption secret); an attached "
                    "stack gets the rate limit",
                    hint="drop --exempt, or drop --api-url/--redis-url",
                )
            from movieops import contract

            token = app.cli_settings.contract_token or contract.read_token(app.state_dir)
            if token is None:
                raise UsageError(
                    "--exempt: this stack has no exemption secret",
                    hint="`movieops up` creates one; or drop --exempt",
                )
        api_url = app.endpoints().api_url
        bound = f"{count} requests" if count is not None else f"{duration_s:g}s"
        app.say(
            f"load: {rate:g} req/s for {bound} against {api_url}; "
            + (
                "exempt from the rate limit"
                if token
                else "respecting the rate limit (each route waits for its window when its "
                "budget is spent; --exempt for the full rate)"
            )
        )
        options = load_module.LoadOptions(rate, duration_s, count, concurrency, token, seed)
        if sys.stderr.isatty() and not app.json:
            from rich.progress import Progress

            with Progress(console=app.err, transient=True) as progress:
                task = progress.add_task("load", total=count or duration_s)
                summary = load_module.run_load(
                    api_url,
                    options,
                    lambda done, seconds: progress.update(
                        task, completed=done if count is not None else seconds
                    ),
                    app.say,
                )
        else:
            summary = load_module.run_load(api_url, options, on_message=app.say)
        failures = load_module.threshold_failures(summary, max_error_rate, max_p99)
        if failures:
            if not app.json:
                render.print_load(app.out, summary)
            raise ThresholdExceeded(
                "threshold exceeded: " + "; ".join(failures),
                hint="the summary shows statuses and latencies; `movieops top` while it runs",
                data=summary,
            )
        return summary

    summary = run(ctx, "load", operation, lambda app, summary: render.print_load(app.out, summary))
    if summary.interrupted:  # Ctrl-C: the summary of what was sent is shown; then as usual
        app_of(ctx).say("interrupted")
        raise typer.Exit(130)


@command(cli)
def refresh(
    ctx: typer.Context,
    user: Annotated[int, typer.Option("--user", min=1, max=MAX_DB_ID, help="User id.")],
    wait: Annotated[bool, typer.Option(help="Wait for the outcome.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds --wait waits.")] = 30,
    force: Annotated[bool, typer.Option(help="Run again even if a refresh just finished.")] = False,
) -> None:
    """Refresh a user's recommendations now (the same job and id scheme as the API).

    Says what happened: enqueued, already queued, in progress, or done recently. --wait shows the
    outcome (exit 7 if the job failed, 8 on timeout).
    """
    import asyncio

    from movieops import jobs, render

    def operation(app: App) -> Any:
        url = app.endpoints().redis_url
        outcome = asyncio.run(jobs.refresh(url, user, force))
        if not wait or outcome.action is jobs.RefreshAction.DONE_RECENTLY:
            return outcome
        if not app.json:
            render.print_refresh(app.err, outcome)
        job = asyncio.run(jobs.wait_for(url, outcome.job_id, timeout))
        return jobs.RefreshOutcome(outcome.user_id, outcome.job_id, outcome.action, job)

    run(ctx, "refresh", operation, lambda app, out: render.print_outcome(app.out, out, waited=wait))


@command(jobs_cli, "ls")
def jobs_ls(ctx: typer.Context) -> None:
    """Queued, running and finished jobs with tries, times, result or error."""
    import asyncio

    from movieops import jobs, render

    run(
        ctx,
        "jobs ls",
        lambda app: asyncio.run(jobs.list_jobs(app.endpoints().redis_url)),
        lambda app, result: app.out.print(render.jobs_table(result)),
    )


@command(jobs_cli, "show")
def jobs_show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id, e.g. refresh:42.")],
) -> None:
    """One job in full (exit 9 if no such job is known)."""
    import re

    if not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise typer.BadParameter("letters, digits and : _ . - only", param_hint="JOB_ID")
    import asyncio

    from movieops import jobs, render

    def operation(app: App) -> Any:
        job = asyncio.run(jobs.show_job(app.endpoints().redis_url, job_id))
        if job.state.value == "not_found":
            raise NotRunning(
                f"no job {job_id} (never queued, or its result expired)",
                hint="`movieops jobs ls` lists the known jobs",
                next_command="movieops jobs ls",
            )
        return job

    run(ctx, "jobs show", operation, lambda app, job: render.print_job(app.out, job))


@command(cli, "contract")
def contract_command(
    ctx: typer.Context,
    live: opt.Live = False,
    checks: Annotated[str, typer.Option(help="Schemathesis checks (comma-separated).")] = "all",
    max_examples: Annotated[int, typer.Option(min=1, help="Examples per operation.")] = 50,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Concurrent workers.")] = 2,
    report_dir: opt.ReportDir = None,
    token: opt.ExemptToken = None,
    seed: Annotated[int | None, typer.Option(help="Schemathesis seed, to reproduce a run.")] = None,
    schema_timeout: opt.SchemaTimeout = 60,
    timeout: opt.RunTimeout = 900,
) -> None:
    """Run Schemathesis: every check, all four phases, JUnit report (exit 6 on failures).

    By default against a disposable API this command starts and removes (its own SQLite,
    its own valkey-server, the demo catalog), so your stack's data is never touched. --live runs
    against the stack's API instead, presenting its exemption secret (X-RateLimit-Exempt), so the
    run is not throttled while ordinary clients keep the 20/minute limit.
    """
    from movieops import contract, render

    def operation(app: App) -> Any:
        contract.check_target(
            live=live, attached_api=bool(app.api_url), token_given=token is not None
        )
        options: dict[str, Any] = {
            "checks": checks,
            "max_examples": max_examples,
            "workers": workers,
            "report_dir": report_dir or app.state_dir / "reports" / "contract",
            "schema_timeout": schema_timeout,
            "seed": seed,
            "on_output": app.say,
            "timeout": timeout,
        }
        with github_group("movieops contract"):
            if not live:
                return contract.run_isolated(**options)
            secret = token or app.cli_settings.contract_token or contract.read_token(app.state_dir)
            if secret is None:
                app.say("no exemption secret: the run will meet the rate limit (mostly 429s)")
            return contract.run_contract(app.endpoints().api_url, token=secret, **options)

    run(ctx, "contract", operation, lambda app, result: render.print_contract(app.out, result))


@command(cli)
def doctor(
    ctx: typer.Context,
    proxy: Annotated[bool, typer.Option(help="Check for the proxy profile too.")] = False,
) -> None:
    """The preflight checks on their own, each with a one-line fix (exit 4 if any fails)."""
    from movieops import render
    from movieops.doctor import run_checks

    def operation(app: App) -> list[Check]:
        try:
            return run_checks(lambda: app.stack, app.runtime, proxy=proxy)
        except PreflightFailed as exc:
            if not app.json and isinstance(exc.data, list):
                app.out.print(render.checks_table(exc.data))
            raise

    run(ctx, "doctor", operation, lambda app, checks: app.out.print(render.checks_table(checks)))


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
