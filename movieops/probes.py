"""Semantic health probes: what a person would check by hand, each with a reason on failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from redis import Redis
from redis.exceptions import RedisError

from app.constants import HEALTH_CHECK_KEY
from movieops.errors import NotRunning, Unhealthy
from movieops.runtime import Endpoints
from movieops.secrets import redact_url
from movieops.waiting import wait_until

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Probe:
    """One probe's outcome."""

    name: str
    ok: bool
    detail: str
    latency_ms: float | None = None


def _timed(name: str, probe: Callable[[], str]) -> Probe:
    started = time.perf_counter()
    try:
        detail = probe()
    except ProbeFailed as exc:
        return Probe(name, False, str(exc))
    except httpx.HTTPError as exc:
        return Probe(name, False, f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__)
    except (RedisError, OSError) as exc:
        return Probe(name, False, f"{type(exc).__name__}: {exc}"[:200])
    return Probe(name, True, detail, round((time.perf_counter() - started) * 1000, 1))


class ProbeFailed(Exception):
    """A probe got an answer, but the wrong one."""


def probe_http(url: str, expect: int = 200) -> str:
    """GET ``url``; fail unless the status is ``expect``."""
    response = httpx.get(url, timeout=PROBE_TIMEOUT_SECONDS)
    if response.status_code != expect:
        reason = response.text[:200].replace("\n", " ")
        raise ProbeFailed(f"HTTP {response.status_code}: {reason}")
    return f"HTTP {response.status_code}"


def redis_client(url: str) -> Redis:
    """A client with short timeouts, for probing."""
    return Redis.from_url(
        url, socket_timeout=PROBE_TIMEOUT_SECONDS, socket_connect_timeout=PROBE_TIMEOUT_SECONDS
    )


def probe_redis(url: str) -> str:
    """PING."""
    with redis_client(url) as client:
        client.ping()
    return "PONG"


def probe_worker(url: str, interval_seconds: int) -> str:
    """The worker's heartbeat key: present, and how old (arq rewrites it every interval)."""
    with redis_client(url) as client:
        ttl_ms = int(client.pttl(HEALTH_CHECK_KEY))
    if ttl_ms < 0:
        raise ProbeFailed("no worker heartbeat in Redis: the worker is not running")
    age = max(0.0, interval_seconds + 1 - ttl_ms / 1000)
    return f"heartbeat {age:.1f}s old"


def run_probes(endpoints: Endpoints, worker_interval_seconds: int) -> list[Probe]:
    """API liveness and readiness, Redis PING, worker heartbeat, and the proxy route if any."""
    probes = [
        _timed("api /health", lambda: probe_http(f"{endpoints.api_url}/health")),
        _timed("api /ready", lambda: probe_http(f"{endpoints.api_url}/ready")),
        _timed("redis", lambda: probe_redis(endpoints.redis_url)),
        _timed("worker", lambda: probe_worker(endpoints.redis_url, worker_interval_seconds)),
    ]
    if endpoints.proxy_url:
        probes.append(_timed("proxy", lambda: probe_http(f"{endpoints.proxy_url}/health")))
    return probes


def service_probe(service: str, endpoints: Endpoints, worker_interval_seconds: int) -> Probe:
    """The probe that says one service is healthy."""
    checks: dict[str, Callable[[], str]] = {
        "redis": lambda: probe_redis(endpoints.redis_url),
        "api": lambda: probe_http(f"{endpoints.api_url}/health"),
        "worker": lambda: probe_worker(endpoints.redis_url, worker_interval_seconds),
        "proxy": lambda: probe_http(f"{endpoints.proxy_url}/health"),
    }
    return _timed(service, checks[service])


def check_health(
    endpoints: Endpoints, worker_interval_seconds: int, *, wait: bool, timeout: float
) -> list[Probe]:
    """Every probe passing (with ``wait``: once they all pass within ``timeout`` seconds).

    Raises NotRunning when nothing answers at all (without ``wait``), else Unhealthy naming each
    failing probe; both carry the probes as data.
    """
    last: list[Probe] = []

    def passing() -> list[Probe] | None:
        nonlocal last
        last = run_probes(endpoints, worker_interval_seconds)
        bad = [p for p in last if not p.ok]
        if not bad:
            return last
        if not wait and len(bad) == len(last):
            raise NotRunning(
                f"nothing answers at {endpoints.api_url} or {redact_url(endpoints.redis_url)}",
                hint="start the stack with `movieops up` (or check --api-url/--redis-url)",
                data=last,
            )
        if not wait:
            raise _unhealthy(last)
        return None

    return wait_until(passing, within=timeout, interval=0.5, error=lambda: _unhealthy(last))


def _unhealthy(probes: list[Probe]) -> Unhealthy:
    bad = [p for p in probes if not p.ok]
    return Unhealthy(
        f"{len(bad)} probe(s) failing: " + "; ".join(f"{p.name}: {p.detail}" for p in bad),
        hint="`movieops status` and `movieops logs` show why",
        data=probes,
    )


def http_problem(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """Why ``url`` does not answer 200 (``ConnectError``, ``HTTP 503`` …), or None when it does."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code}"
