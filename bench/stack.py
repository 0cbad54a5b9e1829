"""Time-to-healthy of the whole stack: ``movieops up --runtime local``, and with Docker
``docker compose up -d --wait`` and ``movieops up --runtime compose``.

Each start-up gets its own free ports (and, for Compose, its own project name and subnet), so it
never touches a stack someone else runs on this machine; each one is torn down with its volumes,
even when the measurement fails.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import ROOT
from bench.procs import clean_env, free_port, run_command

APP_IMAGE = "movieops-app:local"
UP_TIMEOUT_S = 180


@dataclass(frozen=True)
class StartupTiming:
    """One start-up measurement, or why it was skipped or failed."""

    name: str
    status: str  # "measured", "skipped" or "failed"
    seconds: float | None = None
    reported_seconds: float | None = None
    detail: str = ""


def _movieops() -> str | None:
    candidate = Path(sys.executable).with_name("movieops")
    return str(candidate) if candidate.exists() else shutil.which("movieops")


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit status {done.returncode}"


def _reported_seconds(stdout: str) -> float | None:
    """``data.seconds`` of movieops's JSON envelope, when there is one."""
    try:
        return float(json.loads(stdout)["data"]["seconds"])
    except (ValueError, KeyError, TypeError):
        return None


def _ready(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _timed_up(
    name: str,
    up: Sequence[str],
    down: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    api_url: str,
    again: list[StartupTiming] | None = None,
) -> StartupTiming:
    """Run ``up`` (which returns once the stack is healthy), check /ready, always run ``down``.

    ``again``: also time a second ``up`` on the healthy stack (a no-op) and append it there.
    """
    try:
        started = time.perf_counter()
        try:
            done = run_command(up, env=env, cwd=cwd, timeout=UP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return StartupTiming(name, "failed", detail=f"not healthy within {UP_TIMEOUT_S}s")
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            return StartupTiming(name, "failed", detail=_last_line(done))
        if not _ready(api_url):
            return StartupTiming(name, "failed", seconds, detail=f"{api_url}/ready is not 200")
        if again is not None:
            again.append(_timed_noop(f"{name} (already healthy)", up, env=env, cwd=cwd))
        return StartupTiming(name, "measured", seconds, _reported_seconds(done.stdout))
    finally:
        try:
            run_command(down, env=env, cwd=cwd, timeout=120)
        except subprocess.TimeoutExpired:
            print(f"warning: `{' '.join(down)}` took over 120s", file=sys.stderr)


def _timed_noop(name: str, up: Sequence[str], *, env: dict[str, str], cwd: Path) -> StartupTiming:
    """``up`` once more on a stack that is already healthy: the whole command's wall time."""
    started = time.perf_counter()
    done = run_command(up, env=env, cwd=cwd, timeout=UP_TIMEOUT_S)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return StartupTiming(name, "failed", seconds, detail=_last_line(done))
    return StartupTiming(name, "measured", seconds, _reported_seconds(done.stdout))


def time_local_up(work_dir: Path, again: list[StartupTiming] | None = None) -> StartupTiming:
    """``movieops up --runtime local`` in a scratch project directory, then ``down -v``."""
    name = "movieops up --runtime local"
    movieops = _movieops()
    if movieops is None:
        return StartupTiming(name, "skipped", detail="the movieops command is not installed")
    project = work_dir / "local-stack"
    project.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    env = clean_env(
        {"MOVIE_PORT": str(api_port), "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    )
    base = [movieops, "--runtime", "local", "--project-dir", str(project)]
    return _timed_up(
        name,
        [*base, "--json", "up", "--timeout", "120"],
        [*base, "down", "--volumes", "--yes"],
        env=env,
        cwd=project,
        api_url=f"http://127.0.0.1:{api_port}",
        again=again,
    )


def docker_problem() -> str | None:
    """Why the Compose measurements cannot run here, or None when they can."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        info = run_command(["docker", "info"], timeout=30)
        if info.returncode != 0:
            return f"no Docker engine answers `docker info` ({_last_line(info)})"
        compose = run_command(["docker", "compose", "version"], timeout=30)
        if compose.returncode != 0:
            return f"the Docker Compose plugin does not work ({_last_line(compose)})"
        image = run_command(["docker", "image", "inspect", APP_IMAGE], timeout=30)
    except subprocess.TimeoutExpired:
        return "docker did not answer within 30s"
    if image.returncode != 0:
        return (
            f"the image {APP_IMAGE} is not built, and the benchmark times start-up, not builds "
            "(build it once with `docker compose build`)"
        )
    return None


def _compose_env(api_port: int) -> dict[str, str]:
    """Free ports and a subnet of their own, so the stack cannot collide with another one."""
    octet = random.randint(100, 250)
    return clean_env(
        {
            "MOVIE_API_PORT": str(api_port),
            "MOVIE_PROXY_PORT": str(free_port()),
            "MOVIE_REDIS_PORT": str(free_port()),
            "MOVIE_NETWORK_SUBNET": f"172.30.{octet}.0/24",
            "MOVIE_PROXY_ADDRESS": f"172.30.{octet}.10",
        }
    )


def time_compose_up() -> StartupTiming:
    """``docker compose up -d --wait`` of the existing image, in a throw-away project."""
    name = "docker compose up -d --wait"
    api_port = free_port()
    env = _compose_env(api_port)
    # Plain Compose needs the Redis password `movieops up` would generate (it reaches the
    # containers through the environment, never argv); a fresh one per run.
    env["MOVIE_REDIS_PASSWORD"] = secrets.token_hex(24)
    project = f"movieops-bench-{uuid.uuid4().hex[:6]}"
    base = [
        "docker", "compose", "-p", project, "-f", str(ROOT / "compose.yaml"),
        "--project-directory", str(ROOT),
    ]  # fmt: skip
    return _timed_up(
        name,
        [*base, "up", "-d", "--wait", "--wait-timeout", "120", "--no-build"],
        [*base, "down", "--volumes", "--remove-orphans"],
        env=env,
        cwd=ROOT,
        api_url=f"http://127.0.0.1:{api_port}",
    )


def time_movieops_compose_up(work_dir: Path) -> StartupTiming:
    """``movieops up --runtime compose`` (existing image), then ``down -v``, in its own project."""
    name = "movieops up --runtime compose"
    movieops = _movieops()
    if movieops is None:
        return StartupTiming(name, "skipped", detail="the movieops command is not installed")
    api_port = free_port()
    env = _compose_env(api_port)
    env.update(
        {
            "MOVIEOPS_COMPOSE_PROJECT": f"movieops-bench-{uuid.uuid4().hex[:6]}",
            "MOVIEOPS_API_PORT": env["MOVIE_API_PORT"],
            "MOVIEOPS_PROXY_PORT": env["MOVIE_PROXY_PORT"],
            "MOVIEOPS_REDIS_PORT": env["MOVIE_REDIS_PORT"],
            "MOVIEOPS_STATE_DIR": str(work_dir / "compose-state"),
        }
    )
    base = [movieops, "--runtime", "compose", "--project-dir", str(ROOT)]
    return _timed_up(
        name,
        [*base, "--json", "up", "--timeout", "120"],
        [*base, "down", "--volumes", "--yes"],
        env=env,
        cwd=work_dir,
        api_url=f"http://127.0.0.1:{api_port}",
    )


def measure_startups(
    work_dir: Path, *, compose: bool, skip_reason: str = ""
) -> list[StartupTiming]:
    """Every start-up measurement this machine allows, in order."""
    noop: list[StartupTiming] = []
    timings = [time_local_up(work_dir, again=noop), *noop]
    names = ("docker compose up -d --wait", "movieops up --runtime compose")
    if not compose:
        return timings + [StartupTiming(n, "skipped", detail=skip_reason) for n in names]
    problem = docker_problem()
    if problem is not None:
        return timings + [StartupTiming(n, "skipped", detail=problem) for n in names]
    return [*timings, time_compose_up(), time_movieops_compose_up(work_dir)]
