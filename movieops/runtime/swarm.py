"""The swarm runtime: the stack as a Docker Swarm stack, driven through python-on-whales.

`up` renders compose.yaml with the Swarm overlay (compose.swarm.yaml) through `docker compose
config`, turns the result into a stack file (movieops.swarmfile), pins the app services to
one image and runs `docker stack deploy` without waiting on it (its `--detach=false` can hang on a
finished task): movieops watches the tasks itself, and a rolling update that Swarm rolled back is a
failure of `up`. Secrets reach the services as Docker secrets, never as environment variables.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run, stream_stdout_and_stderr

from movieops.errors import DockerUnavailable, PreflightFailed, Unhealthy, UsageError
from movieops.ports import held_by_stack, holder_of, port_check
from movieops.runtime import (
    Check,
    Endpoints,
    MetricsTarget,
    ServiceState,
    UpOptions,
    replica_label,
)
from movieops.secrets import ensure_secret, private_dir, read_secret, write_private
from movieops.swarmfile import SECRET_PLACEHOLDER, StackFileError, stack_file
from movieops.waiting import wait_until
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

SWARM_FILE = "compose.swarm.yaml"
STACK_FILE = "swarm-stack.json"
MODE_FILE = "swarm-mode.json"
TOKEN_FILE = "contract.token"  # noqa: S105 - a file name (movieops.contract writes it)
APP_REPOSITORY = "movieops-app"
BUILT_IMAGE = f"{APP_REPOSITORY}:local"
APP_SERVICES = frozenset({"api", "worker", "migrate"})
JOB_SERVICES = frozenset({"migrate"})  # one-shot: Swarm's replicated-job mode
SERVICES = ("postgres", "redis", "migrate", "api", "worker", "proxy")
UPDATING = {"updating", "rollback_started"}
ROLLED_BACK = {"rollback_started", "rollback_completed", "rollback_paused"}
DOWN_TIMEOUT_SECONDS = 60.0
LOGS_TIMEOUT_SECONDS = 10.0
_TASK_NAME = re.compile(r"^(?P<service>.+?)\.(?P<slot>[^.]+)(?:\.(?P<task>\w+))?$")
_LOG_PREFIX = re.compile(r"^(?P<service>[\w-]+)\.(?P<slot>\w+)(?:\.\w+)?@[^|]*\|\s?")


def swarm_problem(client: DockerClient | None = None) -> str | None:
    """Why this engine cannot deploy a stack (not a swarm manager), or None when it can."""
    problem = docker_problem(client)
    if problem:
        return problem
    info = (client or DockerClient()).info()
    swarm = info.swarm
    state = (swarm.local_node_state if swarm else None) or "inactive"
    if state != "active":
        return f"this Docker engine is not in a swarm (state: {state})"
    if not (swarm and swarm.control_available):
        return "this Docker engine is a swarm worker: run movieops on a manager node"
    return None


def parse_json_lines(output: str) -> list[dict[str, Any]]:
    """Docker's `--format json` output: one JSON object per line."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def task_rows(tasks: list[dict[str, Any]], stack: str) -> list[ServiceState]:
    """One row per slot from `docker stack ps --format json` (newest task of each slot).

    Replicas show as api-1, api-2 …; restarts count the slot's earlier tasks that ended while
    Swarm wanted them running. A one-shot job shows as done (exit 0) or failed.
    """
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    failures: dict[tuple[str, str], int] = {}
    replicas: dict[str, set[str]] = {}
    for task in tasks:
        match = _TASK_NAME.match(str(task.get("Name", "")).lstrip(" \\_"))
        if not match or not match["service"].startswith(f"{stack}_"):
            continue
        service = match["service"][len(stack) + 1 :]
        slot = match["slot"] if match["slot"].isdigit() else "1"
        key = (service, slot)
        current = str(task.get("CurrentState", ""))
        ended = (
            ("Failed", "Rejected")
            if service in JOB_SERVICES
            else ("Failed", "Rejected", "Complete")
        )
        if task.get("DesiredState") in {"Running", "Complete"} or (
            service in JOB_SERVICES and current.startswith("Complete")
        ):
            newest.setdefault(key, task)
        elif current.startswith(ended):
            # a task of a long-running service that ended while Swarm wanted it running
            failures[key] = failures.get(key, 0) + 1
            newest.setdefault(key, task)
        replicas.setdefault(service, set()).add(slot)
    rows = []
    for (service, slot), task in sorted(newest.items(), key=lambda i: (_order(i[0][0]), i[0])):
        current = str(task.get("CurrentState", "")).split(" ")[0].lower()
        error = str(task.get("Error") or "")
        # A long-running service's task that ended is replaced by Swarm (its restart policy):
        # "restarting", never the "failed" of a one-shot, which nothing will run again.
        state = {
            "complete": "restarting",
            "shutdown": "exited",
            "failed": "restarting",
            "rejected": "restarting",
        }.get(current, current or "unknown")
        health = "healthy" if current == "running" else ("starting" if current else None)
        detail: str | None
        if service in JOB_SERVICES and current in {"complete", "failed", "rejected"}:
            # a one-shot's end: "done" (exit 0) is its healthy state, as in the compose runtime
            state = "done" if current == "complete" else "failed"
            health, detail = None, ("exit 0" if current == "complete" else error or current)
        else:
            detail = " ".join(filter(None, [str(task.get("CurrentState", "")), error])) or None
        label = replica_label(service, len(replicas[service]), slot)
        rows.append(
            ServiceState(
                label,
                state,
                health=health,
                restarts=failures.get((service, slot), 0),
                detail=detail,
            )
        )
    return rows


