"""Redis on the request path: short timeouts and a circuit breaker, so a sick Redis costs little.

When Redis fails ``threshold`` times in a row the breaker opens and every feature skips Redis for
``cooldown`` seconds (rate limiting fails open, the cache bypasses, idempotency fails closed);
then one request tries again and, if it works, Redis is back for everybody.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from app.config import Settings
from app.jobcodec import arq_client

log = logging.getLogger("app.redis")

T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis could not be used for this request (down, slow, or the breaker is open)."""


@dataclass
class CircuitBreaker:
    """Consecutive-failure breaker; pure logic over an injectable clock."""

    threshold: int
    cooldown_seconds: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None

    def allow(self) -> bool:
        """True when a call may go to Redis (closed, or half-open after the cool-down)."""
        return not self.is_open()

    def record_success(self) -> None:
        """A call worked: close the breaker."""
        if self.opened_at is not None:
            log.warning("redis is back; circuit breaker closed")
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        """A call failed: count it, and (re)open the breaker at the threshold."""
        self.failures += 1
        if self.failures >= self.threshold:
            if self.opened_at is None:
                log.error("redis failed %d times in a row; skipping it", self.failures)
            self.opened_at = self.clock()

    def is_open(self) -> bool:
        """Whether calls are being skipped right now."""
        if self.opened_at is None:
            return False
        return self.clock() - self.opened_at < self.cooldown_seconds


class RedisGuard:
    """The request path's Redis client plus its breaker; ``call`` runs one guarded operation."""

    def __init__(self, client: ArqRedis, breaker: CircuitBreaker) -> None:
        self.client = client
        self.breaker = breaker
        self.errors = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisGuard:
        """A client with the short socket timeouts of the request path."""
        pool = ConnectionPool.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_ms / 1000,
            socket_connect_timeout=settings.redis_connect_timeout_ms / 1000,
            retry_on_timeout=False,
            retry=None,
            health_check_interval=0,
        )
        client = arq_client(pool)  # job records as JSON, never pickle
        breaker = CircuitBreaker(
            threshold=settings.redis_breaker_threshold,
            cooldown_seconds=settings.redis_breaker_cooldown_seconds,
        )
        return cls(client, breaker)

    async def call(self, operation: Callable[[ArqRedis], Awaitable[T]]) -> T:
        """Run ``operation(client)``; raise :class:`RedisUnavailable` if Redis can't be used."""
        if not self.breaker.allow():
            raise RedisUnavailable("circuit breaker open")
        try:
            result = await operation(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            self.breaker.record_failure()
            log.warning("redis call failed: %s: %s", type(exc).__name__, exc)
            raise RedisUnavailable(str(exc) or type(exc).__name__) from exc
        self.breaker.record_success()
        return result

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose(close_connection_pool=True)
