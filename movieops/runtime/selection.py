"""Which runtime runs the stack: as asked, as `up` last used, or detected; and remembering it.

The one place that builds a runtime. Every input (settings, directories, the contract's
exemption secret) is given at construction, so a runtime is ready the moment it is returned.
Each runtime module is imported only when it is chosen: the compose one brings python-on-whales,
the local one supervisor and valkey.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from movieops.dockerhost import engine_unreachable
from movieops.errors import DockerUnavailable, MovieOpsError
from movieops.runtime import Endpoints, Runtime

if TYPE_CHECKING:
    from app.config import Settings
    from movieops.settings import CliSettings

RUNTIME_FILE = "runtime"


def docker_problem() -> str | None:
    """Why the compose runtime cannot be used here, or None when it can.

    A Docker socket that is missing or refuses is told at once, without starting the docker
    CLI; anything else is asked of Docker itself (`docker info` and the Compose plugin).
    """
    problem = engine_unreachable()
    if problem is not None:
        return problem
    from movieops.whales import docker_problem as ask_docker

    return ask_docker()


def choose(
    asked: str, project_dir: Path, state_dir: Path, say: Callable[[str], None]
) -> tuple[str, bool]:
    """compose, swarm or local: ``asked`` unless auto, then the one `up` remembered, else
    detected (never swarm: deploying to a swarm is always asked for);
    and whether Docker was just found working (so nobody needs to ask it again)."""
    if asked != "auto":
        return asked, False
    saved = state_dir / RUNTIME_FILE
    if saved.exists():
        return saved.read_text().strip(), False
    problem = (
        docker_problem() if (project_dir / "compose.yaml").exists() else "no compose.yaml here"
    )
    choice = "local" if problem else "compose"
    say(f"runtime: {choice} ({problem or 'a Docker engine with Compose answers'})")
    return choice, problem is None


def select_runtime(
    settings: CliSettings,
    *,
    project_dir: Path,
    state_dir: Path,
    stack: Callable[[], Settings],
    token: str | None,
    say: Callable[[str], None],
) -> Runtime:
    """A ready runtime for the CLI's settings; ``token`` is the API's rate-limit exemption secret.

    ``stack`` loads the MOVIE_* settings, only when the local runtime needs them. Raises
    DockerUnavailable when compose is asked for (or remembered) and no engine answers.
    """
    choice, docker_checked = choose(settings.runtime, project_dir, state_dir, say)
    if choice == "swarm":
        from movieops.runtime.swarm import SwarmRuntime

        problem = engine_unreachable()  # the rest (a swarm manager?) is up's preflight
        if problem:
            raise DockerUnavailable(
                f"the swarm runtime needs Docker: {problem}",
                hint="start Docker, or use --runtime local (the embedded runtime)",
            )
        return SwarmRuntime(
            project_dir, settings.swarm_stack, state_dir, settings.proxy_port, token=token
        )
    if choice == "compose":
        problem = None if docker_checked else docker_problem()
        if problem:
            raise DockerUnavailable(
                f"the compose runtime needs Docker: {problem}",
                hint="start Docker, or use --runtime local (the embedded runtime)",
            )
        from movieops.runtime.compose import ComposeRuntime

        ports = (settings.api_port, settings.proxy_port, settings.redis_port)
        return ComposeRuntime(
            project_dir,
            settings.compose_project,
            state_dir,
            ports,
            token=token,
            postgres_port=settings.postgres_port,
            prometheus_port=settings.prometheus_port,
        )
    from movieops.runtime.local import LocalRuntime

    return LocalRuntime(stack(), state_dir, project_dir, token=token)


def remember_runtime(state_dir: Path, name: str) -> None:
    """Later commands in auto mode use the runtime `up` used."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / RUNTIME_FILE).write_text(name)


def forget_runtime(state_dir: Path) -> None:
    """After `down`, auto mode detects again."""
    (state_dir / RUNTIME_FILE).unlink(missing_ok=True)


def attached_endpoints(
    settings: CliSettings,
    api_url: str | None,
    redis_url: str | None,
    runtime_endpoints: Callable[[], Endpoints],
) -> Endpoints:
    """Where an attached stack answers: the given URLs, the other from the runtime if it can
    tell, else the published default ports."""
    default = Endpoints(
        f"http://127.0.0.1:{settings.api_port}", f"redis://127.0.0.1:{settings.redis_port}/0"
    )
    if not api_url or not redis_url:
        with suppress(MovieOpsError):
            default = runtime_endpoints()
    return Endpoints((api_url or default.api_url).rstrip("/"), redis_url or default.redis_url)
