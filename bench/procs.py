"""Child processes of the benchmark: started in their own session, pinned to a CPU, always
stopped (SIGTERM to their process group, SIGKILL after a grace period), even on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

import httpx


class BenchError(Exception):
    """The benchmark cannot go on; the message says why (and what to do)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_pin() -> bool:
    """Whether this machine has the two CPUs the pinning scheme needs."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def pin_to(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``cpu`` before it execs (None: no pinning)."""
    if cpu is None or not can_pin():
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without any MOVIE_*/MOVIEOPS_* setting, plus ``extra``.

    PYTHONDONTWRITEBYTECODE is dropped too: with it (set on some CI machines) every process
    compiles every module it imports, which is not what a user's machine does and would make
    start-up figures measure the compiler.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MOVIE_", "MOVIEOPS_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(extra)
    return env


class Processes:
    """Owns every long-running child; ``stop_all`` (or leaving the ``with``) ends them all."""

    def __init__(self) -> None:
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        cpu: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new session with output to ``log``; pinned to ``cpu`` if given."""
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=pin_to(cpu),  # only sets the CPU affinity before exec
            )
        self._children.append((name, process))
        return process

    def stop(self, process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self._children = [(n, p) for n, p in self._children if p is not process]

    def stop_all(self) -> None:
        """Stop every child still owned, newest first."""
        for _name, process in reversed(list(self._children)):
            self.stop(process)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()


def wait_http(
    url: str,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> httpx.Response:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits (showing its log)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BenchError(f"{url}: the server exited ({process.returncode}){log_tail(log)}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f}s ({last}){log_tail(log)}")


def log_tail(log: Path | None, lines: int = 15) -> str:
    """The last lines of a log file, formatted to append to an error message."""
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n  " + "\n  ".join(tail) if tail else ""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the block, so cleanup runs on both."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion (bounded by ``timeout``), capturing its output."""
    return subprocess.run(  # noqa: S603 - fixed tools (wrk, docker, movieops) with our arguments
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
