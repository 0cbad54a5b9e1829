"""Secrets from files (MOVIE_SECRETS_DIR) and passwords kept out of URLs, errors and reprs."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import SettingsError, load_settings


def test_settings_read_values_and_passwords_from_the_secrets_directory(tmp_path: Path) -> None:
    """A file named after the lower-case variable sets it; the password joins a URL without one."""
    (tmp_path / "movie_redis_password").write_text("r3dis:pw/\n")
    (tmp_path / "movie_database_password").write_text("pg-pw")
    (tmp_path / "movie_port").write_text("8123")
    settings = load_settings(
        secrets_dir=tmp_path,
        database_url="postgresql+asyncpg://movie@db:5432/movies",
        redis_url="redis://redis:6379/0",
        _env_file=None,
    )
    assert settings.port == 8123
    assert settings.redis_connect_url() == "redis://:r3dis%3Apw%2F@redis:6379/0"
    assert settings.database_connect_url() == "postgresql+asyncpg://movie:pg-pw@db:5432/movies"
    assert "pg-pw" not in repr(settings)
    assert "r3dis" not in repr(settings)


def test_a_password_in_the_url_wins_over_the_password_setting() -> None:
    """MOVIE_REDIS_PASSWORD is used only when the URL carries no password."""
    settings = load_settings(
        redis_url="redis://:inurl@redis:6379/0", redis_password="other", _env_file=None
    )
    assert settings.redis_connect_url() == "redis://:inurl@redis:6379/0"


def test_an_invalid_setting_never_shows_the_password(tmp_path: Path) -> None:
    """The one-line settings error names the bad variable, not the secret next to it."""
    (tmp_path / "movie_database_password").write_text("topsecret")
    (tmp_path / "movie_port").write_text("not-a-port")
    with pytest.raises(SettingsError) as caught:
        load_settings(secrets_dir=tmp_path, _env_file=None)
    assert "MOVIE_PORT" in str(caught.value)
    assert "topsecret" not in str(caught.value)
