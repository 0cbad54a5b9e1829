"""The benchmarked ASGI apps: one factory per variant, served by ``bench.server``.

Every variant serves the same ``GET /movies?limit=50`` page from the same SQLite database. The
FastAPI variants are all the product's own app (``create_app``: same routes, repository, access
log and idempotency middleware, which passes GETs through untouched); they differ only in what
limits the request and whether the response cache is used:

=============== ====================================================================
``baseline``     the product with its Redis features off (no rate limiter, no cache)
``limiter``      the product's rate limiter (one EVALSHA per request), no cache
``full``         the product as shipped: limiter + response cache, measured on cache hits
``full_nometrics``  ``full`` with ``MOVIE_METRICS_ENABLED=false``: what the metrics cost
``slowapi``      baseline + slowapi on the route (Redis storage, ``headers_enabled=True``)
``fastapi_limiter`` baseline + fastapi-limiter 0.2.0 (pyrate-limiter ``RedisBucket``, async)
``naive``        baseline + the tutorial ``@app.middleware("http")`` INCR-then-EXPIRE limiter
``starlette``    a bare Starlette route returning the same bytes (the framework ceiling)
``memory``       a plain FastAPI route, ``response_model=MoviePage``, returning the same page
                 held in memory (validated and serialised per request): the report's 1.00
``memory_slowapi``, ``memory_fastapi_limiter``  those two libraries guarding ``memory``
=============== ====================================================================

Every limiter gets a limit no benchmark can reach, so no request is refused: the point is the
overhead. Configuration comes from ``BENCH_DATABASE_URL`` and ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from app import repository
from app.config import Settings
from app.db import create_engine, session_factory
from app.main import create_app
from app.models import MoviePage
from app.ratelimit import RateLimitMiddleware
from app.routes import movies

#: The product's highest allowed limit (``MOVIE_RATE_LIMIT_PER_MINUTE`` is capped at 10**6):
#: 16,666 requests/s for a whole minute, far above what one worker serves.
PRODUCT_LIMIT_PER_MINUTE = 1_000_000
#: The third-party limiters take any number.
LIBRARY_LIMIT_PER_MINUTE = 1_000_000_000
#: The page every variant serves.
PAGE_SIZE = 50

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set (bench.variants is started by `python -m bench`)")
    return value


def database_url() -> str:
    """The shared SQLite database of every variant."""
    return _env("BENCH_DATABASE_URL")


def redis_url() -> str:
    """The embedded valkey-server every variant talks to."""
    return _env("BENCH_REDIS_URL")


def bench_settings(*, cache: bool = True, metrics: bool = True) -> Settings:
    """Product settings for the benchmark: huge limit, day-long cache, nothing from ``.env``."""
    return Settings(
        metrics_enabled=metrics,
        database_url=database_url(),
        redis_url=redis_url(),
        rate_limit_per_minute=PRODUCT_LIMIT_PER_MINUTE,
        cache_ttl_seconds=86_400,
        cache_enabled=cache,
        seed_demo_data=False,
        ready_requires_worker=False,
        log_level="WARNING",
        _env_file=None,
    )


def _is_class(candidate: object, cls: type) -> bool:
    """Identity check (``Middleware.cls`` is typed as a factory, not as a class)."""
    return candidate is cls


def _product(*, rate_limiter: bool, cache: bool, metrics: bool = True) -> FastAPI:
    """``create_app`` with the product's rate limiter, response cache and/or metrics off."""
    app = create_app(bench_settings(cache=cache, metrics=metrics))
    if not rate_limiter:
        # The middleware stack is built on the first request, so it can still be edited here.
        app.user_middleware = [
            m for m in app.user_middleware if not _is_class(m.cls, RateLimitMiddleware)
        ]
    return app


