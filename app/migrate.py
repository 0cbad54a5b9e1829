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

from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings, load_settings_or_exit
from app.db import create_engine, create_schema, wait_for_schema
from app.seed import seed_demo_catalog


@dataclass(frozen=True, slots=True)
class Migrated:
    """What a migration step did: the revision the database is at, films seeded."""

    revision: str
    seeded: int


async def migrate(settings: Settings) -> Migrated:
    """Upgrade the database of ``settings`` to head and seed it once (if configured)."""
    engine = create_engine(settings.database_connect_url())
    try:
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
