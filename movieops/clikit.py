"""The CLI's plumbing: global options, the per-invocation App, and running a command (render its
result, or turn its error into one line and an exit code). Commands live in movieops.cli."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from movieops.errors import MovieOpsError
from movieops.output import dumps, envelope

if TYPE_CHECKING:
    # Type names only: each of these pulls in pydantic, Redis, HTTP or a runtime, which
    # `--help` never needs. The code below imports them where it uses them.
    from rich.console import RenderableType

    from app.config import Settings
    from movieops.runtime import Endpoints, Runtime
    from movieops.settings import CliSettings
    from movieops.stack import ServiceProgress

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., None])


class Shown:
    """Returned by an operation that already printed its output (watch loops, streams)."""


SHOWN = Shown()


@dataclass
class Options:
    """The global options as typed, before the subcommand or after it (after wins)."""

    json: bool = False
    runtime: str | None = None
    api_url: str | None = None
    redis_url: str | None = None
    project_dir: Path | None = None

    def merged(self, later: Options) -> Options:
        """These options overridden by the ones given after the subcommand."""
        return Options(
            self.json or later.json,
            later.runtime or self.runtime,
            later.api_url or self.api_url,
            later.redis_url or self.redis_url,
            later.project_dir or self.project_dir,
        )


@dataclass
class App:
    """Per-invocation options and consoles, built once the command line is fully read."""

    json: bool
    cli_settings: CliSettings
    project_dir: Path
    api_url: str | None
    redis_url: str | None
    out: Console = field(default_factory=Console)
    err: Console = field(default_factory=lambda: Console(stderr=True))
    _stack: Settings | None = None
    _runtime: Runtime | None = None

    @property
    def state_dir(self) -> Path:
        """Where local state, tokens and reports live."""
        from movieops.settings import state_dir_of

        return state_dir_of(self.cli_settings, self.project_dir)

    @property
    def stack(self) -> Settings:
        """The stack's MOVIE_* settings (read on first use)."""
        if self._stack is None:
            from movieops.settings import load_stack_settings

            self._stack = load_stack_settings()
        return self._stack

    @property
    def attached(self) -> bool:
        """Whether --api-url/--redis-url point at a stack movieops did not start."""
        return bool(self.api_url or self.redis_url)

    def say(self, message: str) -> None:
        """Progress for people, always on stderr."""
        self.err.print(message, highlight=False)

    def runtime(self, token: str | None = None) -> Runtime:
        """The runtime (built once); ``token`` defaults to the secret `up` made, if any."""
        if self._runtime is None:
            from movieops import contract
            from movieops.runtime.selection import select_runtime

            self._runtime = select_runtime(
                self.cli_settings,
                project_dir=self.project_dir,
                state_dir=self.state_dir,
                stack=lambda: self.stack,
                token=token or contract.read_token(self.state_dir),
                say=self.say,
            )
        return self._runtime

    def endpoints(self) -> Endpoints:
        """Where the stack answers: --api-url/--redis-url, else the runtime's."""
        if self.attached:
            from movieops.runtime.selection import attached_endpoints

            return attached_endpoints(
                self.cli_settings, self.api_url, self.redis_url, lambda: self.runtime().endpoints()
            )
        return self.runtime().endpoints()


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON envelope on stdout (progress on stderr).")
]
RuntimeOption = Annotated[
    str | None,
    typer.Option(
        "--runtime",
        help="auto (compose if Docker answers, else local), compose, swarm or local.",
        show_default="auto",
    ),
]
ApiUrlOption = Annotated[str | None, typer.Option(help="Attach to the API at this URL instead.")]
RedisUrlOption = Annotated[str | None, typer.Option(help="Attach to Redis at this URL instead.")]
ProjectDirOption = Annotated[
    Path | None, typer.Option(help="The project (compose.yaml, .movieops/).", show_default="cwd")
]
_GLOBALS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
    for name, kind, default in [
        ("json_output", JsonOption, False),
        ("runtime", RuntimeOption, None),
        ("api_url", ApiUrlOption, None),
        ("redis_url", RedisUrlOption, None),
        ("project_dir", ProjectDirOption, None),
    ]
]


