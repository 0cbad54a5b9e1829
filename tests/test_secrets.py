"""Secret-bearing files are private from birth, and secrets never reach what is shown."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from movieops import secrets as movie_secrets


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_creates_0600_inside_a_0700_dir_even_with_a_lax_umask(
    tmp_path: Path,
) -> None:
    """Neither the file nor its directory is ever readable by others, whatever the umask."""
    old = os.umask(0o000)
    try:
        target = tmp_path / "state" / "token"
        movie_secrets.write_private(target, "s3cret")
    finally:
        os.umask(old)
    assert target.read_text() == "s3cret"
    assert _mode(target) == 0o600
    assert _mode(target.parent) == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["token"]  # no temp file left


def test_write_private_replaces_atomically_and_tightens_an_existing_dir(tmp_path: Path) -> None:
    """A second write replaces the content; a 0755 state dir from an older version is fixed."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    movie_secrets.write_private(state / "conf", "one")
    movie_secrets.write_private(state / "conf", "two")
    assert (state / "conf").read_text() == "two"
    assert _mode(state) == 0o700


def test_write_private_never_opens_the_file_with_wider_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is created 0600 in the open() call itself, not chmodded afterwards."""
    modes: list[int] = []
    real_open = os.open

    def spy(path: object, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            modes.append(mode)
        return real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    movie_secrets.write_private(tmp_path / "x" / "secret", "v")
    assert modes == [0o600]


def test_ensure_secret_creates_once_and_fixes_an_old_0644_file(tmp_path: Path) -> None:
    """The same secret comes back; a file left 0644 by an older version becomes 0600."""
    path = tmp_path / "state" / "redis.password"
    first = movie_secrets.ensure_secret(path)
    assert len(first) == 48
    assert movie_secrets.ensure_secret(path) == first
    path.chmod(0o644)
    assert movie_secrets.ensure_secret(path) == first
    assert _mode(path) == 0o600


def test_read_secret_is_none_for_a_missing_or_empty_file(tmp_path: Path) -> None:
    """No file, or a blank one, means no secret."""
    assert movie_secrets.read_secret(tmp_path / "nope") is None
    (tmp_path / "blank").write_text("\n")
    assert movie_secrets.read_secret(tmp_path / "blank") is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user:pw@redis:6379/1", "redis://user:***@redis:6379/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    """Host, port and database stay readable; the password never does."""
    assert movie_secrets.redact_url(url) == shown


def test_redact_replaces_every_secret_and_urls_in_free_text() -> None:
    """Free text (a log line, a report) loses every secret it contains."""
    text = "curl -H 'X-RateLimit-Exempt: tok123' redis://:pw9@host:1/0 tok123"
    hidden = movie_secrets.redact_urls_in(movie_secrets.redact(text, ["tok123", None, ""]))
    assert "tok123" not in hidden
    assert "pw9" not in hidden
    assert hidden.count("***") == 3
