"""The compose runtime's own files and URLs, without a Docker engine: the generated Redis
password, the 0600 compose.env that carries it, and what status shows of it."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from movieops.runtime.compose import ComposeRuntime


def _runtime(tmp_path: Path) -> ComposeRuntime:
    return ComposeRuntime(
        tmp_path / "project", "movieops-unit", tmp_path / "state", (18000, 18080, 16379), "t" * 32
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_compose_env_is_private_and_carries_a_generated_redis_password(tmp_path: Path) -> None:
    """compose.env is 0600 in a 0700 state dir and holds a 48-hex-digit MOVIE_REDIS_PASSWORD,
    generated once and the same for every later command."""
    runtime = _runtime(tmp_path)
    runtime.client()
    env_file = tmp_path / "state" / "compose.env"
    assert _mode(env_file) == 0o600
    assert _mode(tmp_path / "state") == 0o700
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert re.fullmatch(r"[0-9a-f]{48}", values["MOVIE_REDIS_PASSWORD"])
    assert values["MOVIE_RATE_LIMIT_EXEMPT_TOKENS"] == "t" * 32
    assert _mode(tmp_path / "state" / "redis.password") == 0o600
    assert _runtime(tmp_path).redis_password == values["MOVIE_REDIS_PASSWORD"]


def test_an_old_world_readable_compose_env_is_replaced_private(tmp_path: Path) -> None:
    """A compose.env an older movieops left 0644 is rewritten 0600."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "compose.env").write_text("MOVIE_API_PORT=1\n")
    (state / "compose.env").chmod(0o644)
    _runtime(tmp_path).client()
    assert _mode(state / "compose.env") == 0o600
    assert "MOVIE_REDIS_PASSWORD=" in (state / "compose.env").read_text()


def test_redis_endpoint_has_the_password_but_status_shows_it_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """endpoints() gives clients the authenticated URL; status rows show `***` instead."""
    runtime = _runtime(tmp_path)
    password = runtime.redis_password
    assert runtime.endpoints().redis_url == f"redis://:{password}@127.0.0.1:16379/0"
    monkeypatch.setattr(runtime, "_ps_rows", list)  # nothing running: every service "missing"
    rows = {row.service: row for row in runtime.status()}
    assert rows["redis"].url == "redis://:***@127.0.0.1:16379/0"
    assert all(password not in (row.url or "") for row in rows.values())
