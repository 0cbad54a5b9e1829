"""Real services for tests: a valkey-server process and a uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from app.config import Settings
from app.logs import RequestIdFilter
from app.worker import build_worker_settings, create_worker
from movieops.embedded import ValkeyServer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ValkeyProcess(ValkeyServer):
    """A throw-away embedded valkey-server on a free port (no persistence), with a password of
    its own like every Redis the stack runs: ``url`` carries it, and nothing talks to the server
    without it."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(
            port or free_port(),
            Path(tempfile.mkdtemp(prefix="valkey-test-")),
            persistent=False,
            password=secrets.token_hex(24),
        )


class ThreadedServer:
    """A real uvicorn HTTP server for ``app`` on a free port, in a background thread
    (``options``: more ``uvicorn.Config`` arguments, overriding the defaults here)."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            **{
                "host": "127.0.0.1",
                "port": self.port,
                "proxy_headers": False,
                "access_log": False,
                "log_config": None,
                "lifespan": "on",
                "limit_concurrency": 1000,
                "backlog": 1024,
                **options,
            },
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def running(self) -> Iterator[ThreadedServer]:
        """Serve for the duration of the block."""
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        try:
            yield self
        finally:
            self.server.should_exit = True
            self.thread.join(10)


def hourly_refresh_minute() -> str:
    """MOVIE_HOURLY_REFRESH_MINUTE half an hour from now: a test's stack started now never runs
    the hourly refresh unasked (a test crossing the top of the hour used to)."""
    return str((datetime.now(UTC).minute + 30) % 60)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a real worker process on the test's database and Redis."""
    return {
        **os.environ,
        "MOVIE_DATABASE_URL": settings.database_url,
        "MOVIE_REDIS_URL": settings.redis_url,
        "MOVIE_WORKER_HEALTH_CHECK_SECONDS": "1",
        "MOVIE_LOG_LEVEL": "INFO",
        "MOVIE_HOURLY_REFRESH_MINUTE": str(settings.hourly_refresh_minute),
        **extra,
    }


def start_worker(settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
    """The real Arq worker (`python -m app.worker`) as a process; the caller stops it."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.worker"],
        env=worker_env(settings, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_logged_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``start_worker`` with its log lines in ``log`` (to show why it ended)."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "app.worker"],
            env=worker_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


async def run_burst(settings: Settings, *, count_failed: bool = False) -> int:
    """Run the app's worker in-process until the queue is empty; return the jobs it completed
    (plus the ones that failed, with ``count_failed``)."""
    worker = create_worker(build_worker_settings(settings), burst=True, handle_signals=False)
    try:
        await worker.async_run()
    finally:
        await worker.close()
    return worker.jobs_complete + (worker.jobs_failed if count_failed else 0)


def assert_hardened(service: str, container: Any) -> None:
    """A compose container as every service of the stack runs: read-only root, every
    capability dropped, no-new-privileges, a memory and a pids limit, /tmp a tmpfs, not root."""
    host = container.host_config
    assert host.readonly_rootfs is True, service
    assert host.cap_drop == ["ALL"], service
    assert "no-new-privileges:true" in (host.security_opt or []), service
    assert (host.memory or 0) > 0, service
    assert (host.pids_limit or 0) > 0, service
    assert "/tmp" in {str(path) for path in host.tmpfs or {}}, service  # noqa: S108
    assert container.config.user not in {None, "", "0", "root"}, service


def captured_logs(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """What the processes' own root handler writes with ``formatter`` (and the request-id
    filter configure_logging adds), at INFO, for a fixture to ``yield from``."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield output
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
