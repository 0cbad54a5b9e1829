"""Fixtures with real services: a valkey-server for the session, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.config import Settings
from app.main import create_app
from tests.support import ValkeyProcess

CLIENT_IP = "203.0.113.7"


class ExternalRedis(ValkeyProcess):
    """A Redis the test run did not start (CI's service container); never started or stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(port=0)
        if urlsplit(url).password is None:
            raise pytest.UsageError(
                "MOVIEOPS_TEST_REDIS_URL must carry the server's password "
                "(redis://:PASSWORD@host:port/0): the tests run against an authenticated Redis"
            )
        self._url = url

    @property
    def url(self) -> str:
        """The given URL."""
        return self._url

    def start(self, timeout: float = 10.0) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""


@pytest.fixture(scope="session")
def valkey() -> Iterator[ValkeyProcess]:
    """One real Redis-protocol server for the whole session: the embedded valkey-server, or
    the one MOVIEOPS_TEST_REDIS_URL names (it is flushed before every test that uses it)."""
    external = os.environ.get("MOVIEOPS_TEST_REDIS_URL")
    server = ExternalRedis(external) if external else ValkeyProcess()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(valkey: ValkeyProcess) -> AsyncIterator[Redis]:
    """A client of the session's server, flushed before each test."""
    client = Redis.from_url(valkey.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def make_settings(tmp_path: Path, valkey: ValkeyProcess) -> Callable[..., Settings]:
    """Settings for a test: its own SQLite file, the session's Redis, a generous limit."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'movies.db'}",
            "redis_url": valkey.url,
            "rate_limit_per_minute": 10_000,
            "seed_demo_data": False,
            "ready_requires_worker": False,
            "gc_freeze": False,  # hundreds of apps in one test process: let them be collected
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Default test settings."""
    return make_settings()


@pytest.fixture
async def app(settings: Settings, redis: Redis) -> AsyncIterator[FastAPI]:
    """The app for ``settings``, started (schema created) and stopped around the test."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process HTTP client; the peer address is CLIENT_IP."""
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests' environment from leaking real settings in."""
    for name in list(os.environ):
        if name.startswith("MOVIE_"):
            del os.environ[name]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """With MOVIEOPS_REQUIRE_ALL=1 (set by .ci/run) a skipped test is a failure: CI must run
    every test, including those that need Docker, instead of skipping them quietly."""
    report = yield
    if (
        os.environ.get("MOVIEOPS_REQUIRE_ALL") == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
    ):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
    return report
