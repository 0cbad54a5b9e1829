"""Bringing the stack up and knowing when it is healthy: preflight, start, wait, report."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from movieops.errors import MovieOpsError, PreflightFailed, RolledBack, Unhealthy
from movieops.output import jsonable
from movieops.runtime import Check, Endpoints, Runtime, ServiceState, UpOptions
from movieops.waiting import wait_until

if TYPE_CHECKING:
    from movieops.probes import Probe

POLL_SECONDS = 0.25  # compose: each poll runs `docker compose ps`
LOCAL_POLL_SECONDS = 0.1  # local: each poll is one XML-RPC call to supervisord, cheap
READY_TIMEOUT_SECONDS = 2.0
READY_COVERS = frozenset({"api", "redis", "worker", "postgres", "migrate"})
"""The services whose probes the API's /ready answers for in one request: it reaches Redis
(PING), the database, and reads the worker's heartbeat key, besides answering itself (migrate
has nothing to answer: its state, done, says it all)."""
UP_STATES = frozenset({"running", "external", "done"})
"""States of a service that is up: "done" is a one-shot (migrate) that exited 0."""
NO_PROBE = frozenset({"postgres", "migrate", "prometheus", "redis-exporter"})
"""Services whose container says it all: postgres's healthcheck (pg_isready over TCP),
migrate's exit code, Prometheus's readiness healthcheck, the exporter running (monitoring)."""
CRASH_RESTARTS = 3
"""Restarts while `up` waits after which a service counts as crash-looping: waiting longer
cannot help, so `up` stops at once instead of running out its whole budget."""


@dataclass
class ServiceProgress:
    """One service while `up` waits for it."""

    service: str
    state: str = "waiting"
    detail: str = ""
    healthy: bool = False
    seconds: float | None = None


@dataclass(frozen=True)
class UpResult:
    """What `up` did."""

    runtime: str
    already_running: bool
    seconds: float
    endpoints: Endpoints
    services: list[ServiceState]
    notes: list[str] = field(default_factory=list)


def failing(checks: list[Check]) -> list[Check]:
    """The checks that failed."""
    return [check for check in checks if not check.ok]


def ready_document(api_url: str) -> tuple[int, dict[str, Any]] | None:
    """One GET /ready (standard library, no proxy): its status and JSON body, or None when
    nothing answers (or not with JSON)."""
    import http.client

    parts = urlsplit(api_url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port or 80, timeout=READY_TIMEOUT_SECONDS
    )
    try:
        connection.request("GET", f"{parts.path.rstrip('/')}/ready")
        response = connection.getresponse()
        body = json.loads(response.read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return (response.status, body) if isinstance(body, dict) else None


def ready_says_healthy(api_url: str) -> bool:
    """/ready answers 200, and its Redis and worker checks are ok.

    The quick way to know a running stack is healthy: it spares `up` on a healthy stack the
    import of the Redis and HTTP clients that the per-service probes use.
    """
    answer = ready_document(api_url)
    body = answer[1] if answer and answer[0] == 200 else None
    checks = body.get("checks") if isinstance(body, dict) else None
    if not isinstance(checks, dict) or not {"redis", "worker"} <= checks.keys():
        return False
    return all(isinstance(c, dict) and c.get("ok") is True for c in checks.values())


def healthy_now(runtime: Runtime, worker_interval: int) -> bool:
    """Every service running, and every probe passing (one /ready request answers for the
    api, redis and worker probes when it says all is well; else each probe runs)."""
    try:
        states = runtime.status()
    except MovieOpsError:
        return False
    if not states or any(s.state not in UP_STATES for s in states):
        return False
    if any(s.health not in {None, "healthy"} for s in states):
        return False
    endpoints = runtime.endpoints()
    if set(runtime.services) <= READY_COVERS and ready_says_healthy(endpoints.api_url):
        return True
    from movieops.probes import service_probe

    return all(
        service_probe(s, endpoints, worker_interval).ok
        for s in runtime.services
        if s not in NO_PROBE
    )


def wait_healthy(
    runtime: Runtime,
    budget_seconds: float,
    worker_interval: int,
    on_progress: Callable[[list[ServiceProgress]], None],
    *,
    watch_rollout: bool = True,
) -> list[ServiceProgress]:
    """Wait until every service is healthy; each has ``budget_seconds`` from the start.

    Healthy means: running, its container healthcheck (if any) passing, and its semantic probe
    passing. Raises Unhealthy naming the first service that ran out of budget, or at once the
    first one that keeps crashing (restarted ``CRASH_RESTARTS`` times since the wait began).
    """
    started = time.monotonic()
    progress = {s: ServiceProgress(s) for s in runtime.services}
    first_restarts: dict[str, int] = {}

    def poll() -> list[ServiceProgress] | None:
        # Asked on every poll: a Swarm service's address is known only once its task runs.
        endpoints = runtime.endpoints()
        abandoned = runtime.rollout_failure() if watch_rollout else None
        if abandoned is not None:
            service, why = abandoned
            raise RolledBack(
                f"the update of {service} was rolled back: {why}",
                hint="the previous version runs again; movieops logs shows why the new one failed",
                data={"blocked": service, "services": list(progress.values())},
            )
        by_service: dict[str, list[ServiceState]] = {}
        crashing: dict[str, int] = {}
        for state in runtime.status():
            # Replicas show as api-1, api-2 …; redis-exporter is a service of its own.
            name, _, number = state.service.rpartition("-")
            base = name if number.isdigit() else state.service
            by_service.setdefault(base, []).append(state)
            if state.restarts is not None:
                restarted = state.restarts - first_restarts.setdefault(
                    state.service, state.restarts
                )
                if restarted >= CRASH_RESTARTS:
                    crashing[base] = max(crashing.get(base, 0), restarted)
        for service, item in progress.items():
            if not item.healthy:
                _update(item, by_service.get(service, []), endpoints, worker_interval, started)
        on_progress(list(progress.values()))
        if all(item.healthy for item in progress.values()):
            return list(progress.values())
        failed = next((i for i in progress.values() if i.state == "failed"), None)
        if failed is not None:  # a one-shot that exited non-zero: waiting cannot help
            raise Unhealthy(
                f"{failed.service} failed ({failed.detail})",
                data={"blocked": failed.service, "services": list(progress.values())},
            )
        crashed = next(
            (i for i in progress.values() if not i.healthy and i.service in crashing), None
        )
        if crashed is not None:
            raise Unhealthy(
                f"{crashed.service} keeps crashing: restarted {crashing[crashed.service]} times "
                f"in {time.monotonic() - started:.0f}s (state: {crashed.state})",
                data={"blocked": crashed.service, "services": list(progress.values())},
            )
        return None

    def out_of_budget() -> Unhealthy:
        blocked = next(item for item in progress.values() if not item.healthy)
        return Unhealthy(
            f"{blocked.service} did not become healthy within {budget_seconds:g}s "
            f"(state: {blocked.state}; {blocked.detail})",
            data={"blocked": blocked.service, "services": list(progress.values())},
        )

    interval = LOCAL_POLL_SECONDS if runtime.name == "local" else POLL_SECONDS
    return wait_until(poll, within=budget_seconds, interval=interval, error=out_of_budget)


def _update(
    item: ServiceProgress,
    states: list[ServiceState],
    endpoints: Endpoints,
    worker_interval: int,
    started: float,
) -> None:
    """One service's progress from its containers/processes and, once they are up, its probe."""
    from movieops.probes import service_probe

    if not states:
        item.state, item.detail = "missing", "not created yet"
        return
    not_up = [s for s in states if s.state not in UP_STATES]
    unhealthy = [s for s in states if s.health not in {None, "healthy"}]
    if not_up:
        item.state, item.detail = not_up[0].state, not_up[0].detail or ""
        return
    if unhealthy:
        item.state, item.detail = "starting", f"healthcheck: {unhealthy[0].health}"
        return
    if item.service in NO_PROBE:
        done = states[0].state == "done"
        item.state, item.healthy = ("done" if done else "healthy"), True
        item.detail = states[0].detail or "" if done else "container healthcheck passing"
        item.seconds = round(time.monotonic() - started, 1)
        return
    probe: Probe = service_probe(item.service, endpoints, worker_interval)
    if probe.ok:
        item.state, item.detail, item.healthy = "healthy", probe.detail, True
        item.seconds = round(time.monotonic() - started, 1)
    else:
        item.state, item.detail = "starting", probe.detail


