"""The compose runtime: the stack in containers, driven through python-on-whales."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run

from movieops.errors import DockerUnavailable, PreflightFailed, Unhealthy
from movieops.ports import held_by_stack, holder_of, port_check, port_of
from movieops.runtime import (
    Check,
    Endpoints,
    MetricsTarget,
    ServiceState,
    UpOptions,
    replica_label,
)
from movieops.secrets import ensure_secret, private_dir, redact_url, write_private
from movieops.whales import (
    COMPOSE_FILE,
    METRICS_PORTS,
    POSTGRES_PASSWORD_FILE,
    REDIS_PASSWORD_FILE,
    docker_problem,
    docker_versions,
    health_lines,
)
from movieops.whales import first_line as _first_line

REPLICAS_FILE = "compose.replicas.yaml"
MODE_FILE = "compose-mode.json"
ENV_FILE = "compose.env"
DATABASES = ("sqlite", "postgres")
POSTGRES_USER = "movie"
POSTGRES_DB = "movie"
# What the containers use with the postgres profile (the password comes separately, as
# MOVIE_DATABASE_PASSWORD): the `postgres` service on the stack's own network.
POSTGRES_URL = f"postgresql+asyncpg://{POSTGRES_USER}@postgres:5432/{POSTGRES_DB}"
DEFAULT_POSTGRES_PORT = 5432
DEFAULT_PROMETHEUS_PORT = 9090
MONITORING_SERVICES = ("prometheus", "redis-exporter")
ONE_SHOT = frozenset({"migrate"})
REACH_TIMEOUT_SECONDS = 1.0
"""Services that run to completion: exited 0 is their healthy end ("done"), else "failed"."""


@dataclass
class ComposeMode:
    """What the last `up` asked for; later commands need it to know the endpoints."""

    proxy: bool = False
    replicas: int = 1
    database: str = "sqlite"
    monitoring: bool = False


def parse_ps(output: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json`: a JSON array or JSON lines, depending on version."""
    text = output.strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def compose_env(
    api_port: int,
    proxy_port: int,
    redis_port: int,
    token: str | None,
    redis_password: str | None = None,
    *,
    postgres_port: int = DEFAULT_POSTGRES_PORT,
    postgres_password: str | None = None,
    prometheus_port: int = DEFAULT_PROMETHEUS_PORT,
) -> dict[str, str]:
    """Variables the compose file interpolates (ports; the exemption token; Redis's password;
    with ``postgres_password``, the PostgreSQL database instead of the SQLite file)."""
    env = {
        "MOVIE_API_PORT": str(api_port),
        "MOVIE_PROXY_PORT": str(proxy_port),
        "MOVIE_REDIS_PORT": str(redis_port),
        "MOVIE_PROMETHEUS_PORT": str(prometheus_port),
    }
    if token:
        env["MOVIE_RATE_LIMIT_EXEMPT_TOKENS"] = token
    if redis_password:
        env["MOVIE_REDIS_PASSWORD"] = redis_password
    if postgres_password:
        env["MOVIE_POSTGRES_PORT"] = str(postgres_port)
        env["MOVIE_COMPOSE_DATABASE_URL"] = POSTGRES_URL
        env["MOVIE_POSTGRES_PASSWORD"] = postgres_password
    return env


def profiles_of(mode: ComposeMode) -> list[str]:
    """The compose profiles a mode starts."""
    return [
        *(["proxy"] if mode.proxy else []),
        *(["postgres"] if mode.database == "postgres" else []),
        *(["monitoring"] if mode.monitoring else []),
    ]


def service_state(row: dict[str, Any]) -> str:
    """A container's state as status shows it: a one-shot that exited 0 is "done", one that
    exited otherwise "failed"; every other container as Docker says."""
    state = str(row.get("State", "unknown"))
    if row.get("Service") in ONE_SHOT and state == "exited":
        return "done" if int(row.get("ExitCode") or 0) == 0 else "failed"
    return state


def container_address(networks: dict[str, Any] | None) -> str | None:
    """A container's IPv4 address on its (first) network, from `docker inspect`."""
    for network in (networks or {}).values():
        address = getattr(network, "ip_address", None)
        if address:
            return str(address)
    return None


