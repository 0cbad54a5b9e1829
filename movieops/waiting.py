"""One way to wait for something: poll a check until it yields a value, or give up in time."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(within: float) -> Callable[[], Exception]:
    return lambda: TimeoutError(f"not done within {within:g}s")


def wait_until(
    check: Callable[[], T | None],
    *,
    within: float,
    interval: float,
    error: Callable[[], Exception] | None = None,
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns a value (not None) and return it.

    ``check`` runs at least once, and may raise to stop waiting early. After ``within`` seconds
    raise ``error()`` (built then, so it can name the last state seen), else TimeoutError.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise (error or _timed_out(within))()
        time.sleep(interval)


async def wait_until_async(
    check: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    interval: float,
    error: Callable[[], Exception] | None = None,
) -> T:
    """``wait_until`` for an async check, sleeping without blocking the event loop."""
    import asyncio  # the CLI's synchronous commands never need the event loop machinery

    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise (error or _timed_out(within))()
        await asyncio.sleep(interval)
