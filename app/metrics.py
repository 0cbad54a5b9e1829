"""Prometheus metrics of one API process, served at ``GET /metrics`` (per-replica scraping).

Every app built by ``create_app`` owns a ``CollectorRegistry`` of its own (never the library's
global default registry: the tests build many apps in one process, and two apps must not count
into each other). Label values are bounded: ``route`` is a route template or ``unmatched``,
``method`` one of the methods the API knows or ``OTHER``, ``status`` the numeric status.

The hot path stays cheap: label children are bound once per (method, route, status) and kept
in a dict, so a request costs a few dict look-ups and prometheus-client's own per-value locks.
The route template is the one the rate limiter already matched (``RouteTemplates`` caches it
in the request's scope), so no request is matched twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from app.constants import CACHE_STATUS_HEADER, UNMATCHED_ROUTE_TEMPLATE
from app.ratelimit import RouteTemplates

log = logging.getLogger("app.metrics")

METRICS_PATH: Final = "/metrics"
KNOWN_METHODS: Final = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})
OTHER_METHOD: Final = "OTHER"
UNMATCHED_ROUTE_LABEL: Final = "unmatched"

RATE_LIMIT_DECISIONS: Final = ("allowed", "limited", "exempt", "failed_open")
CACHE_OUTCOMES: Final = ("hit", "miss", "bypass", "not_modified")
IDEMPOTENCY_OUTCOMES: Final = ("stored", "replayed", "conflict", "mismatch", "unavailable")
DEPENDENCIES: Final = ("database", "redis", "worker")

READINESS_MAX_AGE_SECONDS: Final = 5.0
"""A scrape runs the readiness checks again only when the last run is older than this."""

# Latency buckets (seconds): a cached GET takes well under a millisecond of server time, a
# write a few; the top buckets catch Redis retries (1 s budget) and the 2 s readiness timeouts.
DURATION_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

_CACHE_HEADER = CACHE_STATUS_HEADER.lower().encode()
_CACHE_OUTCOME_OF = {b"HIT": "hit", b"MISS": "miss", b"BYPASS": "bypass"}

ReadinessProbe = Callable[[], Awaitable[Mapping[str, bool]]]


class ApiMetrics:
    """The API process's metrics, in a registry of their own."""

    def __init__(self, templates: RouteTemplates | None = None) -> None:
        self.templates = templates
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        registry = self.registry
        self.requests = Counter(
            "movie_http_requests",
            "Requests answered.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "movie_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # Counted in a plain int on the event loop (every request runs on it) and read at
        # scrape time: two lock round trips per request fewer than Gauge.inc/dec.
        self.active = 0
        Gauge(
            "movie_http_requests_in_progress", "Requests being handled now.", registry=registry
        ).set_function(lambda: self.active)
        rate_limit = Counter(
            "movie_rate_limit_decisions",
            "Rate-limit decisions; failed_open: let through because Redis did not answer.",
            ["decision"],
            registry=registry,
        )
        cache = Counter(
            "movie_cache_requests",
            "GET /movies cache outcomes (not_modified: a 304).",
            ["outcome"],
            registry=registry,
        )
        idempotency = Counter(
            "movie_idempotency_requests",
            "POSTs with an Idempotency-Key by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "movie_redis_errors",
            "Redis calls that failed or timed out (each retry counts).",
            registry=registry,
        )
        self.redis_breaker_open = Gauge(
            "movie_redis_breaker_open",
            "1 while the circuit breaker skips Redis.",
            registry=registry,
        )
        dependency_ready = Gauge(
            "movie_dependency_ready",
            "1 when the dependency passed its readiness check (run at scrape time, at most "
            f"every {READINESS_MAX_AGE_SECONDS:g} s).",
            ["dependency"],
            registry=registry,
        )
        # Every labelled child exists from the start (a zero is a sample, an absent series is
        # not), bound once so the hot path never formats labels.
        self.rate_limit = {name: rate_limit.labels(name) for name in RATE_LIMIT_DECISIONS}
        self.cache = {name: cache.labels(name) for name in CACHE_OUTCOMES}
        self.idempotency = {name: idempotency.labels(name) for name in IDEMPOTENCY_OUTCOMES}
        self.dependency_ready = {name: dependency_ready.labels(name) for name in DEPENDENCIES}
        # (method, route, status) -> its request counter and duration histogram, bound once;
        # bounded like the labels (known methods, the app's templates, HTTP statuses).
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._readiness_at: float | None = None
        self._readiness_run: asyncio.Task[None] | None = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        children = self._children.get((method, route, status))
        if children is None:
            label = UNMATCHED_ROUTE_LABEL if route == UNMATCHED_ROUTE_TEMPLATE else route
            children = self._children[method, route, status] = (
                self.requests.labels(method, label, str(status)),
                self.duration.labels(method, label),
            )
        children[0].inc()
        children[1].observe(seconds)

    def request_started(self) -> None:
        """One more request in progress (``app.requestid.RequestIdMiddleware`` calls this)."""
        self.active += 1

    def request_finished(
        self,
        scope: Scope,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        seconds: float,
    ) -> None:
        """Count one answered request: by method, route template and status, its duration,
        and the cache outcome of a cached GET (its ``X-Cache`` header, or a 304).

        Called by the outermost layer (``RequestIdMiddleware``) once the answer is sent, so a
        body-limit refusal, a cache hit answered before routing and an unhandled error's 500
        are all counted; no layer of its own wraps the request for it.
        """
        self.active -= 1
        route = self.templates.template_for(scope) if self.templates else UNMATCHED_ROUTE_TEMPLATE
        self.observe(scope["method"], route, status, seconds)
        if status == 200 or status == 304:
            for name, value in headers:
                if name == _CACHE_HEADER:
                    outcome = "not_modified" if status == 304 else _CACHE_OUTCOME_OF.get(value)
                    if outcome is not None:
                        self.cache[outcome].inc()
                    break

    def watch_breaker(self, is_open: Callable[[], bool]) -> None:
        """Read the breaker's state at scrape time."""
        self.redis_breaker_open.set_function(lambda: 1.0 if is_open() else 0.0)

    async def refresh_readiness(self, probe: ReadinessProbe) -> None:
        """Run ``probe`` (the checks of /ready) unless they ran in the last few seconds;
        concurrent scrapes share one run."""
        now = time.monotonic()
        if self._readiness_at is not None and now - self._readiness_at < READINESS_MAX_AGE_SECONDS:
            return
        if self._readiness_run is None or self._readiness_run.done():
            self._readiness_run = asyncio.ensure_future(self._run_readiness(probe))
        await asyncio.shield(self._readiness_run)

    async def _run_readiness(self, probe: ReadinessProbe) -> None:
        try:
            results = await probe()
        except Exception:  # a check that broke unexpectedly: not ready, and say why
            log.exception("readiness checks for the metrics failed")
            results = {}
        for name, gauge in self.dependency_ready.items():
            gauge.set(1.0 if results.get(name) else 0.0)
        self._readiness_at = time.monotonic()

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


def metrics_endpoint(
    metrics: ApiMetrics, readiness: ReadinessProbe
) -> Callable[[Request], Awaitable[Response]]:
    """The ``GET /metrics`` handler: refresh the readiness gauges if stale, then expose."""

    async def serve_metrics(_request: Request) -> Response:
        await metrics.refresh_readiness(readiness)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return serve_metrics