def command(group: typer.Typer, name: str | None = None) -> Callable[[F], F]:
    """Register a command that also takes the global options after its name."""

    def register(function: F) -> F:
        @functools.wraps(function)
        def with_globals(*args: Any, **kwargs: Any) -> None:
            later = Options(*(kwargs.pop(p.name) for p in _GLOBALS))
            ctx: typer.Context = kwargs["ctx"]
            ctx.obj = (ctx.obj or Options()).merged(later)
            function(*args, **kwargs)

        signature = inspect.signature(function, eval_str=True)
        with_globals.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), *_GLOBALS]
        )
        with_globals.__annotations__ = {
            **typing.get_type_hints(function, include_extras=True),
            **{p.name: p.annotation for p in _GLOBALS},
        }
        group.command(name)(with_globals)
        return function

    return register


def app_of(ctx: typer.Context) -> App:
    """The App for the options typed; an invalid MOVIEOPS_* setting fails the command here."""
    options: Options = ctx.obj or Options()
    project = (options.project_dir or Path()).resolve()
    command_name = ctx.command_path.split(" ", 1)[-1]
    from movieops.settings import CliSettings, load_cli_settings

    try:
        settings = load_cli_settings(runtime=options.runtime)
    except MovieOpsError as exc:
        # The defaults, without reading the (invalid) environment again: only to report.
        defaults = CliSettings.model_construct()
        app = App(options.json, defaults, project, options.api_url, options.redis_url)
        raise fail(app, command_name, exc) from None
    return App(
        options.json,
        settings,
        project,
        options.api_url or settings.api_url,
        options.redis_url or settings.redis_url,
    )


def interactive(app: App) -> bool:
    return not app.json and sys.stderr.isatty() and sys.stdin.isatty()


@contextmanager
def github_group(title: str) -> Iterator[None]:
    """Collapse long progress into a group on GitHub Actions."""
    grouped = os.environ.get("GITHUB_ACTIONS") == "true"
    if grouped:
        print(f"::group::{title}", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if grouped:
            print("::endgroup::", file=sys.stderr, flush=True)


def run(
    ctx: typer.Context,
    command: str,
    operation: Callable[[App], T],
    show: Callable[[App, T], None] | None = None,
) -> T:
    """Run an operation: render its result, or turn its error into one line and an exit code."""
    app = app_of(ctx)
    try:
        result = operation(app)
    except typer.Exit:
        raise
    except MovieOpsError as exc:
        fail(app, command, exc)
    except KeyboardInterrupt:
        app.say("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if os.environ.get("MOVIEOPS_DEBUG"):
            raise
        fail(
            app,
            command,
            MovieOpsError(
                f"unexpected error: {type(exc).__name__}: {exc}",
                hint="re-run with MOVIEOPS_DEBUG=1 for the traceback, and report it",
            ),
        )
    if isinstance(result, Shown):
        return result
    if app.json:
        print(dumps(envelope(command, result)))
    elif show is not None:
        show(app, result)
    return result


def fail(app: App, command: str, exc: MovieOpsError) -> typer.Exit:
    if app.json:
        print(dumps(envelope(command, error=exc)))
    else:
        from movieops import render

        render.print_error(app.err, exc)
    raise typer.Exit(int(exc.exit_code))


@contextmanager
def progress_display(app: App) -> Iterator[Callable[[list[ServiceProgress]], None]]:
    """A live table on a terminal; one line per change otherwise (CI, --json)."""
    from movieops import render

    if sys.stderr.isatty() and not app.json:
        from rich.live import Live

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


def show_snapshots(
    app: App, command: str, snapshots: Iterator[T], view: Callable[[T], RenderableType]
) -> None:
    """A live view on a terminal; else one rendering (or envelope) per snapshot."""
    if sys.stdout.isatty() and not app.json:
        from rich.live import Live

        with Live(console=app.out, refresh_per_second=4) as live:
            for snapshot in snapshots:
                live.update(view(snapshot))
        return
    for snapshot in snapshots:
        if app.json:
            print(dumps(envelope(command, snapshot)), flush=True)
        else:
            app.out.print(view(snapshot))
