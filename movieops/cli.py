"""The ``movieops`` command line: thin commands over the operations, for people and for CI.

Every command takes --json (one versioned envelope on stdout; progress and logs on stderr) and
exits with a documented code (movieops.errors.ExitCode).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.live import Live

from app.config import Settings
from app.constants import JOB_ID_PATTERN, MAX_DB_ID
from movieops import __version__, contract, jobs, ratelimits, render
from movieops.errors import (
    DockerUnavailable,
    MovieOpsError,
    NotRunning,
    PreflightFailed,
    Unhealthy,
    UsageError,
)
from movieops.output import dumps, envelope
from movieops.probes import redis_client, run_probes
from movieops.runtime import Endpoints, Runtime, ServiceState, UpOptions
from movieops.runtime.compose import ComposeRuntime, docker_problem
from movieops.runtime.local import LocalRuntime, parse_since
from movieops.secrets import redact_url
from movieops.settings import CliSettings, load_cli_settings, load_stack_settings
from movieops.stack import ServiceProgress, bring_up, failing

T = TypeVar("T")
RUNTIME_FILE = "runtime"


class _Shown:
    """Returned by an operation that already printed its output (watch loops, streams)."""


SHOWN = _Shown()

cli = typer.Typer(
    name="movieops",
    help="Run and operate the movie API stack: up, health, rate limits, jobs, contract tests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
jobs_cli = typer.Typer(help="Background jobs: list them, or show one.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")


@dataclass
class App:
    """Per-invocation state built once in the callback and handed to every command."""

    json: bool
    cli_settings: CliSettings
    project_dir: Path
    runtime_choice: str
    api_url: str | None
    redis_url: str | None
    out: Console = field(default_factory=Console)
    err: Console = field(default_factory=lambda: Console(stderr=True))
    _stack: Settings | None = None
    _runtime: Runtime | None = None

    @property
    def state_dir(self) -> Path:
        """Where local state, tokens and reports live."""
        path = self.cli_settings.state_dir
        return path if path.is_absolute() else self.project_dir / path

    @property
    def stack(self) -> Settings:
        """The stack's MOVIE_* settings (read on first use)."""
        if self._stack is None:
            self._stack = load_stack_settings()
        return self._stack

    @property
    def attached(self) -> bool:
        """Whether --api-url/--redis-url point at a stack movieops did not start."""
        return bool(self.api_url or self.redis_url)

    def say(self, message: str) -> None:
        """Progress for people, always on stderr."""
        self.err.print(message, highlight=False)

    def runtime(self) -> Runtime:
        """The runtime to use: as asked, as last used by `up`, or detected."""
        if self._runtime is not None:
            return self._runtime
        choice = self.runtime_choice
        if choice == "auto":
            saved = self.state_dir / RUNTIME_FILE
            if saved.exists():
                choice = saved.read_text().strip()
            else:
                problem = (
                    docker_problem()
                    if (self.project_dir / "compose.yaml").exists()
                    else ("no compose.yaml here")
                )
                choice = "local" if problem else "compose"
                reason = problem or "a Docker engine with Compose answers"
                self.say(f"runtime: {choice} ({reason})")
        if choice == "compose":
            problem = docker_problem()
            if problem:
                raise DockerUnavailable(
                    f"the compose runtime needs Docker: {problem}",
                    hint="start Docker, or use --runtime local (the embedded runtime)",
                )
            s = self.cli_settings
            runtime: Runtime = ComposeRuntime(
                self.project_dir,
                s.compose_project,
                self.state_dir,
                (s.api_port, s.proxy_port, s.redis_port),
                token=contract.read_token(self.state_dir),
            )
        else:
            runtime = LocalRuntime(self.stack, self.state_dir, self.project_dir)
        self._runtime = runtime
        return runtime

    def remember_runtime(self, name: str) -> None:
        """Later commands in auto mode use the runtime `up` used."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / RUNTIME_FILE).write_text(name)

    def endpoints(self) -> Endpoints:
        """Where the stack answers: --api-url/--redis-url, else the runtime's."""
        if self.attached:
            default = Endpoints("http://127.0.0.1:8000", "redis://127.0.0.1:6379/0")
            if not self.api_url or not self.redis_url:
                with suppress(MovieOpsError):
                    default = self.runtime().endpoints()
            return Endpoints(
                (self.api_url or default.api_url).rstrip("/"), self.redis_url or default.redis_url
            )
        return self.runtime().endpoints()


