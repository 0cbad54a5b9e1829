"""The migration step of a deploy (``python -m app.migrate``): upgrade the database named by
``MOVIE_DATABASE_URL`` to the head revision, then seed the demo catalog once when
``MOVIE_SEED_DEMO_DATA`` is set.

Run it once before starting the API and the worker, which wait for the revision it records
instead of racing each other to change the schema. Safe when several run at once: the upgrade
takes turns (a SQLite write lock, a PostgreSQL advisory lock) and the seed happens once.
Prints one line naming the revision; on failure one ``error:`` line and exit status 1 (2 for
invalid settings).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import stamina
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings, load_settings_or_exit
from app.db import create_engine, create_schema, wait_for_schema
from app.seed import seed_demo_catalog


@dataclass(frozen=True, slots=True)
class Migrated:
    """What a migration step did: the revision the database is at, films seeded."""

    revision: str
    seeded: int


def _not_up_yet(exc: Exception) -> bool:
    """A database that is not accepting connections yet (its host not resolvable yet, the
    port refusing, PostgreSQL still starting up): worth waiting for. A wrong password or a bad
    database name is not."""
    cause = getattr(exc, "orig", None) or exc
    return isinstance(cause, OSError) or type(cause).__name__ == "CannotConnectNowError"


async def _wait_until_reachable(engine: AsyncEngine, timeout_seconds: float) -> None:
    """Connect once, retrying for up to ``timeout_seconds`` while the database is not up yet:
    on Swarm the migration job may start before PostgreSQL does (there is no depends_on)."""
    async for attempt in stamina.retry_context(
        on=_not_up_yet,
        attempts=None,
        timeout=max(timeout_seconds, 0.001),
        wait_initial=0.2,
        wait_max=1.0,
    ):
        with attempt:
            async with engine.connect():
                pass


async def migrate(settings: Settings) -> Migrated:
    """Upgrade the database of ``settings`` to head and seed it once (if configured); wait
    up to MOVIE_SCHEMA_WAIT_SECONDS for a database that is not accepting connections yet."""
    engine = create_engine(settings.database_connect_url())
    try:
        await _wait_until_reachable(engine, settings.schema_wait_seconds)
        revision = await create_schema(engine)
        seeded = await seed_demo_catalog(engine) if settings.seed_demo_data else 0
    finally:
        await engine.dispose()
    return Migrated(revision, seeded)


async def _wait(settings: Settings) -> str:
    engine = create_engine(settings.database_connect_url())
    try:
        return await wait_for_schema(engine, settings.schema_wait_seconds)
    finally:
        await engine.dispose()


def require_schema(settings: Settings) -> str:
    """Before a process starts serving: wait (up to MOVIE_SCHEMA_WAIT_SECONDS) until the
    database is at this build's head revision; raise ``SchemaNotReady`` past the deadline."""
    return asyncio.run(_wait(settings))


def main() -> int:
    """Entry point: one line on success (exit 0) or failure (exit 1)."""
    settings = load_settings_or_exit()
    # The step says one line: no log line per attempt while it waits for the database.
    stamina.instrumentation.set_on_retry_hooks([])
    try:
        result = asyncio.run(migrate(settings))
    except (SQLAlchemyError, OSError) as exc:
        # The driver's message, never the URL (which may carry a password).
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        print(f"error: migration failed: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    seeded = f", seeded {result.seeded} demo films" if result.seeded else ""
    print(f"database schema at revision {result.revision} (head){seeded}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
