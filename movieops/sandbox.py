"""A disposable instance of the API for `movieops contract`, started and removed by the run.

A contract run creates, replaces and deletes films and writes junk through every endpoint, so by
default it never meets the user's stack: it gets an API of its own (``python -m app`` with this
interpreter, on a free 127.0.0.1 port), a fresh SQLite database seeded with the demo catalog, and
its own embedded valkey-server (no persistence), all under one private temporary directory that
is deleted afterwards. The instance accepts a fresh per-run exemption secret, so the run is not
throttled; nothing about it depends on which runtime (local, compose or none) the stack uses.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from movieops.embedded import EmbeddedValkeyError, ValkeyServer
from movieops.errors import PreflightFailed
from movieops.migration import run_migration_step
from movieops.probes import http_problem
from movieops.secrets import private_dir, redact, redact_urls_in
from movieops.waiting import wait_until

LOG_TAIL_LINES = 20
REDIS_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class Sandbox:
    """Where the disposable API answers, and the secret that exempts the run from its limit."""

    api_url: str
    token: str
    workdir: Path
    redis_url: str  # holds the disposable Redis's own password


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_env(
    base: Mapping[str, str], *, port: int, database: Path, redis_url: str, token: str
) -> dict[str, str]:
    """The disposable API's environment (pure): ``base`` without any MOVIE_* setting, plus ours.

    The user's MOVIE_* variables are dropped so none of them (a database URL above all) can point
    the instance at real data; the working directory is the temporary one, so no .env is read.
    """
    env = {name: value for name, value in base.items() if not name.startswith("MOVIE_")}
    env.update(
        {
            "MOVIE_HOST": "127.0.0.1",
            "MOVIE_PORT": str(port),
            "MOVIE_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "MOVIE_REDIS_URL": redis_url,
            "MOVIE_RATE_LIMIT_EXEMPT_TOKENS": token,
            "MOVIE_READY_REQUIRES_WORKER": "false",
            "MOVIE_SEED_DEMO_DATA": "true",
            "MOVIE_LOG_LEVEL": "WARNING",
            # The instance's Redis is its own and local: a slow answer only means a saturated
            # machine (CI, parallel jobs). With the request-path default of 100 ms such a stall
            # turns into a documented 503 "Redis unavailable", which Schemathesis reports as a
            # server error: the gate would flake on load, not on the contract.
            "MOVIE_REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
            "MOVIE_REDIS_CONNECT_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
        }
    )
    return env


def _log_tail(path: Path, hidden: list[str]) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return ""
    return redact_urls_in(redact("\n".join(lines), hidden))


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    last = "no answer"

    def ready() -> bool | None:
        nonlocal last
        if process.poll() is not None:
            raise PreflightFailed(
                f"the disposable API exited with code {process.returncode} before it was ready",
                hint=_log_tail(log, []) or "run `python -m app` to see why it does not start",
            )
        last = http_problem(f"{url}/ready") or ""
        return None if last else True

    wait_until(
        ready, within=timeout, interval=0.2, error=lambda: _not_ready(url, log, timeout, last)
    )


def _not_ready(url: str, log: Path, timeout: float, last: str) -> PreflightFailed:
    return PreflightFailed(
        f"the disposable API at {url} was not ready within {timeout:g}s ({last})",
        hint="raise --schema-timeout; its log: " + (_log_tail(log, []) or "(empty)"),
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def disposable_api(timeout: float = 60) -> Iterator[Sandbox]:
    """Start a throw-away API (own SQLite, own valkey-server, fresh secret); remove it after."""
    workdir = private_dir(Path(tempfile.mkdtemp(prefix="movieops-contract-")))
    token = secrets.token_hex(24)
    # Its own password too: no Redis this project starts ever answers without one.
    valkey = ValkeyServer(
        free_port(), workdir / "valkey", persistent=False, password=secrets.token_hex(24)
    )
    process: subprocess.Popen[bytes] | None = None
    try:
        try:
            valkey.start()
        except EmbeddedValkeyError as exc:
            raise PreflightFailed(
                f"the disposable Redis did not start: {exc}",
                hint="`movieops doctor` checks the embedded valkey-server",
            ) from None
        port = free_port()
        env = api_env(
            os.environ,
            port=port,
            database=workdir / "movies.db",
            redis_url=valkey.url,
            token=token,
        )
        run_migration_step(env, workdir)
        log = workdir / "api.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, process, log, timeout)
        yield Sandbox(url, token, workdir, valkey.url)
    finally:
        if process is not None:
            _stop(process)
        valkey.stop()
        shutil.rmtree(workdir, ignore_errors=True)
