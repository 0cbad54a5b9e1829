"""Preflight checks that read only settings and the file system (pure of any runtime)."""

from __future__ import annotations

import os
from pathlib import Path

from movieops.runtime import Check

DATABASE_FIX = (
    "set MOVIE_DATABASE_URL to a file in a writable directory, "
    "e.g. sqlite+aiosqlite:///./data/movies.db"
)


def sqlite_path(database_url: str, project_dir: Path) -> Path | None:
    """The SQLite file ``database_url`` names (relative paths from ``project_dir``), or None
    for another database or an in-memory one."""
    from sqlalchemy.engine import make_url  # SQLAlchemy's URL parser; not for `status`

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    return path if path.is_absolute() else project_dir / path


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def database_check(database_url: str, project_dir: Path) -> Check:
    """Whether the API can create or open its SQLite file: its directory exists or can be
    made (no file in the way, writable), and the path is not itself a directory."""
    path = sqlite_path(database_url, project_dir)
    if path is None:
        from sqlalchemy.engine import make_url

        return Check("database", True, f"{make_url(database_url).get_backend_name()}: not checked")
    if path.is_dir():
        return Check("database", False, f"database {path} is a directory", DATABASE_FIX)
    existing = _first_existing(path.parent)
    if not existing.is_dir():
        return Check(
            "database",
            False,
            f"cannot create the database directory {path.parent}: {existing} is a file",
            DATABASE_FIX,
        )
    target = path if path.exists() else existing
    if not os.access(target, os.W_OK):
        return Check("database", False, f"database {target} is not writable", DATABASE_FIX)
    return Check("database", True, str(path))