def reachable(address: str, port: int, timeout: float = REACH_TIMEOUT_SECONDS) -> bool:
    """Whether a TCP connection to address:port opens from this host."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def targets_or_published(
    targets: list[MetricsTarget],
    reach: Callable[[str, int], bool],
    published: str,
) -> list[MetricsTarget]:
    """The containers' own targets when this host reaches the first API container, else the
    published API port as the one target, marked "via published port" (Docker Desktop)."""
    first = next((t for t in targets if t.service == "api"), None)
    if first is not None and reach(*port_of(first.url, 80)):
        return targets
    return [MetricsTarget("api", "api", published, note="via published port")]


class ComposeRuntime:
    """`docker compose` for the project's compose.yaml."""

    name = "compose"

    def __init__(
        self,
        project_dir: Path,
        project_name: str,
        state_dir: Path,
        ports: tuple[int, int, int],
        token: str | None = None,
        postgres_port: int = DEFAULT_POSTGRES_PORT,
        prometheus_port: int = DEFAULT_PROMETHEUS_PORT,
    ) -> None:
        self.project_dir = project_dir
        self.project_name = project_name
        self.state_dir = state_dir
        self.api_port, self.proxy_port, self.redis_port = ports
        self.postgres_port = postgres_port
        self.prometheus_port = prometheus_port
        self.token = token
        self._env_text: str | None = None
        self._redis_password: str | None = None
        self._postgres_password: str | None = None
        self.mode = self._load_mode()

    @property
    def redis_password(self) -> str:
        """The stack's Redis password, generated on first use (never committed, never shown)."""
        if self._redis_password is None:
            self._redis_password = ensure_secret(self.state_dir / REDIS_PASSWORD_FILE)
        return self._redis_password

    @property
    def postgres_password(self) -> str:
        """The PostgreSQL password, generated on first use like Redis's (0600, never shown)."""
        if self._postgres_password is None:
            self._postgres_password = ensure_secret(self.state_dir / POSTGRES_PASSWORD_FILE)
        return self._postgres_password

    # --- set-up -----------------------------------------------------------------------------
    @property
    def services(self) -> tuple[str, ...]:
        """The services of the current mode, in start-up order."""
        return (
            "redis",
            *(("postgres",) if self.mode.database == "postgres" else ()),
            "migrate",
            "api",
            "worker",
            *(("proxy",) if self.mode.proxy else ()),
            *(MONITORING_SERVICES if self.mode.monitoring else ()),
        )

    def _load_mode(self) -> ComposeMode:
        try:
            data = json.loads((self.state_dir / MODE_FILE).read_text())
            database = str(data.get("database", "sqlite"))
            return ComposeMode(
                bool(data.get("proxy")),
                int(data.get("replicas", 1)),
                database if database in DATABASES else "sqlite",
                bool(data.get("monitoring")),
            )
        except (OSError, ValueError, AttributeError):
            return ComposeMode()

    def _save_mode(self) -> None:
        private_dir(self.state_dir)
        (self.state_dir / MODE_FILE).write_text(
            json.dumps(
                {
                    "proxy": self.mode.proxy,
                    "replicas": self.mode.replicas,
                    "database": self.mode.database,
                    "monitoring": self.mode.monitoring,
                }
            )
        )

    def _mode_for(self, options: UpOptions) -> ComposeMode:
        """What `up` asks for; without --database, the database the last `up` used."""
        database = options.database or self.mode.database
        return ComposeMode(options.proxy, options.replicas, database, options.monitoring)

    def client(self, every_profile: bool = False) -> DockerClient:
        """A python-on-whales client for this project in its current mode."""
        files: list[str | Path] = [self.project_dir / COMPOSE_FILE]
        if self.mode.replicas > 1:
            files.append(self.project_dir / REPLICAS_FILE)
        profiles = ["*"] if every_profile else profiles_of(self.mode)
        # Ports and the secrets (exemption token, Redis and PostgreSQL passwords) reach Compose's
        # interpolation through a 0600 env file (after the project's own .env, so they win)
        # instead of this process's environment or a command line.
        env_file = self.state_dir / ENV_FILE
        values = compose_env(
            self.api_port,
            self.proxy_port,
            self.redis_port,
            self.token,
            self.redis_password,
            postgres_port=self.postgres_port,
            postgres_password=(
                self.postgres_password if self.mode.database == "postgres" else None
            ),
            prometheus_port=self.prometheus_port,
        )
        text = "".join(f"{k}={v}\n" for k, v in values.items())
        if text != self._env_text or not env_file.exists():
            # client() runs on every status poll: write only changes
            write_private(env_file, text)
            self._env_text = text
        env_files: list[str | Path] = [env_file]
        if (self.project_dir / ".env").exists():
            env_files.insert(0, self.project_dir / ".env")
        return DockerClient(
            compose_files=files,
            compose_project_name=self.project_name,
            compose_project_directory=self.project_dir,
            compose_profiles=profiles,
            compose_env_files=env_files,
        )

    def endpoints(self) -> Endpoints:
        """The published ports (through the proxy only when the API is replicated).

        The Redis URL carries the password (movieops' own clients connect with it): show it
        only through ``redact_url``.
        """
        proxy = f"http://127.0.0.1:{self.proxy_port}" if self.mode.proxy else None
        api = proxy if self.mode.replicas > 1 and proxy else f"http://127.0.0.1:{self.api_port}"
        redis = f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0"
        return Endpoints(api, redis, proxy)

    @property
    def postgres_url(self) -> str:
        """Where the postgres service is published (no password: it is in the state dir)."""
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.postgres_port}/{POSTGRES_DB}"

    # --- orders -----------------------------------------------------------------------------
    def preflight(self, options: UpOptions) -> list[Check]:
        """Engine, Compose version, config valid, published ports free (naming the holder)."""
        checks: list[Check] = []
        problem = docker_problem()
        if problem:
            return [Check("docker", False, problem, "start Docker, or use --runtime local")]
        client = DockerClient()
        server = client.version().server
        checks.append(Check("docker engine", True, f"server {server.version if server else '?'}"))
        checks.append(Check("docker compose", True, client.compose.version()))
        if not (self.project_dir / COMPOSE_FILE).exists():
            checks.append(
                Check(
                    "compose file",
                    False,
                    f"no {COMPOSE_FILE} in {self.project_dir}",
                    "run movieops from the project directory, or pass --project-dir",
                )
            )
            return checks
        self.mode = self._mode_for(options)
        try:
            self.client().compose.config()
            checks.append(Check("compose config", True, "valid"))
        except DockerException as exc:
            checks.append(Check("compose config", False, _first_line(exc), "fix compose.yaml/.env"))
        ours = self._published_by_us()
        ports = [("redis", self.redis_port, "MOVIEOPS_REDIS_PORT")]
        if options.replicas <= 1:
            ports.append(("api", self.api_port, "MOVIEOPS_API_PORT"))
        if options.proxy:
            ports.append(("proxy", self.proxy_port, "MOVIEOPS_PROXY_PORT"))
        if self.mode.database == "postgres":
            ports.append(("postgres", self.postgres_port, "MOVIEOPS_POSTGRES_PORT"))
        if self.mode.monitoring:
            ports.append(("prometheus", self.prometheus_port, "MOVIEOPS_PROMETHEUS_PORT"))
        for service, port, variable in ports:
            if port in ours:
                checks.append(held_by_stack(service, port))
            else:
                checks.append(port_check(service, port, variable, holder_of(port)))
        return checks

    def _published_by_us(self) -> set[int]:
        ports: set[int] = set()
        for row in self._ps_rows():
            for publisher in row.get("Publishers") or []:
                if publisher.get("PublishedPort"):
                    ports.add(int(publisher["PublishedPort"]))
        return ports

    def start(self, options: UpOptions, progress: Callable[[str], None] | None = None) -> None:
        """`compose up -d` (building when asked or when the image is missing)."""
        self.mode = self._mode_for(options)
        self._save_mode()
        scales = {"api": options.replicas} if options.replicas > 1 else {}
        try:
            # Compose waits here for the one-shot migrate to exit 0 before it starts api and
            # worker, and fails when it does not.
            for _source, line in self.client().compose.up(
                detach=True,
                build=options.build,
                scales=scales,
                remove_orphans=not options.proxy,
                stream_logs=True,
            ):
                if progress:
                    progress(line.decode(errors="replace").rstrip())
        except DockerException as exc:
            blocked = self._blocking_service()
            raise Unhealthy(
                f"docker compose up failed: {_first_line(exc)}",
                hint="movieops logs, or docker compose logs, shows why",
                data={"blocked": blocked} if blocked else None,
            ) from None

    def _blocking_service(self) -> str | None:
        """The first service (in start-up order) whose container failed or is unhealthy."""
        try:
            rows = self._ps_rows()
        except DockerUnavailable:
            return None
        bad = {
            str(row["Service"])
            for row in rows
            if service_state(row) in {"failed", "exited", "dead"}
            or row.get("Health") == "unhealthy"
        }
        return next((service for service in self.services if service in bad), None)

    def stop(self, volumes: bool) -> list[str]:
        """`compose down` over every profile; `-v` deletes the named volumes."""
        try:
            self.client(every_profile=True).compose.down(
                volumes=volumes, remove_orphans=True, quiet=True
            )
        except DockerException as exc:
            raise DockerUnavailable(f"docker compose down failed: {_first_line(exc)}") from None
        if volumes:
            (self.state_dir / MODE_FILE).unlink(missing_ok=True)
            # A new database gets a new password.
            (self.state_dir / POSTGRES_PASSWORD_FILE).unlink(missing_ok=True)
            self._postgres_password = None
            self.mode = ComposeMode()
        else:
            # The data stays, so the next `up` uses the same database (proxy and replicas reset).
            self.mode = ComposeMode(database=self.mode.database)
            self._save_mode()
        return ["removed the containers and network"] + (
            ["deleted the database and Redis volumes"] if volumes else []
        )

    # --- questions --------------------------------------------------------------------------
    def _ps_rows(self) -> list[dict[str, Any]]:
        client = self.client(every_profile=True)
        try:
            output = run(
                [*client.client_config.docker_compose_cmd, "ps", "--all", "--format", "json"]
            )
        except DockerException as exc:
            raise DockerUnavailable(f"docker compose ps failed: {_first_line(exc)}") from None
        return parse_ps(str(output))

    def status(self) -> list[ServiceState]:
        """One row per container (replicas as api-1, api-2 …), from one `ps` and one `inspect`."""
        rows = self._ps_rows()
        restarts: dict[str, int] = {}
        started: dict[str, float] = {}
        if rows:
            now = datetime.now(UTC)
            for container in DockerClient().container.inspect([r["Name"] for r in rows]):
                restarts[container.name] = container.restart_count or 0
                if container.state.started_at:
                    started[container.name] = (now - container.state.started_at).total_seconds()
        endpoints = self.endpoints()
        urls = {
            "api": endpoints.api_url,
            "redis": redact_url(endpoints.redis_url),
            "proxy": endpoints.proxy_url,
            "postgres": self.postgres_url,
            "prometheus": f"http://127.0.0.1:{self.prometheus_port}",
        }
        per_service = Counter(str(r["Service"]) for r in rows)

        def label(row: dict[str, Any]) -> str:
            service = str(row["Service"])
            return replica_label(service, per_service[service], _replica_suffix(row))

        states = [
            ServiceState(
                service=label(r),
                state=service_state(r),
                health=r.get("Health") or None,
                restarts=restarts.get(r["Name"]),
                uptime_seconds=started.get(r["Name"]) if r.get("State") == "running" else None,
                url=urls.get(r["Service"]),
                detail=r.get("Status"),
            )
            for r in sorted(rows, key=lambda r: (self._order(r["Service"]), r["Name"]))
        ]
        states.extend(
            ServiceState(service, "missing", url=urls.get(service))
            for service in self.services
            if service not in per_service
        )
        return states

    @staticmethod
    def _order(service: str) -> int:
        order = ("redis", "postgres", "migrate", "api", "worker", "proxy", *MONITORING_SERVICES)
        return order.index(service) if service in order else len(order)

    def logs(
        self, services: list[str], tail: int | None, since: str | None, follow: bool
    ) -> Iterator[str]:
        """`compose logs` lines (streamed when following)."""
        client = self.client(every_profile=True)
        try:
            for _source, line in client.compose.logs(
                services=services or [],
                tail=str(tail) if tail else None,
                since=since,
                follow=follow,
                stream=True,
            ):
                yield line.decode(errors="replace").rstrip("\n")
        except DockerException as exc:
            raise DockerUnavailable(f"docker compose logs failed: {_first_line(exc)}") from None

    def health_log(self, service: str) -> str:
        """The last healthcheck outputs of the service's containers."""
        lines = []
        for row in self._ps_rows():
            if row["Service"] != service:
                continue
            lines.extend(health_lines(row["Name"], DockerClient().container.inspect(row["Name"])))
        return "\n".join(lines)

    def versions(self) -> dict[str, str]:
        """Docker client/server and Compose versions."""
        try:
            return docker_versions(DockerClient())
        except DockerException as exc:
            raise PreflightFailed(_first_line(exc)) from None

    def metrics_targets(self) -> list[MetricsTarget]:
        """Every api and worker container at its address on the project's network (Linux hosts
        reach container addresses). Where they cannot be reached (Docker Desktop), the published
        API port is the one target, marked "via published port"."""
        rows = [
            r
            for r in self._ps_rows()
            if r.get("Service") in METRICS_PORTS and r.get("State") == "running"
        ]
        per_service = Counter(str(r["Service"]) for r in rows)
        targets: list[MetricsTarget] = []
        if rows:
            containers = DockerClient().container.inspect([r["Name"] for r in rows])
            addresses = {c.name: container_address(c.network_settings.networks) for c in containers}
            for row in sorted(rows, key=lambda r: (self._order(r["Service"]), r["Name"])):
                service, name = str(row["Service"]), str(row["Name"])
                address = addresses.get(name)
                if address is None:
                    continue
                instance = replica_label(service, per_service[service], _replica_suffix(row))
                port = METRICS_PORTS[service]
                targets.append(MetricsTarget(service, instance, f"http://{address}:{port}/metrics"))
        return targets_or_published(targets, reachable, f"http://127.0.0.1:{self.api_port}/metrics")

    def rollout_failure(self) -> tuple[str, str] | None:
        """Never: this runtime has no rolling updates to abandon."""
        return None


def _replica_suffix(row: dict[str, Any]) -> str:
    """A container's replica number, from its name (movieops-api-2 -> 2)."""
    return str(row["Name"]).rsplit("-", 1)[-1]