# A traceback's last line, or the one ``error: …`` line the app's entry points print instead
# (invalid settings, a failed migration).
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b|error: ).*")


def last_exception(log_lines: list[str]) -> str | None:
    """The last ``SomeError: text`` (or ``error: text``) line of a service's log (its
    ``service |`` prefix dropped): the cause of a crash, in one line."""
    for line in reversed(log_lines):
        text = line.split("| ", 1)[1] if "| " in line else line
        if _EXCEPTION_LINE.match(text):
            return text.strip()
    return None


def save_bundle(runtime: Runtime, reports_dir: Path, blocked: str | None) -> Path:
    """A failure bundle: status, logs, health output and versions, in one directory."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bundle = reports_dir / f"up-failure-{stamp}"
    bundle.mkdir(parents=True, exist_ok=True)

    def attempt(name: str, produce: Callable[[], Any]) -> None:
        try:
            content = produce()
        except Exception as exc:  # a bundle must be written even when the runtime is sick
            content = f"could not collect {name}: {exc}"
        text = content if isinstance(content, str) else json.dumps(jsonable(content), indent=2)
        (bundle / name).write_text(text)

    attempt("status.json", runtime.status)
    attempt("logs.txt", lambda: "\n".join(runtime.logs([], 200, None, False)))
    attempt(
        "health.txt",
        lambda: "\n\n".join(f"## {s}\n{runtime.health_log(s)}" for s in runtime.services),
    )
    attempt("versions.json", runtime.versions)
    attempt("summary.json", lambda: {"runtime": runtime.name, "blocked": blocked, "at": stamp})
    return bundle


def bring_up(
    runtime: Runtime,
    options: UpOptions,
    *,
    budget_seconds: float,
    worker_interval: int,
    reports_dir: Path,
    on_progress: Callable[[list[ServiceProgress]], None],
    on_output: Callable[[str], None],
) -> UpResult:
    """Preflight, start, wait until healthy; on failure save a bundle and say where."""
    started = time.monotonic()
    checks = runtime.preflight(options)
    notes = [f"{c.name}: {c.detail}" for c in checks if c.ok and "stale" in c.detail]
    bad = failing(checks)
    if bad:
        first = bad[0]
        raise PreflightFailed(
            first.detail + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
            hint=first.fix,
            data={"checks": checks},
        )
    if not options.build and not options.image and healthy_now(runtime, worker_interval):
        return UpResult(
            runtime.name,
            True,
            round(time.monotonic() - started, 2),
            runtime.endpoints().redacted(),
            runtime.status(),
            notes,
        )
    try:
        # A start can fail on a service too (compose waits for migrate to exit 0).
        runtime.start(options, on_output)
        wait_healthy(runtime, budget_seconds, worker_interval, on_progress)
    except Unhealthy as exc:
        blocked = exc.data.get("blocked") if isinstance(exc.data, dict) else None
        bundle = save_bundle(runtime, reports_dir, blocked)
        last_logs: list[str] = []
        if blocked:
            with contextlib.suppress(MovieOpsError):
                last_logs = list(runtime.logs([blocked], 15, None, False))
        health = runtime.health_log(blocked) if blocked else ""
        cause = last_exception(last_logs)
        raise type(exc)(
            f"{exc.message}: {cause}" if cause else exc.message,
            hint=f"failure bundle saved in {bundle}",
            next_command=f"movieops logs {blocked}" if blocked else "movieops logs",
            data={
                **(exc.data if isinstance(exc.data, dict) else {}),
                "bundle": str(bundle),
                "health_output": health,
                "last_log_lines": last_logs,
            },
        ) from None
    return UpResult(
        runtime.name,
        False,
        round(time.monotonic() - started, 2),
        runtime.endpoints().redacted(),
        runtime.status(),
        notes,
    )
