"""Run the stack in the foreground on this machine: embedded valkey-server, the API, the worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.config import Settings
from movieops.embedded import EmbeddedValkeyError, ValkeyServer, redis_answers
from movieops.errors import PreflightError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class RedisPlan:
    """How the stack gets its Redis: an existing server, or an embedded one on ``port``."""

    url: str
    embedded_port: int | None


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def plan_redis(settings: Settings) -> RedisPlan:
    """Reuse a Redis that answers at the configured URL, else embed one if the URL is local."""
    if redis_answers(settings.redis_url):
        return RedisPlan(settings.redis_url, None)
    parts = urlsplit(settings.redis_url)
    if parts.hostname not in LOOPBACK:
        raise PreflightError(
            f"Redis at {settings.redis_url} does not answer",
            hint="start it, or unset MOVIE_REDIS_URL to use the embedded valkey-server",
        )
    port = parts.port or 6379
    if not port_is_free("127.0.0.1", port):
        raise PreflightError(
            f"port {port} is in use by something that is not Redis",
            hint="stop it, or set MOVIE_REDIS_URL=redis://127.0.0.1:<free port>/0",
        )
    return RedisPlan(settings.redis_url, port)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(settings: Settings, state_dir: Path) -> int:
    """Start what is missing, serve the API until Ctrl-C, then stop what was started."""
    if not port_is_free(settings.host, settings.port):
        raise PreflightError(
            f"API port {settings.host}:{settings.port} is already in use",
            hint="stop whatever holds it, or set MOVIE_PORT to a free port",
        )
    plan = plan_redis(settings)
    valkey = None
    if plan.embedded_port is not None:
        valkey = ValkeyServer(plan.embedded_port, state_dir / "valkey")
        try:
            valkey.start()
        except EmbeddedValkeyError as exc:
            raise PreflightError(str(exc)) from None
        print(f"embedded valkey-server on {valkey.url}", file=sys.stderr)
    base = f"http://{settings.host}:{settings.port}"
    print(f"API on {base}  (docs: {base}/docs)  — Ctrl-C stops the stack", file=sys.stderr)
    env = {**os.environ, "MOVIE_REDIS_URL": plan.url}
    api = subprocess.Popen([sys.executable, "-m", "app"], env=env)
    worker = subprocess.Popen([sys.executable, "-m", "app.worker"], env=env)
    # SIGTERM (e.g. from a process manager) stops the stack the same way as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return api.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for process in (worker, api):
            process.terminate()
        for process in (worker, api):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        if valkey is not None:
            valkey.stop()