def _add_startup(app: FastAPI, hook: Lifespan) -> None:
    """Run ``hook`` inside the app's own lifespan (after its start-up, before its shutdown)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[None]:
        async with inner(asgi_app), hook(asgi_app):
            yield

    app.router.lifespan_context = lifespan


def _override_list_route(
    app: FastAPI, endpoint: Callable[..., Any], dependencies: list[Any] | None = None
) -> None:
    """Serve ``GET /movies`` with ``endpoint`` (and ``dependencies``), same contract as the
    product's route: the new route goes first, so it matches before the included router."""
    original = next(
        route
        for route in movies.router.routes
        if isinstance(route, APIRoute)
        and route.path == "/movies"
        and "GET" in (route.methods or ())
    )
    app.router.add_api_route(
        original.path,
        endpoint,
        methods=["GET"],
        name=original.name,
        response_model=original.response_model,
        responses=original.responses,
        dependencies=dependencies,
        tags=original.tags,
    )
    app.router.routes.insert(0, app.router.routes.pop())


def flatten_routes(app: FastAPI) -> None:
    """Replace each included router by its own routes, in place (what FastAPI did at include
    time before 0.16x).

    fastapi-limiter 0.2.0 reads ``route.path`` of every route of the app on every request;
    FastAPI 0.165 keeps ``include_router`` results as ``_IncludedRouter`` entries, which have no
    ``path``, so without this every limited request fails with AttributeError (HTTP 500).
    ``create_app`` includes its routers without prefix, tags or dependencies, so the flat routes
    are the same routes.
    """

    def flat(routes: list[Any]) -> list[Any]:
        out: list[Any] = []
        for route in routes:
            inner = getattr(route, "original_router", None)
            out.extend(flat(inner.routes) if inner is not None else [route])
        return out

    app.router.routes[:] = flat(app.router.routes)


# --- the product ------------------------------------------------------------------------------


def baseline() -> FastAPI:
    """Variant 1: the product with its Redis features off."""
    return _product(rate_limiter=False, cache=False)


def limiter() -> FastAPI:
    """Variant 2: the product's rate limiter only."""
    return _product(rate_limiter=True, cache=False)


def full() -> FastAPI:
    """Variant 3: the product as shipped (limiter + cache); the benchmark measures cache hits."""
    return _product(rate_limiter=True, cache=True)


def full_nometrics() -> FastAPI:
    """Variant 3b: ``full`` with metrics off (``MOVIE_METRICS_ENABLED=false``), the reference
    for the metrics' overhead on the cached GET path."""
    return _product(rate_limiter=True, cache=True, metrics=False)


# --- third-party limiters on the same endpoint ---------------------------------------------


def _slowapi_limiter(app: FastAPI) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """slowapi's documented Redis set-up (headers on) installed on ``app``; returns the
    decorator that limits one endpoint."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter_ = Limiter(key_func=get_remote_address, storage_uri=redis_url(), headers_enabled=True)
    app.state.limiter = limiter_
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    decorator: Callable[[Callable[..., Any]], Callable[..., Any]] = limiter_.limit(
        f"{LIBRARY_LIMIT_PER_MINUTE}/minute"
    )
    return decorator


def _fastapi_limiter_dependency(app: FastAPI) -> Any:
    """fastapi-limiter 0.2.0's ``RateLimiter`` dependency over a pyrate-limiter ``RedisBucket``
    on an asyncio Redis client (0.2.0 dropped ``FastAPILimiter.init``), connected in ``app``'s
    lifespan; returns ``Depends(...)`` of it."""
    from fastapi_limiter.depends import RateLimiter
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket
    from redis.asyncio import ConnectionPool, Redis

    # The dependency must exist when the route is declared; its async bucket needs a running
    # loop, so it is filled in at start-up.
    dependency = RateLimiter(limiter=None)  # type: ignore[arg-type]

    @asynccontextmanager
    async def connect(_app: Any) -> AsyncIterator[None]:
        redis = Redis(connection_pool=ConnectionPool.from_url(redis_url()))
        rates = [Rate(LIBRARY_LIMIT_PER_MINUTE, Duration.MINUTE)]
        bucket = await RedisBucket.init(rates, redis, "bench:fastapi-limiter")
        dependency.limiter = Limiter(bucket)
        try:
            yield
        finally:
            dependency.limiter.close()
            await redis.aclose()

    _add_startup(app, connect)
    return Depends(dependency)


def slowapi() -> FastAPI:
    """Variant 4a: slowapi's documented Redis set-up, with its rate-limit headers on."""
    app = baseline()
    _override_list_route(app, _slowapi_limiter(app)(movies.list_movies))
    return app