def _app(ctx: typer.Context) -> App:
    app: App = ctx.ensure_object(App)
    return app


def _interactive(app: App) -> bool:
    return not app.json and sys.stderr.isatty() and sys.stdin.isatty()


@contextmanager
def _github_group(title: str) -> Iterator[None]:
    """Collapse long progress into a group on GitHub Actions."""
    grouped = os.environ.get("GITHUB_ACTIONS") == "true"
    if grouped:
        print(f"::group::{title}", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if grouped:
            print("::endgroup::", file=sys.stderr, flush=True)


def _run(
    ctx: typer.Context,
    command: str,
    operation: Callable[[App], T],
    show: Callable[[App, T], None] | None = None,
) -> T:
    """Run an operation: render its result, or turn its error into one line and an exit code."""
    app = _app(ctx)
    try:
        result = operation(app)
    except typer.Exit:
        raise
    except MovieOpsError as exc:
        _fail(app, command, exc)
    except KeyboardInterrupt:
        app.say("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if os.environ.get("MOVIEOPS_DEBUG"):
            raise
        _fail(
            app,
            command,
            MovieOpsError(
                f"unexpected error: {type(exc).__name__}: {exc}",
                hint="re-run with MOVIEOPS_DEBUG=1 for the traceback, and report it",
            ),
        )
    if isinstance(result, _Shown):
        return result
    if app.json:
        print(dumps(envelope(command, result)))
    elif show is not None:
        show(app, result)
    return result


def _fail(app: App, command: str, exc: MovieOpsError) -> typer.Exit:
    if app.json:
        print(dumps(envelope(command, error=exc)))
    else:
        render.print_error(app.err, exc)
    raise typer.Exit(int(exc.exit_code))


def _version(value: bool) -> None:
    if value:
        print(f"movieops {__version__}")
        raise typer.Exit()


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON envelope on stdout (progress on stderr).")
]


@cli.callback()
def root(
    ctx: typer.Context,
    json_output: JsonOption = False,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="auto (compose if Docker answers, else local), compose or local.",
            envvar="MOVIEOPS_RUNTIME",
            show_default="auto",
        ),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(help="Attach to the API at this URL instead.", envvar="MOVIEOPS_API_URL"),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(help="Attach to Redis at this URL instead.", envvar="MOVIEOPS_REDIS_URL"),
    ] = None,
    project_dir: Annotated[
        Path, typer.Option(help="The project (compose.yaml, .movieops/).", show_default="cwd")
    ] = Path(),
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run and operate the movie API stack."""
    project = project_dir.resolve()
    try:
        settings = load_cli_settings(runtime=runtime)
    except MovieOpsError as exc:
        app = App(json_output, CliSettings(), project, "auto", api_url, redis_url)
        raise _fail(app, ctx.invoked_subcommand or "movieops", exc) from None
    if settings.runtime not in {"auto", "compose", "local"}:
        raise typer.BadParameter("expected auto, compose or local", param_hint="--runtime")
    ctx.obj = App(
        json_output, settings, project, settings.runtime, api_url or settings.api_url,
        redis_url or settings.redis_url,
    )  # fmt: skip


# --- lifecycle -------------------------------------------------------------------------------


@cli.command()
def up(
    ctx: typer.Context,
    json_output: JsonOption = False,
    build: Annotated[bool, typer.Option(help="Rebuild images / restart even if healthy.")] = False,
    proxy: Annotated[bool, typer.Option(help="Also start nginx in front of the API.")] = False,
    replicas: Annotated[
        int, typer.Option(min=1, max=10, help="API replicas (behind the proxy).")
    ] = 1,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Per-service health budget in seconds.")
    ] = None,
) -> None:
    """Start the stack and wait until every service is healthy, then print its URLs.

    Preflight first (Docker and Compose, free ports naming what holds them, valid config). On an
    already-healthy stack this is a quick no-op. On failure it names the service that blocked and
    saves a failure bundle under .movieops/reports/.
    """
    _app(ctx).json |= json_output
    if replicas > 1:
        proxy = True

    def operation(app: App) -> Any:
        runtime = app.runtime()
        # The contract run's rate-limit exemption secret, handed to the API at start.
        runtime.token = contract.ensure_token(app.state_dir)
        options = UpOptions(build=build, proxy=proxy, replicas=replicas)
        live = _progress_display(app)
        with _github_group("movieops up"), live as update:
            result = bring_up(
                runtime,
                options,
                budget_seconds=timeout or app.cli_settings.health_timeout,
                worker_interval=app.stack.worker_health_check_seconds,
                reports_dir=app.state_dir / "reports",
                on_progress=update,
                on_output=lambda line: app.say(f"  {line}") if line else None,
            )
        app.remember_runtime(runtime.name)
        return result

    _run(ctx, "up", operation, lambda app, result: render.print_up(app.err, result))


@contextmanager
def _progress_display(app: App) -> Iterator[Callable[[list[ServiceProgress]], None]]:
    """A live table on a terminal; one line per change otherwise (CI, --json)."""
    if sys.stderr.isatty() and not app.json:
        with Live(console=app.err, refresh_per_second=8, transient=False) as live:
            yield lambda rows: live.update(render.progress_table(rows))
        return
    seen: dict[str, str] = {}

    def plain(rows: list[ServiceProgress]) -> None:
        for row in rows:
            line = render.progress_line(row)
            if seen.get(row.service) != line:
                seen[row.service] = line
                app.say(line)

    yield plain


@cli.command()
def down(
    ctx: typer.Context,
    json_output: JsonOption = False,
    volumes: Annotated[
        bool, typer.Option("--volumes", "-v", help="Also delete the database and Redis data.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before deleting data.")
    ] = False,
) -> None:
    """Stop the stack (every profile). With --volumes also delete its data (asks first)."""
    _app(ctx).json |= json_output

    def operation(app: App) -> Any:
        if app.attached:
            raise UsageError("down manages a stack movieops runs; drop --api-url/--redis-url")
        if volumes and not yes:
            if not _interactive(app):
                raise UsageError(
                    "refusing to delete data without confirmation",
                    hint="add --yes to delete the volumes non-interactively",
                )
            if not typer.confirm("Delete the database and Redis data?", default=False, err=True):
                raise UsageError("nothing deleted")
        runtime = app.runtime()
        done = runtime.stop(volumes)
        (app.state_dir / RUNTIME_FILE).unlink(missing_ok=True)
        return {"runtime": runtime.name, "done": done}

    def show(app: App, result: dict[str, Any]) -> None:
        for line in result["done"]:
            app.err.print(line)

    _run(ctx, "down", operation, show)


@cli.command()
def status(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every service: state, health, restarts, uptime, URL."""
    _app(ctx).json |= json_output

    def operation(app: App) -> list[ServiceState]:
        if app.attached:
            endpoints = app.endpoints()
            probes = run_probes(endpoints, app.stack.worker_health_check_seconds)
            by_name = {p.name.split()[0]: p for p in probes}
            return [
                ServiceState(
                    name,
                    "running" if by_name[name].ok else "unreachable",
                    url=url,
                    detail=by_name[name].detail,
                )
                for name, url in [
                    ("api", endpoints.api_url),
                    ("redis", redact_url(endpoints.redis_url)),
                    ("worker", None),
                ]
            ]
        return app.runtime().status()

    def show(app: App, states: list[ServiceState]) -> None:
        title = "attached stack" if app.attached else f"{app.runtime().name} runtime"
        app.out.print(render.status_table(states, title))

    _run(ctx, "status", operation, show)


