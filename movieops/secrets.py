"""Secret-bearing files and text: private from birth, never shown.

Every file movieops writes that holds a secret (the contract exemption token, the Redis password,
configs that embed them) is created 0600 in one step inside a 0700 directory, and replaced
atomically, so no other user can ever read it, not even for the moment between create and chmod.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
REDACTED = "***"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700; return it."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o777) != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, atomically (a sibling temp file, then rename).

    The temp file is created with O_EXCL and mode 0600, so its content is never readable by
    anyone else, and readers see either the old file or the whole new one.
    """
    private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def read_secret(path: Path) -> str | None:
    """The secret stored in ``path``, or None when there is none (missing or empty)."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value or None


def ensure_secret(path: Path, nbytes: int = 24) -> str:
    """The secret in ``path``, created (random hex, 0600) on first use."""
    existing = read_secret(path)
    if existing is not None:
        if (path.stat().st_mode & 0o777) != PRIVATE_FILE_MODE:
            path.chmod(PRIVATE_FILE_MODE)  # an older movieops wrote it 0644
        return existing
    value = secrets.token_hex(nbytes)
    write_private(path, value)
    return value


def redact_url(url: str) -> str:
    """A URL with its password (if any) replaced by ``***``: safe to print or store in a report."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redact(text: str, values: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each secret in ``values`` replaced by ``***``."""
    for value in values:
        if value:
            text = text.replace(value, REDACTED)
    return text


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@")


def redact_urls_in(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL in it hidden."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
