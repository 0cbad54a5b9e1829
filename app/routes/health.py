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
from app.deps import ServicesDep
from app.models import Check, DatabaseCheck, Liveness, Readiness

router = APIRouter(tags=["health"])

READY_CHECK_TIMEOUT_SECONDS = 2.0


class WorkerMissing(Exception):
    """No worker heartbeat in Redis."""


@router.get("/health", response_model=Liveness)
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


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down; see checks."}},
)
async def ready(services: ServicesDep) -> JSONResponse:
    """Readiness: database, Redis and the worker's heartbeat. 503 names the failing check."""

    revision: list[str | None] = [None]

    async def database() -> None:
        revision[0] = await schema_revision(services.engine)

    async def redis() -> None:
        await services.guard.client.ping()

    async def worker() -> None:
        ttl_ms = await services.guard.client.pttl(HEALTH_CHECK_KEY)
        if ttl_ms < 0:
            raise WorkerMissing("no worker heartbeat: is the worker running?")

    database_check = await _timed(database)
    checks: dict[str, Check] = {
        "database": DatabaseCheck(**database_check.model_dump(), revision=revision[0]),
        "redis": await _timed(redis),
        "worker": await _timed(worker),
    }
    required = ["database", "redis"] + (
        ["worker"] if services.settings.ready_requires_worker else []
    )
    ok = all(checks[name].ok for name in required)
    body = Readiness(status="ready" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