def _order(service: str) -> int:
    return {s: i for i, s in enumerate(SERVICES)}.get(service, 9)


def log_line(line: str, stack: str) -> str:
    """`stack_api.2.x1y2@node    | text` → `api-2 | text` (the compose runtime's shape)."""
    match = _LOG_PREFIX.match(line)
    if not match:
        return line
    service = match["service"].removeprefix(f"{stack}_")
    return f"{service}-{match['slot']} | {line[match.end() :]}"


class SwarmRuntime:
    """`docker stack` for the project's compose.yaml plus compose.swarm.yaml."""

    name = "swarm"

    def __init__(
        self,
        project_dir: Path,
        stack: str,
        state_dir: Path,
        proxy_port: int,
        token: str | None = None,
    ) -> None:
        self.project_dir = project_dir
        self.stack = stack
        self.state_dir = state_dir
        self.proxy_port = proxy_port
        self.token = token
        self._deployed_at: datetime | None = None
        self._siblings_rolled_back = False
        self._wanted_replicas: int | None = None  # what this process's `up` asked for

    @property
    def services(self) -> tuple[str, ...]:
        """Every service of the stack (Swarm always runs PostgreSQL and the proxy)."""
        return SERVICES

    # --- rendering --------------------------------------------------------------------------
    def _secret_files(self) -> None:
        """The files compose.swarm.yaml makes Docker secrets from: generated once, 0600, in the
        state dir (the exemption token is the contract's own file, made by `up`)."""
        private_dir(self.state_dir)
        ensure_secret(self.state_dir / REDIS_PASSWORD_FILE)
        ensure_secret(self.state_dir / POSTGRES_PASSWORD_FILE)
        token_file = self.state_dir / TOKEN_FILE
        if self.token and read_secret(token_file) != self.token:
            write_private(token_file, self.token)  # the token this runtime was given wins
        elif not token_file.exists():
            ensure_secret(token_file)

    def _compose_client(self, replicas: int, overlay: bool = True) -> DockerClient:
        """Compose with the overlay, for rendering and building. Secret variables get a
        placeholder (the stack file must never hold one); the env file holds no secret."""
        self._secret_files()
        values = {
            "MOVIE_REDIS_PASSWORD": SECRET_PLACEHOLDER,
            "MOVIE_POSTGRES_PASSWORD": SECRET_PLACEHOLDER,
            "MOVIE_DATABASE_PASSWORD": SECRET_PLACEHOLDER,
            "MOVIE_RATE_LIMIT_EXEMPT_TOKENS": SECRET_PLACEHOLDER,
            "MOVIEOPS_SECRETS_DIR": str(self.state_dir.resolve()),
            "MOVIE_PROXY_PORT": str(self.proxy_port),
            "MOVIEOPS_REPLICAS": str(replicas),
        }
        env_file = self.state_dir / "swarm.env"
        write_private(env_file, "".join(f"{k}={v}\n" for k, v in values.items()))
        env_files: list[str | Path] = [env_file]
        if (self.project_dir / ".env").exists():
            env_files.insert(0, self.project_dir / ".env")
        files: list[str | Path] = [self.project_dir / COMPOSE_FILE]
        if overlay:
            files.append(self.project_dir / SWARM_FILE)
        return DockerClient(
            compose_files=files,
            compose_project_name=self.stack,
            compose_project_directory=self.project_dir,
            compose_profiles=["*"],
            compose_env_files=env_files,
        )

    def render(self, image: str, replicas: int) -> dict[str, Any]:
        """The stack file for this project, the app services pinned to ``image``."""
        client = self._compose_client(replicas)
        try:
            output = run([*client.client_config.docker_compose_cmd, "config", "--format", "json"])
        except DockerException as exc:
            raise PreflightFailed(
                f"compose.yaml with {SWARM_FILE} is not valid: {_first_line(exc)}",
                hint=f"fix compose.yaml, {SWARM_FILE} or .env",
            ) from None
        try:
            return stack_file(
                json.loads(str(output)),
                stack=self.stack,
                app_image=image,
                app_services=APP_SERVICES,
                services=frozenset(SERVICES),
            )
        except StackFileError as exc:
            raise PreflightFailed(str(exc), hint=f"fix {SWARM_FILE}") from None

    # --- images -----------------------------------------------------------------------------
    def _nodes(self) -> int:
        try:
            return len(DockerClient().node.list())
        except DockerException:
            return 1

    def pin_image(self, reference: str) -> str:
        """A reference Swarm will not mistake for an older image: the registry digest when the
        image has one, else a tag made from the image's own id (single-node swarms only)."""
        try:
            image = DockerClient().image.inspect(reference)
        except DockerException:
            raise PreflightFailed(
                f"no image {reference!r} on this node",
                hint="build it (movieops up --build) or docker pull it first",
            ) from None
        for digest in image.repo_digests or []:
            return str(digest)
        if self._nodes() > 1:
            raise PreflightFailed(
                f"{reference} is only on this node, and the swarm has other nodes",
                hint="push the image to a registry every node can pull from, "
                "then pass --image REGISTRY/NAME:TAG",
            )
        unique = f"{APP_REPOSITORY}:{str(image.id).removeprefix('sha256:')[:12]}"
        DockerClient().image.tag(image, unique)
        return unique

    def _build(self, progress: Callable[[str], None] | None) -> None:
        client = self._compose_client(1, overlay=False)  # the build is Compose's own
        try:
            for _source, line in client.compose.build(["api"], stream_logs=True):
                if progress:
                    progress(line.decode(errors="replace").rstrip())
        except DockerException as exc:
            raise Unhealthy(f"building the app image failed: {_first_line(exc)}") from None

    # --- set-up -----------------------------------------------------------------------------
    def endpoints(self) -> Endpoints:
        """The proxy's published port; Redis at its task's address on the gateway bridge."""
        password = read_secret(self.state_dir / REDIS_PASSWORD_FILE) or ""
        # Asked each time: a restarted Redis task has a new address.
        address = self._find_redis_address() or "127.0.0.1"
        api = f"http://127.0.0.1:{self.proxy_port}"
        return Endpoints(api, f"redis://:{password}@{address}:6379/0", api)

    def _gateway_addresses(self, *services: str) -> dict[str, list[tuple[str, str]]]:
        """(task slot, address on docker_gwbridge) of each running task of each of
        ``services``: the addresses this host reaches the stack's unpublished services at.
        One network inspect serves them all (`top` asks again at every refresh)."""
        client = DockerClient()
        tasks = {
            container.id: (service, container)
            for service in services
            for container in client.container.list(
                filters=[("label", f"com.docker.swarm.service.name={self.stack}_{service}")]
            )
        }
        found: dict[str, list[tuple[str, str]]] = {service: [] for service in services}
        if not tasks:
            return found
        network = client.network.inspect("docker_gwbridge")
        for container_id, endpoint in (network.containers or {}).items():
            if container_id not in tasks or not endpoint.ipv4_address:
                continue
            service, container = tasks[container_id]
            task = (container.config.labels or {}).get("com.docker.swarm.task.name", "")
            match = _TASK_NAME.match(str(task))
            slot = match["slot"] if match and match["slot"].isdigit() else "1"
            found[service].append((slot, str(endpoint.ipv4_address).split("/")[0]))
        return found

    def _find_redis_address(self) -> str | None:
        """The running Redis container's address on docker_gwbridge (reachable from this host;
        Redis is never published)."""
        try:
            found = self._gateway_addresses("redis")["redis"]
        except DockerException:
            return None
        return found[0][1] if found else None

    def metrics_targets(self) -> list[MetricsTarget]:
        """Every running api and worker task at its container's address on docker_gwbridge
        (reachable from this node, as Redis is; nothing is published but the proxy)."""
        try:
            found = self._gateway_addresses(*METRICS_PORTS)
        except DockerException as exc:
            raise DockerUnavailable(f"docker inspect failed: {_first_line(exc)}") from None
        return [
            MetricsTarget(
                service,
                replica_label(service, len(found[service]), slot),
                f"http://{address}:{METRICS_PORTS[service]}/metrics",
            )
            for service in sorted(found, key=_order)
            for slot, address in sorted(found[service], key=lambda f: int(f[0]))
        ]

    def preflight(self, options: UpOptions) -> list[Check]:
        """Engine, swarm manager, files, the rendered stack file, the proxy port."""
        problem = swarm_problem()
        if problem:
            return [
                Check(
                    "docker swarm",
                    False,
                    problem,
                    "docker swarm init --advertise-addr 127.0.0.1 (a single-node swarm), "
                    "or use --runtime compose",
                )
            ]
        self._wanted_replicas = options.replicas
        checks = [Check("docker swarm", True, f"manager of {self._nodes()} node(s)")]
        for name in (COMPOSE_FILE, SWARM_FILE):
            if not (self.project_dir / name).exists():
                checks.append(
                    Check(
                        name,
                        False,
                        f"no {name} in {self.project_dir}",
                        "run movieops from the project directory, or pass --project-dir",
                    )
                )
        if not all(c.ok for c in checks):
            return checks
        try:
            self.render(BUILT_IMAGE, options.replicas)
            checks.append(Check("stack file", True, f"{COMPOSE_FILE} + {SWARM_FILE}"))
        except PreflightFailed as exc:
            checks.append(Check("stack file", False, exc.message, exc.hint))
        if self._running():
            checks.append(held_by_stack("proxy", self.proxy_port))
        else:
            holder = holder_of(self.proxy_port)
            checks.append(port_check("proxy", self.proxy_port, "MOVIEOPS_PROXY_PORT", holder))
        return checks

    def _running(self) -> bool:
        try:
            return bool(self._service_inspect())
        except DockerUnavailable:
            return False

    # --- orders -----------------------------------------------------------------------------
    def start(self, options: UpOptions, progress: Callable[[str], None] | None = None) -> None:
        """Build (when asked or missing), pin the image, render and `docker stack deploy`."""
        say = progress or (lambda _line: None)
        image = options.image
        if image is None:
            if options.build or not DockerClient().image.exists(BUILT_IMAGE):
                say(f"building {BUILT_IMAGE}")
                self._build(progress)
            image = BUILT_IMAGE
        pinned = self.pin_image(image)
        say(f"deploying {self.stack} with {pinned}")
        stack = self.render(pinned, options.replicas)
        path = self.state_dir / STACK_FILE
        write_private(path, json.dumps(stack, indent=2))
        client = DockerClient()
        command = [
            *client.client_config.docker_cmd,
            "stack",
            "deploy",
            "--compose-file",
            str(path),
            "--resolve-image",
            "never",
            "--prune",
            "--detach=true",
            self.stack,
        ]
        self._deployed_at = datetime.now(UTC)
        try:
            output = run(command, capture_stderr=True)
        except DockerException as exc:
            raise Unhealthy(
                f"docker stack deploy failed: {_first_line(exc)}",
                hint=f"the stack file is {path}",
            ) from None
        for line in str(output).splitlines():
            say(line)
        write_private(
            self.state_dir / MODE_FILE,
            json.dumps({"image": pinned, "replicas": options.replicas}),
        )

    def stop(self, volumes: bool) -> list[str]:
        """`docker stack rm`, then wait until its containers and networks are gone (deploying
        again at once fails otherwise); ``volumes`` then deletes the stack's volumes."""
        client = DockerClient()
        label = f"com.docker.stack.namespace={self.stack}"
        try:
            run([*client.client_config.docker_cmd, "stack", "rm", self.stack], capture_stderr=True)
        except DockerException as exc:
            if "nothing found in stack" not in str(exc.stderr or exc).lower():
                raise DockerUnavailable(f"docker stack rm failed: {_first_line(exc)}") from None
        left: list[Any] = []

        def gone() -> bool | None:
            nonlocal left
            containers = client.container.list(all=True, filters=[("label", label)])
            finished = [c for c in containers if c.state.status in {"exited", "dead", "created"}]
            if finished:
                # A finished job's container outlives its service (Engine 20.10 leaves them)
                with contextlib.suppress(DockerException):
                    client.container.remove(finished, force=True)
            left = [c for c in containers if c not in finished] + list(
                client.network.list(filters=[("label", label)])
            )
            return True if not left else None

        def still_there() -> DockerUnavailable:
            names = ", ".join(sorted(str(item.name) for item in left)[:5])
            return DockerUnavailable(
                f"the stack's containers or networks are still there after "
                f"{DOWN_TIMEOUT_SECONDS:g}s: {names}",
                hint="docker stack ps, docker network ls",
            )

        wait_until(gone, within=DOWN_TIMEOUT_SECONDS, interval=0.5, error=still_there)
        done = ["removed the services, secrets, configs and network"]
        if volumes:
            stale: list[Any] = list(client.volume.list(filters=[("label", label)]))
            if stale:
                client.volume.remove(stale)
            done.append("deleted the PostgreSQL and Redis volumes")
        (self.state_dir / MODE_FILE).unlink(missing_ok=True)
        (self.state_dir / STACK_FILE).unlink(missing_ok=True)
        return done

    def rollback(self) -> list[str]:
        """`docker service rollback` of every app service that has a previous spec (and whose
        last update was not rolled back already: its previous spec is the failed one)."""
        self._deployed_at = datetime.now(UTC)
        rolled = []
        for service in self._service_inspect():
            name = str(service.get("Spec", {}).get("Name", ""))
            short = self._short(service)
            if short not in APP_SERVICES - JOB_SERVICES or not service.get("PreviousSpec"):
                continue
            if (service.get("UpdateStatus") or {}).get("State") in ROLLED_BACK:
                continue  # its last update was rolled back already: the previous spec is that
            self._service_rollback(name)
            rolled.append(short)
        if not rolled:
            raise UsageError(
                "nothing to roll back: no app service of the stack has a previous version",
                hint="a rollback needs an earlier `movieops --runtime swarm up`",
            )
        return rolled

    def _service_rollback(self, name: str) -> None:
        client = DockerClient()
        command = [*client.client_config.docker_cmd, "service", "rollback", "--detach", name]
        try:
            run(command, capture_stderr=True)
        except DockerException as exc:
            raise Unhealthy(f"rolling back {name} failed: {_first_line(exc)}") from None

    # --- questions --------------------------------------------------------------------------
    def _service_inspect(self) -> list[dict[str, Any]]:
        client = DockerClient()
        base = client.client_config.docker_cmd
        try:
            names = str(
                run(
                    [
                        *base,
                        "service",
                        "ls",
                        "--quiet",
                        "--filter",
                        f"label=com.docker.stack.namespace={self.stack}",
                    ]
                )
            ).split()
            if not names:
                return []
            return list(json.loads(str(run([*base, "service", "inspect", *names]))))
        except DockerException as exc:
            raise DockerUnavailable(f"docker service inspect failed: {_first_line(exc)}") from None

    def _short(self, service: dict[str, Any]) -> str:
        """A `docker service inspect` entry's name without the stack prefix (api, worker …)."""
        return str(service.get("Spec", {}).get("Name", "")).removeprefix(f"{self.stack}_")

    def _updates(self, inspected: list[dict[str, Any]] | None = None) -> dict[str, tuple[str, str]]:
        """Services whose update (begun by this process's deploy or rollback) has not ended:
        service → (state, message). Swarm's own update status, since the tasks of a start-first
        update include the old, healthy ones until the very end."""
        if self._deployed_at is None:
            return {}
        out = {}
        for service in self._service_inspect() if inspected is None else inspected:
            name = self._short(service)
            status = service.get("UpdateStatus") or {}
            changed = _parse_time(service.get("UpdatedAt"))
            previous = service.get("PreviousSpec")
            if (
                name in JOB_SERVICES  # a job has no rolling update: its new task runs once
                or not previous  # just created: no old tasks to replace
                # re-submitted by a deploy with the same image: Swarm replaces tasks only when
                # their template changes, and movieops' deploys change the app image (the specs
                # themselves differ in defaults Docker fills in, so they are not compared)
                or _image(previous) == _image(service.get("Spec") or {})
                or changed is None
                or changed < self._deployed_at  # not changed since this deploy
            ):
                continue
            started = _parse_time(status.get("StartedAt"))
            state = str(status.get("State") or "")
            if started is None or started < self._deployed_at:
                out[name] = ("updating", "update queued")
            elif state in UPDATING:
                out[name] = (state, str(status.get("Message") or state))
        return out

    def rollout_failure(self) -> tuple[str, str] | None:
        """(service, why) once Swarm has rolled back an update this process deployed (after the
        rollback ended); the other app services of that deploy are rolled back with it, so the
        stack never runs two versions. None while nothing was rolled back."""
        if self._deployed_at is None:
            return None
        inspected = self._service_inspect()
        failed = None
        for service in inspected:
            status = service.get("UpdateStatus") or {}
            started = _parse_time(status.get("StartedAt"))
            if status.get("State") not in ROLLED_BACK or started is None:
                continue
            if started < self._deployed_at:
                continue
            name = self._short(service)
            if status.get("State") == "rollback_started":
                return None  # still rolling back: the rows say so; wait for its end
            failed = (name, str(status.get("Message") or status.get("State")))
        if failed is None:
            return None
        if not self._siblings_rolled_back:
            self._siblings_rolled_back = True
            for service in inspected:
                state = (service.get("UpdateStatus") or {}).get("State")
                changed = _parse_time(service.get("UpdatedAt"))
                if (
                    self._short(service) in APP_SERVICES - JOB_SERVICES
                    and state not in ROLLED_BACK
                    and service.get("PreviousSpec")
                    and changed is not None
                    and changed >= self._deployed_at
                ):
                    self._service_rollback(str(service["Spec"]["Name"]))
            return None  # wait for the siblings' rollbacks too
        if self._updates(inspected):  # the same answer of Swarm, not asked again
            return None
        return failed

    def _tasks(self) -> list[dict[str, Any]]:
        client = DockerClient()
        try:
            output = run(
                [
                    *client.client_config.docker_cmd,
                    "stack",
                    "ps",
                    self.stack,
                    "--no-trunc",
                    "--format",
                    "json",
                ],
                capture_stderr=True,
            )
        except DockerException as exc:
            if "nothing found in stack" in str(exc.stderr or exc).lower():
                return []
            raise DockerUnavailable(f"docker stack ps failed: {_first_line(exc)}") from None
        return parse_json_lines(str(output))

    def status(self) -> list[ServiceState]:
        """One row per task slot (replicas as api-1, api-2 …), services without tasks missing."""
        rows = task_rows(self._tasks(), self.stack)
        updates = self._updates()
        endpoints = self.endpoints()
        urls = {"api": endpoints.api_url, "proxy": endpoints.proxy_url}
        seen = {row.service.split("-")[0] for row in rows}
        out = []
        for r in rows:
            base = r.service.split("-")[0]
            state, detail = r.state, r.detail
            restarts = r.restarts
            if base in updates:
                # Swarm judges a rolling update's failing tasks itself (and rolls it back):
                # they are not a crash loop for `up` to stop on.
                restarts = None
                state = "updating"
                detail = f"rolling update: {updates[base][1]}" + (f" ({detail})" if detail else "")
            out.append(
                ServiceState(
                    r.service, state, r.health, restarts, r.uptime_seconds, urls.get(base), detail
                )
            )
        out.extend(ServiceState(s, "missing", url=urls.get(s)) for s in SERVICES if s not in seen)
        return self._against_wanted_replicas(out, urls.get("api"))

    def _against_wanted_replicas(
        self, rows: list[ServiceState], url: str | None
    ) -> list[ServiceState]:
        """While `up` asks for a number of API replicas the stack does not run, the slots still
        to start are missing and the ones to remove are stopping: `up` deploys, then waits."""
        wanted = self._wanted_replicas
        api = [r for r in rows if r.service == "api" or r.service.startswith("api-")]
        if wanted is None or not api or len(api) == wanted:
            return rows
        if len(api) < wanted:
            have = {r.service for r in api}
            rows += [
                ServiceState(f"api-{slot}", "missing", url=url, detail="replica to start")
                for slot in range(1, wanted + 1)
                if f"api-{slot}" not in have and not (slot == 1 and "api" in have)
            ]
            return rows
        extra = {r.service for r in api if r.service.split("-")[-1].isdigit()} - {
            f"api-{slot}" for slot in range(1, wanted + 1)
        }
        return [
            replace(r, state="stopping", detail="replica to remove") if r.service in extra else r
            for r in rows
        ]

    def logs(
        self, services: list[str], tail: int | None, since: str | None, follow: bool
    ) -> Iterator[str]:
        """`docker service logs` of each service (merged as they come when following)."""
        client = DockerClient()
        names = services or list(SERVICES)

        def command(service: str) -> list[Any]:
            cmd: list[Any] = [*client.client_config.docker_cmd, "service", "logs", "--no-trunc"]
            if tail:
                cmd += ["--tail", str(tail)]
            if since:
                cmd += ["--since", since]
            if follow:
                cmd.append("--follow")
            return [*cmd, f"{self.stack}_{service}"]

        existing = {self._short(service) for service in self._service_inspect()}
        names = [n for n in names if n in existing]
        if not follow:
            for service in names:
                # `docker service logs` without --follow can hang after printing everything
                # (Engine 20.10, a service whose tasks failed): bounded, keeping what it printed.
                try:
                    done = subprocess.run(  # noqa: S603 - our own docker command
                        [str(part) for part in command(service)],
                        capture_output=True,
                        timeout=LOGS_TIMEOUT_SECONDS,
                        check=False,
                    )
                    output, error = done.stdout, done.stderr
                    if done.returncode != 0 and not output:
                        raise DockerUnavailable(
                            f"docker service logs failed: {error.decode(errors='replace')[:300]}"
                        )
                except subprocess.TimeoutExpired as exc:
                    output, error = exc.stdout or b"", exc.stderr or b""
                for raw in (output + error).decode(errors="replace").splitlines():
                    yield log_line(raw, self.stack)
            return
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(service: str) -> None:
            try:
                for _source, raw in stream_stdout_and_stderr(command(service)):
                    lines.put(log_line(raw.decode(errors="replace").rstrip("\n"), self.stack))
            except DockerException:
                pass
            finally:
                lines.put(None)

        for service in names:
            threading.Thread(target=pump, args=(service,), daemon=True).start()
        running = len(names)
        while running:
            line = lines.get()
            if line is None:
                running -= 1
            else:
                yield line

    def health_log(self, service: str) -> str:
        """The task errors of the service and its local containers' last healthcheck outputs."""
        out = [
            f"{row.service}: {row.detail}"
            for row in task_rows(self._tasks(), self.stack)
            if row.service.split("-")[0] == service and row.detail
        ]
        client = DockerClient()
        try:
            containers = client.container.list(
                all=True,
                filters=[("label", f"com.docker.swarm.service.name={self.stack}_{service}")],
            )
        except DockerException:
            containers = []
        for container in containers[:3]:
            out.extend(health_lines(container.name, container))
        return "\n".join(out)

    def versions(self) -> dict[str, str]:
        """Docker client/server and Compose versions, and the swarm's size."""
        try:
            return {**docker_versions(DockerClient()), "swarm nodes": str(self._nodes())}
        except DockerException as exc:
            raise PreflightFailed(_first_line(exc)) from None


def _image(spec: dict[str, Any]) -> object:
    return spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
