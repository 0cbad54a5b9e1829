"""Preflight checks that read only settings and the file system (pure of any runtime)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote, unquote

from movieops.runtime import Check

# SQLAlchemy's URL grammar (sqlalchemy.engine.url._parse_url), for the parts read here: importing
# SQLAlchemy costs `up` a good part of a second, and these checks need only the backend name and
# the database path. A URL this does not match goes to SQLAlchemy itself, which says why.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)

DATABASE_FIX = (
    "set MOVIE_DATABASE_URL to a file in a writable directory, "
    "e.g. sqlite+aiosqlite:///./data/movies.db"
)


def backend_and_database(database_url: str) -> tuple[str, str | None]:
    """The backend name (``sqlite`` of ``sqlite+aiosqlite``) and the database part of a URL,
    as SQLAlchemy's ``make_url`` reads them."""
    match = _URL.match(database_url)
    if match is None:
        from sqlalchemy.engine import make_url  # raises ArgumentError naming the problem

        url = make_url(database_url)
        return url.get_backend_name(), url.database
    database = match["database"]
    return match["name"].split("+")[0], None if database is None else unquote(database)


def with_database(database_url: str, database: str) -> str:
    """``database_url`` naming ``database`` instead (quoted as SQLAlchemy renders it)."""
    match = _URL.match(database_url)
    if match is None:
        from sqlalchemy.engine import make_url

        return str(make_url(database_url).set(database=database))
    rendered = "/" + quote(database, safe=" +/")
    if match["database"] is None:
        at = match.start("query") - 1 if match["query"] is not None else len(database_url)
        return database_url[:at] + rendered + database_url[at:]
    start, end = match.span("database")
    return database_url[: start - 1] + rendered + database_url[end:]


def sqlite_path(database_url: str, project_dir: Path) -> Path | None:
    """The SQLite file ``database_url`` names (relative paths from ``project_dir``), or None
    for another database or an in-memory one."""
    backend, database = backend_and_database(database_url)
    if backend != "sqlite" or not database or database == ":memory:":
        return None
    path = Path(database)
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
        return Check("database", True, f"{backend_and_database(database_url)[0]}: not checked")
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
