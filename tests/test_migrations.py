"""Schema migrations: the `python -m app.migrate` step, adoption of databases made before
migrations, and the API and worker waiting for the revision they need."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from app.config import Settings
from app.db import (
    Base,
    SchemaNotReady,
    _create_or_upgrade,
    create_engine,
    create_schema,
    head_revision,
    schema_revision,
    wait_for_schema,
)
from app.main import create_app
from app.seed import FILMS
from tests.support import free_port


async def _run_module(module: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_migrate_steps_running_at_once_upgrade_and_seed_exactly_once(
    database_url: str,
) -> None:
    """Three `python -m app.migrate` at once on a fresh database: all exit 0 with one line
    naming the head revision, and exactly one of them seeds the demo catalog."""
    env = {"MOVIE_DATABASE_URL": database_url, "MOVIE_SEED_DEMO_DATA": "true"}
    results = await asyncio.gather(*(_run_module("app.migrate", env) for _ in range(3)))
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    lines = [out.strip() for _, out, _ in results]
    assert all(len(out.splitlines()) == 1 and "revision 0001 (head)" in out for out in lines)
    assert sum(f"seeded {len(FILMS)} demo films" in out for out in lines) == 1
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        movies = (await conn.execute(text("SELECT COUNT(*), MAX(id) FROM movies"))).one()
    await engine.dispose()
    assert tuple(movies) == (len(FILMS), len(FILMS))


@pytest.mark.postgres
async def test_migrate_step_fails_with_one_line_when_the_database_is_unreachable() -> None:
    """No server at the URL, still none after MOVIE_SCHEMA_WAIT_SECONDS: exit 1 and one
    `error:` line, no traceback."""
    url = f"postgresql+asyncpg://movie@127.0.0.1:{free_port()}/movies"
    env = {"MOVIE_DATABASE_URL": url, "MOVIE_SCHEMA_WAIT_SECONDS": "1"}
    code, out, err = await _run_module("app.migrate", env)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: migration failed:")


async def _forward(port: int, target: tuple[str, int]) -> asyncio.Server:
    """A TCP forwarder on 127.0.0.1:``port`` to ``target``: a database that appears late."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)


@pytest.mark.postgres
async def test_migrate_step_waits_for_a_database_that_is_not_up_yet(pg_url: str) -> None:
    """On Swarm the migration job can start before PostgreSQL: nothing answers at first, the
    step keeps trying (MOVIE_SCHEMA_WAIT_SECONDS) and migrates once the server is there."""
    real = urlsplit(pg_url.replace("postgresql+asyncpg", "http"))
    port = free_port()
    late_url = pg_url.replace(f"{real.hostname}:{real.port}", f"127.0.0.1:{port}")
    env = {"MOVIE_DATABASE_URL": late_url, "MOVIE_SCHEMA_WAIT_SECONDS": "30"}
    step = asyncio.create_task(_run_module("app.migrate", env))
    await asyncio.sleep(1.5)
    assert not step.done()
    server = await _forward(port, (str(real.hostname), int(real.port or 5432)))
    try:
        code, out, err = await asyncio.wait_for(step, 60)
    finally:
        server.close()
    assert code == 0, err
    assert "revision 0001 (head)" in out


async def test_the_models_match_the_migrations(database_url: str) -> None:
    """A database migrated to head has exactly the tables, columns and indexes of the models
    (a model change without a migration fails here)."""
    engine = create_engine(database_url)
    await create_schema(engine)
    async with engine.connect() as conn:
        diffs = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await engine.dispose()
    assert diffs == []


async def test_a_database_made_before_migrations_is_adopted_by_stamping(
    database_url: str,
) -> None:
    """Tables at schema version 2 made by the old create_schema, with data: the step stamps
    revision 0001 and keeps every row."""
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(_create_or_upgrade)  # what create_schema did before migrations
        await conn.execute(text("INSERT INTO movies (title, year, created_at, updated_at) "
                                "VALUES ('Heat', 1995, '2025-01-01', '2025-01-01')"))  # fmt: skip
    assert await schema_revision(engine) is None
    assert await create_schema(engine) == head_revision() == "0001"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT title FROM movies"))).scalars().all() == ["Heat"]
        version = "SELECT value FROM app_meta WHERE key = 'schema_version'"
        assert (await conn.execute(text(version))).scalar_one() == "2"
    await engine.dispose()


async def test_waiting_for_the_schema_returns_once_the_migration_step_ran(
    database_url: str,
) -> None:
    """A replica waiting on a fresh database starts as soon as the step has migrated it."""
    engine = create_engine(database_url)
    waiting = asyncio.create_task(wait_for_schema(engine, 30))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await create_schema(engine)
    assert await waiting == "0001"
    await engine.dispose()


async def test_waiting_for_the_schema_gives_up_naming_both_revisions(tmp_path: Path) -> None:
    """Past the wait, the error says where the database is, what the build needs, and what to
    run."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    with pytest.raises(SchemaNotReady) as caught:
        await wait_for_schema(engine, 0)
    await engine.dispose()
    assert str(caught.value) == (
        "database schema is at revision none, this build needs 0001: run `python -m app.migrate`"
    )


@pytest.mark.parametrize("module", ["app", "app.worker"])
async def test_api_and_worker_exit_with_one_line_on_an_unmigrated_database(
    tmp_path: Path, module: str
) -> None:
    """`python -m app` and `python -m app.worker` on a database never migrated: after
    MOVIE_SCHEMA_WAIT_SECONDS, exit 1 with one line saying what to run."""
    env = {
        "MOVIE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}",
        "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MOVIE_SCHEMA_WAIT_SECONDS": "0.5",
        "MOVIE_PORT": str(free_port()),
    }
    code, _, err = await _run_module(module, env)
    assert code == 1
    assert err.strip().splitlines() == [
        "error: database schema is at revision none, this build needs 0001: "
        "run `python -m app.migrate`"
    ]


async def test_ready_reports_the_schema_revision(client: httpx.AsyncClient) -> None:
    """/ready's database check carries the revision; the other checks keep their shape."""
    checks = (await client.get("/ready")).json()["checks"]
    assert checks["database"]["revision"] == "0001"
    assert set(checks["database"]) == {"ok", "detail", "latency_ms", "revision"}
    assert set(checks["redis"]) == {"ok", "detail", "latency_ms"}


async def test_the_app_starts_on_postgresql_after_the_migration_step(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    """The API on a migrated PostgreSQL database serves the seeded catalog and /ready."""
    settings = make_settings(database_url=pg_url, seed_demo_data=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            page = (await http.get("/movies?limit=1")).json()
            ready = (await http.get("/ready")).json()
            created = await http.post("/movies", json={"title": "New", "year": 2024})
    assert page["total"] == len(FILMS)
    assert ready["checks"]["database"] == {**ready["checks"]["database"], "ok": True}
    assert ready["checks"]["database"]["revision"] == "0001"
    assert created.status_code == 201
    assert created.json()["id"] == len(FILMS) + 1
