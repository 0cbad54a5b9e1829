"""Liveness and readiness probes (exempt from rate limiting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.constants import HEALTH_CHECK_KEY
from app.db import schema_revision
from app.deps import Services, ServicesDep
from app.models import Check, DatabaseCheck, Liveness, Readiness
from app.responses import REQUEST_ID_HEADERS

router = APIRouter(tags=["health"])

READY_CHECK_TIMEOUT_SECONDS = 2.0


class WorkerMissing(Exception):
    """No worker heartbeat in Redis."""


@router.get(
    "/health",
    response_model=Liveness,
    responses={200: {"description": "Alive.", "headers": REQUEST_ID_HEADERS}},
)
async def health() -> Liveness:
    """Liveness: the process answers. No I/O."""
    return Liveness(status="ok")


async def _timed(probe: Callable[[], Awaitable[object]]) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), READY_CHECK_TIMEOUT_SECONDS)
    except (TimeoutError, RedisError, SQLAlchemyError, OSError, WorkerMissing) as exc:
        reason = str(exc) or type(exc).__name__
        return Check(ok=False, detail=f"{type(exc).__name__}: {reason}"[:300])
    return Check(ok=True, detail="ok", latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def readiness_checks(services: Services) -> dict[str, Check]:
    """The checks of /ready (database, Redis, the worker's heartbeat), each within
    ``READY_CHECK_TIMEOUT_SECONDS``."""
    revision: list[str | None] = [None]

    async def database() -> None:
        revision[0] = await schema_revision(services.engine)

    async def redis() -> None:
        await services.guard.client.ping()

    async def worker() -> None:
        ttl_ms = await services.guard.client.pttl(HEALTH_CHECK_KEY)
        if ttl_ms < 0:
            raise WorkerMissing("no worker heartbeat: is the worker running?")

    # Side by side: the whole set takes at most one check's timeout, not three.
    database_check, redis_check, worker_check = await asyncio.gather(
        _timed(database), _timed(redis), _timed(worker)
    )
    return {
        "database": DatabaseCheck(**database_check.model_dump(), revision=revision[0]),
        "redis": redis_check,
        "worker": worker_check,
    }


async def dependencies_ready(services: Services) -> dict[str, bool]:
    """Which dependencies pass their readiness check (the metrics' readiness gauge)."""
    return {name: check.ok for name, check in (await readiness_checks(services)).items()}


@router.get(
    "/ready",
    response_model=Readiness,
    responses={
        200: {"description": "Every required dependency answers.", "headers": REQUEST_ID_HEADERS},
        503: {
            "model": Readiness,
            "description": "A dependency is down; see checks.",
            "headers": REQUEST_ID_HEADERS,
        },
    },
)
async def ready(services: ServicesDep) -> JSONResponse:
    """Readiness: database, Redis and the worker's heartbeat. 503 names the failing check."""
    checks = await readiness_checks(services)
    required = ["database", "redis"] + (
        ["worker"] if services.settings.ready_requires_worker else []
    )
    ok = all(checks[name].ok for name in required)
    body = Readiness(status="ready" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
