"""Fixtures with real services: a valkey-server and (for ``postgres`` tests) a PostgreSQL
server for the session, a fresh database per test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.config import Settings
from app.main import create_app
from app.migrate import migrate
from tests.support import ValkeyProcess, free_port, hourly_refresh_minute

CLIENT_IP = "203.0.113.7"
T = TypeVar("T")


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
            # Half an hour away (tests of the schedule set their own minute or time).
            "hourly_refresh_minute": int(hourly_refresh_minute()),
            "_env_file": None,
        }
        values.update(overrides)
        built = Settings(**values)
        # The API and the worker wait for a migrated database: migrate (and seed, if asked)
        # as the deploy's migration step would.
        run_coroutine(migrate(built))
        return built

    return build


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


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


PG_BIN = Path(os.environ.get("MOVIEOPS_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresServer:
    """A throw-away PostgreSQL server: its own cluster in a temporary directory (owned by the
    ``postgres`` user when run as root, as initdb and postgres refuse root), a unix socket in
    that directory and 127.0.0.1 on a free port, no durability (fsync off: tests only)."""

    USER = "movie"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self._names = itertools.count(1)

    def _run(self, *argv: str) -> None:
        command = [str(PG_BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """initdb and start the server; return once it accepts connections."""
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", self.USER, "-E", "UTF8")
        self._run(
            "pg_ctl", "-D", str(data), "-l", str(self.dir / "log"), "-w", "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server and delete its cluster."""
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` (no password: the cluster trusts local users)."""
        return f"postgresql+asyncpg://{self.USER}@127.0.0.1:{self.port}/{database}"

    async def create_database(self) -> str:
        """A new empty database (from template0); its URL."""
        import asyncpg

        name = f"test_{next(self._names)}"
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=self.USER, database="postgres"
        )
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        finally:
            await conn.close()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL 15 server for the session (skipped without its binaries on a
    laptop; under MOVIEOPS_REQUIRE_ALL=1 that skip is a failure)."""
    if not (PG_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql)")
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def pg_url(postgres: PostgresServer) -> str:
    """The URL of a fresh, empty PostgreSQL database for this test."""
    return await postgres.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'movies.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return await server.create_database()


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
