"""``movieops up`` (foreground runtime): starts embedded Redis and the API, stops both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from movieops import __version__
from movieops.cli import cli
from movieops.foreground import port_is_free
from tests.support import free_port


def _env(tmp_path: Path, api_port: int, redis_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "MOVIE_PORT": str(api_port),
        "MOVIE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MOVIE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'movies.db'}",
    }


def test_up_serves_the_seeded_api_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """A real subprocess: /movies answers with seeded films and rate-limit headers, the worker
    runs a refresh, /ready is 200; SIGTERM stops the API, the worker and the embedded
    valkey-server it started."""
    api_port, redis_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "movieops.cli", "up", "--state-dir", str(tmp_path / "state")],
        env=_env(tmp_path, api_port, redis_port),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{api_port}/movies", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "movieops up exited early"
                assert time.monotonic() < deadline, "API did not come up"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["total"] >= 50
        assert response.headers["x-ratelimit-limit"] == "20"
        assert not port_is_free("127.0.0.1", redis_port)
        base = f"http://127.0.0.1:{api_port}"
        assert httpx.post(f"{base}/users/42/recommendations/refresh").status_code == 202
        while httpx.get(f"{base}/jobs/refresh:42").json().get("state") != "complete":
            assert time.monotonic() < deadline + 30, "the worker did not run the refresh"
            time.sleep(0.1)
        assert httpx.get(f"{base}/ready").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert f"embedded valkey-server on redis://127.0.0.1:{redis_port}/0" in stderr
    assert port_is_free("127.0.0.1", redis_port)
    assert port_is_free("127.0.0.1", api_port)


def test_up_refuses_a_busy_api_port_with_one_line_and_exit_4(tmp_path: Path) -> None:
    """Preflight names the port and the fix instead of failing later."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "movieops.cli", "up"],
            env=_env(tmp_path, port, free_port()),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 4
    assert f"API port 127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_reports_invalid_settings_with_exit_2(monkeypatch: object) -> None:
    """A bad MOVIE_* variable is named; exit code 2 (usage/config)."""
    result = CliRunner().invoke(cli, ["up"], env={"MOVIE_PORT": "http"})
    assert result.exit_code == 2
    assert "MOVIE_PORT" in result.output


def test_version_prints_the_package_version() -> None:
    """``movieops --version``."""
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"movieops {__version__}"