@cli.command()
def health(
    ctx: typer.Context,
    json_output: JsonOption = False,
    wait: Annotated[bool, typer.Option(help="Wait until every probe passes.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds --wait waits.")] = 60,
) -> None:
    """Probe the stack: API /health and /ready, Redis PING, worker heartbeat, the proxy route.

    Exits 5 if any probe fails (after --timeout with --wait), with the reason for each.
    """
    _app(ctx).json |= json_output

    def operation(app: App) -> Any:
        endpoints = app.endpoints()
        deadline = time.monotonic() + timeout
        while True:
            probes = run_probes(endpoints, app.stack.worker_health_check_seconds)
            bad = [p for p in probes if not p.ok]
            if not bad:
                return probes
            if not wait and len(bad) == len(probes):
                raise NotRunning(
                    f"nothing answers at {endpoints.api_url} or {redact_url(endpoints.redis_url)}",
                    hint="start the stack with `movieops up` (or check --api-url/--redis-url)",
                    data=probes,
                )
            if not wait or time.monotonic() >= deadline:
                if not app.json:
                    app.out.print(render.probes_table(probes))
                raise Unhealthy(
                    f"{len(bad)} probe(s) failing: "
                    + "; ".join(f"{p.name}: {p.detail}" for p in bad),
                    hint="`movieops status` and `movieops logs` show why",
                    data=probes,
                )
            time.sleep(0.5)

    _run(ctx, "health", operation, lambda app, probes: app.out.print(render.probes_table(probes)))


