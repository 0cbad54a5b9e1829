"""Redis on the request path: slow is not down, and a sick Redis costs little.

Each operation gets a short per-attempt timeout and, when it times out, is retried within a small
budget (``MOVIE_REDIS_RETRY_BUDGET_MS``): a Redis stalled for a moment (a busy machine, a fork for
persistence) answers the retry, and the request never notices. Refused connections and other errors
are not retried: that is down, not slow.

A circuit breaker counts failed *stalls*, not failed calls: calls that were already in flight when
a failure was counted belong to the same stall, so fifty concurrent requests caught by one pause
count once. After ``threshold`` stalls in a row it opens and every feature skips Redis for
``cooldown`` seconds (rate limiting fails open, the cache bypasses, idempotency fails closed).
Then exactly one call probes Redis; the others stay on the open path until that probe succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import stamina
from arq.connections import ArqRedis
from prometheus_client import Counter
from redis.asyncio import ConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.config import Settings
from app.jobcodec import arq_client
from app.redismux import MultiplexedRedis

log = logging.getLogger("app.redis")

T = TypeVar("T")

# Back-off between retries of a timed-out call: short, since the whole budget is about a second.
RETRY_WAIT_INITIAL_SECONDS = 0.01
RETRY_WAIT_MAX_SECONDS = 0.1


class RedisUnavailable(Exception):
    """Redis could not be used for this request (down, slow, or the breaker is open)."""


@dataclass(frozen=True)
class Attempt:
    """Permission to call Redis, handed out by the breaker."""

    started_at: float
    probe: bool  # the single call that tests a half-open breaker


@dataclass
class CircuitBreaker:
    """Stall-counting breaker with a single half-open probe; pure logic over an injectable clock."""

    threshold: int
    cooldown_seconds: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    last_failure_at: float | None = None
    probing: bool = False

    def acquire(self) -> Attempt | None:
        """An attempt when a call may go to Redis; None while the breaker is open.

        Once the cool-down has passed, the first caller gets the probe and everyone else keeps
        skipping Redis until the probe reports back.
        """
        now = self.clock()
        if self.opened_at is None:
            return Attempt(now, probe=False)
        if now - self.opened_at < self.cooldown_seconds or self.probing:
            return None
        self.probing = True
        return Attempt(now, probe=True)

    def record_success(self, attempt: Attempt | None = None) -> None:
        """A call worked: close the breaker."""
        if self.opened_at is not None:
            log.warning("redis is back; circuit breaker closed")
        self.failures = 0
        self.opened_at = None
        self.last_failure_at = None
        self.probing = False

    def record_failure(self, attempt: Attempt | None = None) -> None:
        """A call failed: count it unless it overlapped a failure already counted."""
        now = self.clock()
        if attempt is not None and attempt.probe:
            self.probing = False
            self.opened_at = now  # still down: another full cool-down
            log.warning("redis probe failed; circuit breaker stays open")
            return
        started = attempt.started_at if attempt is not None else now
        if self.last_failure_at is not None and started <= self.last_failure_at:
            return  # in flight when an earlier failure was counted: the same stall
        self.failures += 1
        self.last_failure_at = now
        if self.failures >= self.threshold and self.opened_at is None:
            log.error("redis failed %d times in a row; skipping it", self.failures)
            self.opened_at = now

    def release(self, attempt: Attempt) -> None:
        """A call ended without a verdict (cancelled): free the probe for the next caller."""
        if attempt.probe:
            self.probing = False

    def is_open(self) -> bool:
        """Whether calls are being skipped right now (open, or half-open with a probe out)."""
        if self.opened_at is None:
            return False
        return self.probing or self.clock() - self.opened_at < self.cooldown_seconds


class RedisGuard:
    """The request path's Redis client plus its breaker; ``call`` runs one guarded operation."""

    def __init__(
        self,
        client: ArqRedis,
        breaker: CircuitBreaker,
        retry_budget_seconds: float = 0.0,
        attempt_timeout_seconds: float | None = None,
    ) -> None:
        self.client = client
        self.breaker = breaker
        self.retry_budget_seconds = retry_budget_seconds
        self.attempt_timeout_seconds = attempt_timeout_seconds
        # movie_redis_errors_total (app.metrics), counting every failed attempt; None: uncounted.
        self.errors: Counter | None = None
        # The hot path's pipelining connection (app.redismux), when the URL allows one.
        self.mux = MultiplexedRedis.for_pool(
            client.connection_pool, stall_seconds=max(2.0, 2 * retry_budget_seconds)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisGuard:
        """A client with the short timeouts of the request path.

        The per-attempt timeout is an ``asyncio.timeout`` around each attempt rather than the
        pool's ``socket_timeout``: redis-py runs every write under ``asyncio.wait_for`` when a
        socket timeout is set, which costs a task per command. A timed-out attempt disconnects
        its connection (redis-py closes a connection whose command was cancelled).
        """
        pool = ConnectionPool.from_url(
            settings.redis_connect_url(),
            socket_timeout=None,
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
        return cls(
            client,
            breaker,
            settings.redis_retry_budget_ms / 1000,
            attempt_timeout_seconds=settings.redis_timeout_ms / 1000,
        )

    async def call(self, operation: Callable[[ArqRedis], Awaitable[T]]) -> T:
        """Run ``operation(client)``; raise :class:`RedisUnavailable` if Redis can't be used.

        A timed-out operation runs again while the retry budget lasts, so it must be safe to
        repeat (every script here is: a repeated INCR over-counts by one, never under-counts).
        """
        attempt = self.breaker.acquire()
        if attempt is None:
            raise RedisUnavailable("circuit breaker open")
        try:
            result = await self._with_retries(operation)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.record_failure(attempt)
            log.warning("redis call failed: %s: %s", type(exc).__name__, exc)
            raise RedisUnavailable(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self.breaker.release(attempt)
            raise
        self.breaker.record_success(attempt)
        return result

    async def script(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int | bytes]
    ) -> Any:
        """One guarded EVALSHA of a registered script: on the pipelining connection when there
        is one, else through redis-py (both load the script again on NOSCRIPT)."""
        mux = self.mux

        async def run(redis: ArqRedis) -> Any:
            if mux is not None:
                return await mux.evalsha(script.script, script.sha, list(keys), list(args))
            return await script(keys=list(keys), args=list(args), client=redis)

        return await self.call(run)

    async def _with_retries(self, operation: Callable[[ArqRedis], Awaitable[T]]) -> T:
        # The first attempt runs bare (the request path's common case costs no retry machinery);
        # only a timed-out call enters stamina's loop for what is left of the budget.
        started = time.monotonic()
        try:
            return await self._attempt(operation)
        except RedisTimeoutError:
            left = self.retry_budget_seconds - (time.monotonic() - started)
            if left <= 0:
                raise
        async for retry in stamina.retry_context(
            on=RedisTimeoutError,
            attempts=None,
            timeout=left,
            wait_initial=RETRY_WAIT_INITIAL_SECONDS,
            wait_max=RETRY_WAIT_MAX_SECONDS,
            wait_jitter=RETRY_WAIT_INITIAL_SECONDS,
        ):
            with retry:
                return await self._attempt(operation)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _attempt(self, operation: Callable[[ArqRedis], Awaitable[T]]) -> T:
        try:
            if self.attempt_timeout_seconds is None:
                return await operation(self.client)
            try:
                async with asyncio.timeout(self.attempt_timeout_seconds):
                    return await operation(self.client)
            except TimeoutError:
                raise RedisTimeoutError(
                    f"no answer within {self.attempt_timeout_seconds * 1000:g} ms"
                ) from None
        except (RedisError, OSError):
            if self.errors is not None:
                self.errors.inc()
            raise

    async def aclose(self) -> None:
        """Close the connection pool and the pipelining connection."""
        if self.mux is not None:
            await self.mux.aclose()
        await self.client.aclose(close_connection_pool=True)
