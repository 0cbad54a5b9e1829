"""Service settings, read once at start-up from ``MOVIE_*`` environment variables (or ``.env``)."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]


class SettingsError(Exception):
    """Invalid configuration: the message names the offending variable."""


class Settings(BaseSettings):
    """Every knob of the API and the worker. Build it once at the edge and pass it in."""

    model_config = SettingsConfigDict(
        env_prefix="MOVIE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///./.movieops/movies.db",
        description="SQLAlchemy async URL of the database (SQLite file by default, or "
        "postgresql+asyncpg://user@host:5432/db).",
    )
    database_password: SecretStr | None = Field(
        default=None,
        description="Password of the database user, used when MOVIE_DATABASE_URL carries none "
        "(a password in the URL wins).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis (or Valkey) URL for rate limits, cache, idempotency and jobs.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="Redis password, used when MOVIE_REDIS_URL carries none (a password in the "
        "URL wins).",
    )
    secrets_dir: Path | None = Field(
        default=None,
        description="Directory whose files hold MOVIE_* values, each named after the lower-case "
        "variable (Docker secrets: /run/secrets/movie_redis_password); the environment wins.",
    )
    schema_wait_seconds: float = Field(
        default=60,
        ge=0,
        le=3_600,
        description="How long the API and the worker wait at start-up for the database to reach "
        "the schema revision they need (`python -m app.migrate` upgrades it) before exiting.",
    )
    rate_limit_per_minute: int = Field(
        default=20, ge=1, le=1_000_000, description="Requests per client and path per window."
    )
    rate_limit_window_seconds: int = Field(
        default=60, ge=1, le=86_400, description="Length of the fixed rate-limit window."
    )
    cache_ttl_seconds: int = Field(
        default=60, ge=1, le=86_400, description="Lifetime of a cached GET /movies response."
    )
    gc_freeze: bool = Field(
        default=True,
        description="Once started, move every object made so far out of the garbage "
        "collector's sight (gc.freeze): its full collections then scan only what requests "
        "create instead of the whole framework, which stalled a busy API for 50-100 ms.",
    )
    cache_enabled: bool = Field(
        default=True,
        description="Cache catalog reads in Redis; false serves every read from the database "
        "(X-Cache: BYPASS).",
    )
    idempotency_ttl_seconds: int = Field(
        default=86_400, ge=60, le=7 * 86_400, description="How long a completed response replays."
    )
    idempotency_lease_seconds: int = Field(
        default=60, ge=1, le=3_600, description="How long an in-progress key blocks retries."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated IPs/CIDRs whose X-Forwarded-For is trusted (empty: none; '*' is "
            "refused)."
        ),
    )
    rate_limit_exempt_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated secrets; a request whose X-RateLimit-Exempt header holds one is not "
            "rate limited (for contract test runs). Empty: nobody is exempt."
        ),
    )
    redis_timeout_ms: int = Field(
        default=250,
        ge=5,
        le=10_000,
        description="Timeout of one Redis attempt on the request path (retried within the budget).",
    )
    redis_connect_timeout_ms: int = Field(
        default=1_000,
        ge=5,
        le=30_000,
        description="Connect timeout for Redis (a burst opens many connections at once).",
    )
    redis_breaker_threshold: int = Field(
        default=3,
        ge=1,
        le=1_000,
        description=(
            "Failed Redis stalls in a row that open the breaker (calls failing together in one "
            "stall count once)."
        ),
    )
    redis_breaker_cooldown_seconds: float = Field(
        default=2.0, gt=0, le=300, description="How long an open breaker skips Redis."
    )
    redis_retry_budget_ms: int = Field(
        default=1_000,
        ge=0,
        le=30_000,
        description=(
            "Time a request-path Redis operation may spend retrying after a timeout before Redis "
            "counts as unavailable (a brief stall is slow, not down)."
        ),
    )
    max_body_bytes: int = Field(
        default=65_536,
        ge=1_024,
        le=16 * 1024 * 1024,
        description="Largest request body accepted; larger ones get 413 before being buffered.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Time a client has to send a request's headers before the connection closes.",
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Time a client has to send a request's body (each part) before 408.",
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        le=100_000,
        description="Concurrent connections (and requests) one API process takes; beyond: 503.",
    )
    idempotency_max_response_bytes: int = Field(
        default=65_536,
        ge=1_024,
        le=16 * 1024 * 1024,
        description=(
            "Largest response an Idempotency-Key stores for replay; a larger one is sent but not "
            "stored (the key is released, and a retry runs again)."
        ),
    )
    worker_poll_delay_ms: int = Field(
        default=50,
        ge=1,
        le=5_000,
        description=(
            "How often an idle worker polls for cron and deferred jobs (a queued job wakes it)."
        ),
    )
    worker_health_check_seconds: int = Field(
        default=2, ge=1, le=3_600, description="Worker heartbeat interval (readiness, arq --check)."
    )
    hourly_refresh_minute: int = Field(
        default=0,
        ge=0,
        le=59,
        description=(
            "Minute past every hour at which the worker runs the hourly refresh (and by which a "
            "starting worker decides that the last one was missed)."
        ),
    )
    job_timeout_seconds: int = Field(
        default=60,
        ge=1,
        le=3_600,
        description="A job running longer is cancelled; a crashed job re-runs after this + 10 s.",
    )
    job_max_tries: int = Field(
        default=5, ge=1, le=50, description="Tries of a job failing transiently before it fails."
    )
    ready_requires_worker: bool = Field(
        default=True, description="Whether /ready fails while no worker heartbeat is seen."
    )
    seed_demo_data: bool = Field(
        default=True,
        description=(
            "Seed an empty catalog with 65 real films, rated by 300 demo users, on first start "
            "(once: a catalog emptied later stays empty)."
        ),
    )
    log_level: LogLevel = Field(default="INFO", description="Log level of the API and worker.")
    log_format: LogFormat = Field(
        default="text",
        description="Log lines as plain text or as one JSON object per line (json).",
    )
    metrics_enabled: bool = Field(
        default=True,
        description="Serve Prometheus metrics at GET /metrics and count requests for them.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="Address of the worker's own metrics endpoint."
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65_535,
        description="Port of the worker's Prometheus endpoint (GET /metrics); 0: none.",
    )
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, ge=1, le=65_535, description="Port the API listens on.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then ``.env``, then MOVIE_SECRETS_DIR's files."""
        directory = init_settings().get("secrets_dir") or _secrets_dir_from_env()
        sources = [init_settings, env_settings, dotenv_settings]
        if directory is not None:
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=Path(directory)))
        return tuple(sources)

    def database_connect_url(self) -> str:
        """MOVIE_DATABASE_URL with MOVIE_DATABASE_PASSWORD in it when the URL has none."""
        return _with_password(self.database_url, self.database_password)

    def redis_connect_url(self) -> str:
        """MOVIE_REDIS_URL with MOVIE_REDIS_PASSWORD in it when the URL has none."""
        return _with_password(self.redis_url, self.redis_password)

    @field_validator("database_password", "redis_password", "secrets_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("secrets_dir")
    @classmethod
    def _check_secrets_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{str(value)!r} is not a directory")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("trusted_proxies", "rate_limit_exempt_tokens", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry == "*":
                raise ValueError(
                    "'*' would trust every peer's X-Forwarded-For, so any client could choose "
                    "its identity (and its rate limit); list the proxy's own IPs or CIDRs"
                )
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
            if network.prefixlen == 0:
                raise ValueError(f"{entry!r} trusts every address, like '*'; list the proxy's")
        return value

    @field_validator("rate_limit_exempt_tokens")
    @classmethod
    def _check_tokens(cls, value: list[str]) -> list[str]:
        if any(len(token) < 16 for token in value):
            raise ValueError(
                "exemption tokens must be at least 16 characters (use a random secret)"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("expected a SQLAlchemy URL such as sqlite+aiosqlite:///./movies.db")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "valkey://")):
            raise ValueError("expected a URL such as redis://127.0.0.1:6379/0")
        return value


def _secrets_dir_from_env() -> str | None:
    """MOVIE_SECRETS_DIR, read before the other settings (it says where some of them are)."""
    return os.environ.get("MOVIE_SECRETS_DIR") or None


def _with_password(url: str, password: SecretStr | None) -> str:
    """``url`` with ``password`` as its userinfo password, unless it has one or none is given."""
    if password is None:
        return url
    parts = urlsplit(url)
    if parts.password is not None or not parts.netloc or parts.hostname is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    secret = quote(password.get_secret_value(), safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))


def load_settings_or_exit() -> Settings:
    """For process entry points: settings, or one line on stderr and exit status 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise :class:`SettingsError` naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"MOVIE_{field.upper()}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
