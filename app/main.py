"""The application factory: ``create_app(settings)`` wires database, Redis and middleware.

``app`` (as in ``uvicorn app.main:app`` or ``fastapi run app/main.py``) is the API built from
the environment's settings on first access, never at import: importing this module reads no
settings and connects nothing.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.accesslog import AccessLogMiddleware
from app.bodylimit import BodyLimitMiddleware
from app.cache import ResponseCache
from app.config import Settings, load_settings_or_exit
from app.db import create_engine, session_factory, wait_for_schema
from app.deps import Services
from app.idempotency import IdempotencyMiddleware
from app.identity import IdentityMiddleware
from app.logs import configure_logging
from app.metrics import METRICS_PATH, ApiMetrics, metrics_endpoint
from app.ratelimit import EXEMPT_PATHS, RateLimiter, RateLimitMiddleware, RouteTemplates
from app.redisguard import RedisGuard
from app.requestid import RequestIdMiddleware
from app.responses import bounded_errors, problem
from app.routes import health, jobs, movies, ratings, recommendations
from app.routes.health import dependencies_ready

log = logging.getLogger("app")

API_VERSION = "1.0.0"


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route accepts on this path (Starlette's 405 lists only the first route's).

    Probing each method keeps this independent of how routers nest their routes.
    """
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def create_app(settings: Settings) -> FastAPI:
    """Build the API for ``settings`` (nothing connects until start-up)."""
    engine = create_engine(settings.database_connect_url())
    guard = RedisGuard.from_settings(settings)
    services = Services(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        guard=guard,
        cache=ResponseCache(guard, settings.cache_ttl_seconds, enabled=settings.cache_enabled),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The schema is the migration step's (python -m app.migrate), run once per deploy:
        # replicas only wait for the revision this code needs (SchemaNotReady past the wait).
        revision = await wait_for_schema(engine, settings.schema_wait_seconds)
        log.info("database schema at revision %s", revision)
        if settings.gc_freeze:
            # Start-up objects (routes, schemas, SQLAlchemy's metadata, pydantic validators)
            # live as long as the process: frozen, full collections stop rescanning them.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await guard.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Movie API",
        version=API_VERSION,
        summary="Catalog and ratings, with Redis rate limiting, caching and idempotency.",
        lifespan=lifespan,
        # operationId = handler name (read_movie, create_movie …): stable, and what links use.
        generate_unique_id_function=lambda route: route.name,
        # FastAPI's OpenTelemetry hooks look for providers on every request; this service has
        # its own access log, so they stay off and cost nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.include_router(health.router)
    app.include_router(movies.router)
    app.include_router(ratings.router)
    app.include_router(recommendations.router)
    app.include_router(jobs.router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse(problem(exc.detail), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            return JSONResponse(problem("Request body is not valid JSON"), status_code=400)
        return JSONResponse(problem(bounded_errors(errors)), status_code=422)

    # One route matcher for every layer that names the route (matched once per request).
    templates = RouteTemplates(app.router.routes)
    metrics = ApiMetrics(templates) if settings.metrics_enabled else None
    exempt_paths = EXEMPT_PATHS
    if metrics is not None:
        app.state.metrics = metrics
        guard.errors = metrics.redis_errors
        metrics.watch_breaker(guard.breaker.is_open)
        app.add_route(
            METRICS_PATH,
            metrics_endpoint(metrics, lambda: dependencies_ready(services)),
            methods=["GET"],
            include_in_schema=False,
        )
        exempt_paths = EXEMPT_PATHS | {METRICS_PATH}

    # Outermost last: request id (and metrics) -> body limit -> identity -> access log ->
    # rate limit -> idempotency -> routes.
    app.add_middleware(
        IdempotencyMiddleware,
        guard=guard,
        lease_seconds=settings.idempotency_lease_seconds,
        ttl_seconds=settings.idempotency_ttl_seconds,
        max_response_bytes=settings.idempotency_max_response_bytes,
        outcomes=metrics.idempotency if metrics is not None else None,
    )
    app.add_middleware(
        RateLimitMiddleware,
        limiter=RateLimiter(
            guard, settings.rate_limit_per_minute, settings.rate_limit_window_seconds
        ),
        routes=app.router.routes,
        exempt_tokens=settings.rate_limit_exempt_tokens,
        cache=services.cache,
        templates=templates,
        exempt_paths=exempt_paths,
        decisions=metrics.rate_limit if metrics is not None else None,
    )
    app.add_middleware(AccessLogMiddleware, templates=templates)
    # The client identity, once per request: the peer, or (from a trusted proxy only) the
    # right-most untrusted X-Forwarded-For address; a client cannot choose its identity.
    app.add_middleware(IdentityMiddleware, trusted_proxies=settings.trusted_proxies)
    # A body too large or too slow is refused before any other layer runs.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    # Outermost of all: every answer, a 413 or an unhandled error's 500 included, has its id,
    # and is counted in the metrics (when on) from here, so they cost no layer of their own.
    app.add_middleware(RequestIdMiddleware, observer=metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    """``app``: the API for the environment's settings, built once on first access (an invalid
    MOVIE_* setting prints one line and exits 2, as ``python -m app`` does)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    settings = load_settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    served = create_app(settings)
    globals()["app"] = served  # later look-ups (uvicorn's, after fastapi-cli's) find this one
    return served


def __dir__() -> list[str]:
    """The module's names, with ``app`` (fastapi-cli looks for it in ``dir()``)."""
    return sorted({*globals(), "app"})
