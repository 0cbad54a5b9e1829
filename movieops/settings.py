"""The CLI's own settings (``MOVIEOPS_*``), next to the stack's ``MOVIE_*`` ones."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config import Settings, SettingsError, load_settings
from movieops.errors import ConfigError

RuntimeName = Literal["auto", "compose", "swarm", "local"]


class CliSettings(BaseSettings):
    """How movieops finds and drives the stack. Options on the command line win."""

    model_config = SettingsConfigDict(
        env_prefix="MOVIEOPS_", env_file=".env", extra="ignore", frozen=True
    )

    runtime: RuntimeName = Field(default="auto", description="auto, compose, swarm or local.")
    api_url: str | None = Field(default=None, description="Attach to this API instead.")
    redis_url: str | None = Field(default=None, description="Attach to this Redis instead.")
    state_dir: Path = Field(
        default=Path(".movieops"), description="Local runtime state, logs and failure bundles."
    )
    compose_project: str = Field(
        default="movieops", pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Compose project name."
    )
    swarm_stack: str = Field(
        default="movieops",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,29}$",
        description="Swarm stack name (--runtime swarm).",
    )
    api_port: int = Field(default=8000, ge=1, le=65_535, description="Published API port.")
    proxy_port: int = Field(default=8080, ge=1, le=65_535, description="Published proxy port.")
    redis_port: int = Field(default=6379, ge=1, le=65_535, description="Published Redis port.")
    postgres_port: int = Field(
        default=5432, ge=1, le=65_535, description="Published PostgreSQL port (compose)."
    )
    prometheus_port: int = Field(
        default=9090, ge=1, le=65_535, description="Published Prometheus port (up --monitoring)."
    )
    health_timeout: float = Field(
        default=180, gt=0, le=3_600, description="Per-service budget (s) to become healthy."
    )
    contract_token: str | None = Field(
        default=None, description="Rate-limit exemption token for `movieops contract`."
    )


def state_dir_of(settings: CliSettings, project_dir: Path) -> Path:
    """Where local state, tokens and reports live (MOVIEOPS_STATE_DIR, relative to the project)."""
    path = settings.state_dir
    return path if path.is_absolute() else project_dir / path


def load_cli_settings(**overrides: object) -> CliSettings:
    """MOVIEOPS_* settings, or a ConfigError naming the bad variable."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return CliSettings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"MOVIEOPS_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors() if e["loc"]
        ]
        raise ConfigError(
            "invalid settings: " + "; ".join(problems),
            hint="fix the variable (environment or .env), or the matching option",
        ) from None


def load_stack_settings() -> Settings:
    """MOVIE_* settings, or a ConfigError naming the bad variable."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise ConfigError(str(exc), hint="fix the variable in your environment or .env") from None
