"""Request-scoped providers, each paired with an ``Annotated`` alias for handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from arq.connections import ArqRedis
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.cache import ResponseCache
from app.config import Settings
from app.constants import RETRY_AFTER_HEADER, RETRY_AFTER_UNAVAILABLE_SECONDS
from app.redisguard import RedisGuard, RedisUnavailable

T = TypeVar("T")


@dataclass
class Services:
    """What create_app builds once and every request shares."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[Any]
    guard: RedisGuard
    cache: ResponseCache


async def get_services(request: Request) -> Services:
    """The app's shared services (async: FastAPI runs a plain ``def`` dependency in its thread
    pool, a thread hop per request for an attribute read)."""
    services: Services = request.app.state.services
    return services


async def get_session(
    services: Annotated[Services, Depends(get_services)],
) -> AsyncIterator[AsyncSession]:
    """A database session for one request."""
    async with services.sessions() as session:
        yield session


async def call_queue(services: Services, operation: Callable[[ArqRedis], Awaitable[T]]) -> T:
    """Run a job-queue operation; 503 + Retry-After when Redis is unavailable."""
    try:
        return await services.guard.call(operation)
    except RedisUnavailable:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "The job queue (Redis) is unavailable; retry shortly",
            headers={RETRY_AFTER_HEADER: str(RETRY_AFTER_UNAVAILABLE_SECONDS)},
        ) from None


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