def fastapi_limiter() -> FastAPI:
    """Variant 4b: fastapi-limiter 0.2.0 on the product's un-cached route."""
    app = baseline()
    _override_list_route(app, movies.list_movies, dependencies=[_fastapi_limiter_dependency(app)])
    flatten_routes(app)
    return app


def naive() -> FastAPI:
    """Variant 5: the tutorial limiter: ``@app.middleware("http")``, INCR, then EXPIRE on the
    first hit (two separate commands: a crash in between leaves a key that never expires)."""
    from redis.asyncio import Redis

    app = baseline()
    redis = Redis.from_url(redis_url())

    @app.middleware("http")
    async def rate_limit(request: Request, call_next: Any) -> Response:
        client = request.client.host if request.client else "unknown"
        key = f"naive:{client}:{request.url.path}"
        count = await redis.incr(key)
        if count == 1:
            await redis.expire(key, 60)
        if count > LIBRARY_LIMIT_PER_MINUTE:
            return JSONResponse({"detail": "Too many requests"}, status_code=429)
        response: Response = await call_next(request)
        return response

    @asynccontextmanager
    async def disconnect(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await redis.aclose()

    _add_startup(app, disconnect)
    return app


# --- the framework ceiling --------------------------------------------------------------------


async def load_page(url: str, limit: int = PAGE_SIZE) -> bytes:
    """The exact body the product serves for ``GET /movies?limit=<limit>``."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            page = await repository.list_movies(session, limit=limit, offset=0, genre=None)
    finally:
        await engine.dispose()
    return page.model_dump_json().encode()


def starlette() -> Starlette:
    """Variant 6: a bare Starlette route returning the page's bytes, read once at start-up."""
    body = b""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        nonlocal body
        body = await load_page(database_url())
        yield

    async def list_movies(_request: Any) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/movies", list_movies)], lifespan=lifespan)


# --- the in-memory FastAPI route (the report's baseline) ------------------------------------


def _memory_app(guard: str | None = None) -> FastAPI:
    """A plain FastAPI app: ``GET /movies`` declared with ``response_model=MoviePage`` returns
    the page built once at start-up from the database, so FastAPI validates and serialises it
    on every request. ``guard``: ``"slowapi"`` or ``"fastapi_limiter"`` on that route."""
    state: dict[str, MoviePage] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state["page"] = MoviePage.model_validate_json(await load_page(database_url()))
        yield

    app = FastAPI(lifespan=lifespan)

    # slowapi with headers on needs the ``response`` parameter when an endpoint returns a model.
    async def list_movies(request: Request, response: Response) -> MoviePage:
        return state["page"]

    endpoint: Callable[..., Any] = list_movies
    dependencies = None
    if guard == "slowapi":
        endpoint = _slowapi_limiter(app)(list_movies)
    elif guard == "fastapi_limiter":
        dependencies = [_fastapi_limiter_dependency(app)]
    app.add_api_route(
        "/movies", endpoint, methods=["GET"], response_model=MoviePage, dependencies=dependencies
    )
    return app


def memory() -> FastAPI:
    """The baseline (1.00): FastAPI serving the 50-film page from memory."""
    return _memory_app()


def memory_slowapi() -> FastAPI:
    """slowapi (headers on) guarding the in-memory route."""
    return _memory_app("slowapi")


def memory_fastapi_limiter() -> FastAPI:
    """fastapi-limiter 0.2.0 guarding the in-memory route."""
    return _memory_app("fastapi_limiter")


#: Factory name -> factory, in the order variants are measured and reported.
FACTORIES: dict[str, Callable[[], Any]] = {
    "baseline": baseline,
    "limiter": limiter,
    "full": full,
    "full_nometrics": full_nometrics,
    "slowapi": slowapi,
    "fastapi_limiter": fastapi_limiter,
    "naive": naive,
    "starlette": starlette,
    "memory": memory,
    "memory_slowapi": memory_slowapi,
    "memory_fastapi_limiter": memory_fastapi_limiter,
}
