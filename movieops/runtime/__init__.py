"""Ways of running the stack: Docker Compose, Docker Swarm, or the embedded local runtime.

Both answer the same questions (status, logs, endpoints) and take the same orders (start, stop),
so every command above them works the same on either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from movieops.secrets import redact_url


@dataclass(frozen=True)
class Endpoints:
    """Where the running stack answers."""

    api_url: str
    redis_url: str
    proxy_url: str | None = None

    @property
    def docs_url(self) -> str:
        """The interactive OpenAPI docs."""
        return f"{self.api_url}/docs"

    def redacted(self) -> Endpoints:
        """The same endpoints with URL passwords hidden: what is shown or stored in reports."""
        return replace(self, redis_url=redact_url(self.redis_url))


@dataclass(frozen=True)
class ServiceState:
    """One service as its runtime sees it."""

    service: str
    state: str  # running, starting, exited, stopped, missing; one-shots: done, failed
    health: str | None = None  # healthy, unhealthy, starting, or None (no healthcheck)
    restarts: int | None = None
    uptime_seconds: float | None = None
    url: str | None = None
    detail: str | None = None

    @property
    def running(self) -> bool:
        """Whether the process or container is up."""
        return self.state == "running"


def replica_label(service: str, replicas: int, suffix: str) -> str:
    """How status (and `top`) names one replica: the service alone when it has one, else
    ``service-suffix`` (api-1, api-2 …)."""
    return service if replicas == 1 else f"{service}-{suffix}"


@dataclass(frozen=True)
class MetricsTarget:
    """Where one process's Prometheus metrics can be read from this host."""

    service: str  # api or worker
    instance: str  # api, api-2, worker … (as status names it)
    url: str  # http://…/metrics
    note: str | None = None  # e.g. "via published port" when container addresses are unreachable


@dataclass(frozen=True)
class Check:
    """One preflight check and its one-line fix."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class UpOptions:
    """What `movieops up` was asked for."""

    build: bool = False
    proxy: bool = False
    replicas: int = 1
    services: list[str] = field(default_factory=list)
    database: str | None = None
    """sqlite or postgres (compose); None: the one the last `up` used, else sqlite."""
    image: str | None = None  # swarm: deploy this image instead of building one
    monitoring: bool = False  # compose: the monitoring profile (Prometheus, Redis exporter)


class Runtime(Protocol):
    """What every runtime provides."""

    @property
    def name(self) -> str:
        """compose, swarm or local."""
        ...

    @property
    def services(self) -> tuple[str, ...]:
        """The services this runtime runs."""
        ...

    def endpoints(self) -> Endpoints:
        """Where the stack answers."""
        ...

    def preflight(self, options: UpOptions) -> list[Check]:
        """Checks before starting anything."""
        ...

    def start(self, options: UpOptions, progress: Callable[[str], None] | None = None) -> None:
        """Start (or build and start) everything; return without waiting for health."""
        ...

    def stop(self, volumes: bool) -> list[str]:
        """Stop everything; with ``volumes`` also delete the data. Returns what was removed."""
        ...

    def status(self) -> list[ServiceState]:
        """Every service's state."""
        ...

    def logs(
        self, services: list[str], tail: int | None, since: str | None, follow: bool
    ) -> Iterator[str]:
        """Log lines, newest last; with ``follow`` keep going until interrupted."""
        ...

    def health_log(self, service: str) -> str:
        """The latest health-check output of a service (for failure reports)."""
        ...

    def versions(self) -> dict[str, str]:
        """Versions of the runtime's tools (for failure bundles)."""
        ...

    def metrics_targets(self) -> list[MetricsTarget]:
        """Where each API and worker process serves its metrics, reachable from this host."""
        ...

    def rollout_failure(self) -> tuple[str, str] | None:
        """(service, why) when the update `start` began was abandoned by the orchestrator
        (Swarm rolled it back), else None. Runtimes without rolling updates return None."""
        ...