@cli.command()
def logs(
    ctx: typer.Context,
    services: Annotated[list[str] | None, typer.Argument(help="Services (default: all).")] = None,
    json_output: JsonOption = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int | None, typer.Option(min=1, help="Only the last N lines.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only lines newer than 10m, 2h … or an ISO time.")
    ] = None,
) -> None:
    """Service logs (to stdout), optionally followed."""
    app = _app(ctx)
    app.json |= json_output

    def operation(app: App) -> Any:
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

    _run(ctx, "logs", operation)


# --- operating -------------------------------------------------------------------------------


@cli.command("rate-limits")
def rate_limits(
    ctx: typer.Context,
    json_output: JsonOption = False,
    client: Annotated[
        str | None, typer.Option(help="Only this client (IP; an IPv6 one means its /64).")
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(help="Only this route: a template (/movies/{movie_id}) or a path on it."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="The limit to compare with (default: settings).")
    ] = None,
    watch: Annotated[bool, typer.Option(help="Refresh every --interval seconds.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 1.0,
    count: Annotated[
        int | None, typer.Option(min=1, help="With --watch: stop after this many refreshes.")
    ] = None,
    reset: Annotated[
        bool, typer.Option(help="Delete every counter of --client (lifts its limit now).")
    ] = False,
) -> None:
    """Every rate:* counter (via SCAN, never KEYS): client, route, count, limit, remaining, reset.

    Busiest first. --watch shows a live view; --reset --client IP clears one client.
    """
    _app(ctx).json |= json_output
    if path is not None and not path.startswith("/"):
        raise typer.BadParameter("a path starts with /", param_hint="--path")

    def operation(app: App) -> Any:
        url = app.endpoints().redis_url
        configured = limit or app.stack.rate_limit_per_minute
        try:
            with redis_client(url) as redis:
                redis.ping()
                if reset:
                    if not client:
                        raise UsageError("--reset needs --client", hint="e.g. --client 172.30.57.1")
                    return {"client": client, "deleted": ratelimits.reset_client(redis, client)}
                if not watch:
                    return ratelimits.read_counters(redis, configured, client, path)
                return _watch(
                    app, lambda: ratelimits.read_counters(redis, configured, client, path)
                )
        except (OSError, RedisError) as exc:
            raise NotRunning(
                f"cannot reach Redis at {redact_url(url)}: {exc}",
                hint="start the stack with `movieops up`, or pass --redis-url",
            ) from None

    def _watch(app: App, read: Callable[[], list[ratelimits.Counter]]) -> Any:
        snapshots = 0
        if sys.stdout.isatty() and not app.json:
            with Live(console=app.out, refresh_per_second=4) as live:
                while count is None or snapshots < count:
                    live.update(render.counters_table(read()))
                    snapshots += 1
                    time.sleep(interval)
            return SHOWN
        last: list[ratelimits.Counter] = []
        while count is None or snapshots < count:
            last = read()
            if app.json:
                print(dumps(envelope("rate-limits", last)), flush=True)
            else:
                app.out.print(render.counters_table(last))
            snapshots += 1
            if count is None or snapshots < count:
                time.sleep(interval)
        return SHOWN

    def show(app: App, result: Any) -> None:
        if isinstance(result, dict):
            app.out.print(f"deleted {result['deleted']} counter(s) of {result['client']}")
        elif result is not None:
            app.out.print(render.counters_table(result))

    _run(ctx, "rate-limits", operation, show)


@cli.command()
def refresh(
    ctx: typer.Context,
    user: Annotated[int, typer.Option("--user", min=1, max=MAX_DB_ID, help="User id.")],
    json_output: JsonOption = False,
    wait: Annotated[bool, typer.Option(help="Wait for the outcome.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds --wait waits.")] = 30,
    force: Annotated[bool, typer.Option(help="Run again even if a refresh just finished.")] = False,
) -> None:
    """Refresh a user's recommendations now (the same job and id scheme as the API).

    Says what happened: enqueued, already queued, in progress, or done recently. --wait shows the
    outcome (exit 7 if the job failed, 8 on timeout).
    """
    _app(ctx).json |= json_output

    def operation(app: App) -> Any:
        url = app.endpoints().redis_url
        outcome = asyncio.run(jobs.refresh(url, user, force))
        if not wait or outcome.action is jobs.RefreshAction.DONE_RECENTLY:
            return outcome
        if not app.json:
            render.print_refresh(app.err, outcome)
        job = asyncio.run(jobs.wait_for(url, outcome.job_id, timeout))
        return jobs.RefreshOutcome(outcome.user_id, outcome.job_id, outcome.action, job)

    def show(app: App, outcome: jobs.RefreshOutcome) -> None:
        if wait and outcome.action is not jobs.RefreshAction.DONE_RECENTLY:
            render.print_job(app.out, outcome.job)
        else:
            render.print_refresh(app.out, outcome)

    _run(ctx, "refresh", operation, show)


@jobs_cli.command("ls")
def jobs_ls(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Queued, running and finished jobs with tries, times, result or error."""
    _app(ctx).json |= json_output
    _run(
        ctx,
        "jobs ls",
        lambda app: asyncio.run(jobs.list_jobs(app.endpoints().redis_url)),
        lambda app, result: app.out.print(render.jobs_table(result)),
    )


@jobs_cli.command("show")
def jobs_show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id, e.g. refresh:42.")],
    json_output: JsonOption = False,
) -> None:
    """One job in full (exit 9 if no such job is known)."""
    import re

    _app(ctx).json |= json_output
    if not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise typer.BadParameter("letters, digits and : _ . - only", param_hint="JOB_ID")

    def operation(app: App) -> Any:
        job = asyncio.run(jobs.show_job(app.endpoints().redis_url, job_id))
        if job.state.value == "not_found":
            raise NotRunning(
                f"no job {job_id} (never queued, or its result expired)",
                hint="`movieops jobs ls` lists the known jobs",
                next_command="movieops jobs ls",
            )
        return job

    _run(ctx, "jobs show", operation, lambda app, job: render.print_job(app.out, job))


@cli.command("contract")
def contract_command(
    ctx: typer.Context,
    json_output: JsonOption = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Run against the stack's own API (creates and deletes films there) instead of "
            "a disposable instance.",
        ),
    ] = False,
    checks: Annotated[str, typer.Option(help="Schemathesis checks (comma-separated).")] = "all",
    max_examples: Annotated[int, typer.Option(min=1, help="Examples per operation.")] = 50,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Concurrent workers.")] = 2,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            help="JUnit report directory (default .movieops/reports/contract; the last 10 kept)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="With --live: the rate-limit exemption secret (default: MOVIEOPS_CONTRACT_TOKEN, "
            "else the one `movieops up` made; prefer the variable, argv shows in `ps`)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Schemathesis seed, to reproduce a run.")] = None,
    schema_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the API and its schema.")
    ] = 60,
    timeout: Annotated[
        float, typer.Option(min=1, help="Stop the run (exit 6) after this many seconds.")
    ] = 900,
) -> None:
    """Run Schemathesis: every check, all four phases, JUnit report (exit 6 on failures).

    By default against a disposable API this command starts and removes (its own SQLite,
    its own valkey-server, the demo catalog), so your stack's data is never touched. --live runs
    against the stack's API instead, presenting its exemption secret (X-RateLimit-Exempt), so the
    run is not throttled while ordinary clients keep the 20/minute limit.
    """
    _app(ctx).json |= json_output

    def operation(app: App) -> Any:
        if not live:
            if app.api_url:
                raise UsageError(
                    "--api-url with contract needs --live (the run creates and deletes films)",
                    hint="add --live to run against that API, or drop --api-url for a "
                    "disposable instance",
                )
            if token is not None:
                raise UsageError(
                    "--token applies to --live only (a disposable instance has its own secret)",
                    hint="add --live, or drop --token",
                )
        report = report_dir or app.state_dir / "reports" / "contract"
        options: dict[str, Any] = {
            "checks": checks,
            "max_examples": max_examples,
            "workers": workers,
            "report_dir": report,
            "schema_timeout": schema_timeout,
            "seed": seed,
            "on_output": app.say,
            "timeout": timeout,
        }
        if not live:
            from movieops.sandbox import disposable_api

            app.say("starting a disposable API for the run (own database and Redis)")
            with _github_group("movieops contract"), disposable_api(schema_timeout) as sandbox:
                return contract.run_contract(
                    sandbox.api_url, token=sandbox.token, isolated=True, **options
                )
        secret = token or app.cli_settings.contract_token or contract.read_token(app.state_dir)
        if secret is None:
            app.say("no exemption secret: the run will meet the rate limit (mostly 429s)")
        with _github_group("movieops contract"):
            return contract.run_contract(app.endpoints().api_url, token=secret, **options)

    def show(app: App, result: contract.ContractResult) -> None:
        where = "a disposable API" if result.isolated else result.schema_url
        app.out.print(
            f"[green]contract holds[/green]: {where} in {result.seconds:g}s; "
            f"JUnit report {result.junit or result.report_dir}"
        )

    _run(ctx, "contract", operation, show)


@cli.command()
def doctor(
    ctx: typer.Context,
    json_output: JsonOption = False,
    proxy: Annotated[bool, typer.Option(help="Check for the proxy profile too.")] = False,
) -> None:
    """The preflight checks on their own, each with a one-line fix (exit 4 if any fails)."""
    _app(ctx).json |= json_output

    def operation(app: App) -> Any:
        from movieops.runtime import Check

        checks = [
            Check(
                "python",
                sys.version_info >= (3, 11),
                sys.version.split()[0],
                "install Python 3.11 or newer",
            )
        ]
        checks.append(Check("settings", True, "MOVIE_* and MOVIEOPS_* are valid"))
        _ = app.stack  # raises ConfigError on invalid settings
        problem = docker_problem()
        checks.append(
            Check(
                "docker",
                True,
                problem or "engine and Compose plugin answer",
                "optional: without Docker, movieops uses the embedded local runtime"
                if problem
                else None,
            )
        )
        runtime = app.runtime()
        checks.extend(runtime.preflight(UpOptions(proxy=proxy)))
        bad = failing(checks)
        if bad:
            if not app.json:
                app.out.print(render.checks_table(checks))
            raise PreflightFailed(
                f"{len(bad)} check(s) failed: {bad[0].detail}", hint=bad[0].fix, data=checks
            )
        return checks

    _run(ctx, "doctor", operation, lambda app, checks: app.out.print(render.checks_table(checks)))


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
