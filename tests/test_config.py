"""Settings: defaults, parsing, and one clear error naming the bad variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import seed
from app.config import Settings, SettingsError, load_settings
from tests.support import free_port


def test_defaults_are_the_documented_ones() -> None:
    """20 requests/minute, 60 s cache, no trusted proxies, loopback bind."""
    settings = Settings(_env_file=None)
    assert settings.rate_limit_per_minute == 20
    assert settings.cache_ttl_seconds == 60
    assert settings.trusted_proxies == []
    assert settings.host == "127.0.0.1"
    assert settings.redis_url.startswith("redis://127.0.0.1")


def test_environment_is_read_with_the_movie_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """MOVIE_* variables fill the fields; proxies are a comma-separated list."""
    monkeypatch.setenv("MOVIE_RATE_LIMIT_PER_MINUTE", "7")
    monkeypatch.setenv("MOVIE_TRUSTED_PROXIES", "10.0.0.2, 172.16.0.0/12")
    monkeypatch.setenv("MOVIE_LOG_LEVEL", "debug")
    settings = load_settings(_env_file=None)
    assert settings.rate_limit_per_minute == 7
    assert settings.trusted_proxies == ["10.0.0.2", "172.16.0.0/12"]
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MOVIE_RATE_LIMIT_PER_MINUTE", "lots"),
        ("MOVIE_RATE_LIMIT_PER_MINUTE", "0"),
        ("MOVIE_TRUSTED_PROXIES", "not-an-ip"),
        ("MOVIE_TRUSTED_PROXIES", "*"),
        ("MOVIE_TRUSTED_PROXIES", "10.0.0.2, *"),
        ("MOVIE_TRUSTED_PROXIES", "0.0.0.0/0"),
        ("MOVIE_TRUSTED_PROXIES", "::/0"),
        ("MOVIE_REDIS_URL", "localhost:6379"),
        ("MOVIE_DATABASE_URL", "movies.db"),
        ("MOVIE_LOG_LEVEL", "chatty"),
        ("MOVIE_PORT", "70000"),
    ],
)
def test_invalid_value_raises_one_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """The message starts with the variable's name, so the fix is obvious."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert f"{variable}:" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("module", ["app", "app.worker"])
def test_processes_refuse_to_start_on_invalid_settings(module: str) -> None:
    """``python -m app`` and ``python -m app.worker`` print one line naming the variable and
    exit 2, no traceback."""
    env = {**os.environ, "MOVIE_RATE_LIMIT_PER_MINUTE": "-5"}
    result = subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings: MOVIE_RATE_LIMIT_PER_MINUTE:")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_api_refuses_to_trust_every_proxy() -> None:
    """``MOVIE_TRUSTED_PROXIES='*'`` (anyone could choose their identity) stops ``python -m app``
    with exit 2 and one line naming the variable, before it serves anything."""
    env = {**os.environ, "MOVIE_TRUSTED_PROXIES": "*", "MOVIE_PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings: MOVIE_TRUSTED_PROXIES: ")
    assert "'*'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_env_example_lists_every_setting_with_its_default() -> None:
    """``.env.example`` stays in sync (``python scripts/sync_docs.py``): every field, and
    loading it changes nothing."""
    example = Path(__file__).resolve().parent.parent / ".env.example"
    names = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert names == {f"MOVIE_{field.upper()}" for field in Settings.model_fields}
    assert Settings(_env_file=example) == Settings(_env_file=None)


def test_seed_command_loads_a_generated_data_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m app.seed`` loads into MOVIE_DATABASE_URL and says what it did."""
    monkeypatch.setenv("MOVIE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}")
    assert seed.main(["--movies", "30", "--ratings", "100", "--users", "5"]) == 0
    assert "loaded 30 movies and 100 ratings" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--users", "0"], ["--movies", "-1"]])
def test_seed_command_rejects_bad_counts(argv: list[str]) -> None:
    """Nonsense counts are a usage error (exit 2), not a traceback."""
    with pytest.raises(SystemExit) as caught:
        seed.main(argv)
    assert caught.value.code == 2
