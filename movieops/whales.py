"""What the Docker runtimes share: asking python-on-whales whether Docker works, and the one
line of a Docker error worth showing."""

from __future__ import annotations

from typing import Any

from python_on_whales import DockerClient
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException

COMPOSE_FILE = "compose.yaml"
# The Redis password of a Docker stack: generated once (hex, 0600) in the state directory.
REDIS_PASSWORD_FILE = "redis.password"  # noqa: S105 (a file name, not a password)
# The PostgreSQL password, the same way; created with the database.
POSTGRES_PASSWORD_FILE = "postgres.password"  # noqa: S105 (a file name, not a password)
METRICS_PORTS = {"api": 8000, "worker": 9101}
"""Where each process serves its metrics inside its container (the API on its own port; the
worker on MOVIE_WORKER_METRICS_PORT, which compose.yaml sets to 9101)."""


def first_line(exc: BaseException) -> str:
    """The last non-empty line of a Docker error (its stderr when it has one), at most 300
    characters: where the docker CLI says what went wrong."""
    text = str(getattr(exc, "stderr", "") or exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def docker_problem(client: DockerClient | None = None) -> str | None:
    """Why Docker with the Compose plugin cannot be used here, or None when it can."""
    client = client or DockerClient()
    try:
        client.info()
    except DockerException as exc:
        return f"no Docker engine answers: {first_line(exc)}"
    except (FileNotFoundError, ClientNotFoundError):
        return "the docker command is not installed"
    try:
        if not client.compose.is_installed():
            return "the Docker Compose plugin is not installed"
    except DockerException as exc:
        return f"docker compose does not work: {first_line(exc)}"
    return None


def health_lines(name: str, container: Any) -> list[str]:
    """The last three healthcheck outputs of a container (python-on-whales' Container)."""
    health = container.state.health
    return [
        f"{name}: exit {entry.exit_code}: {(entry.output or '').strip()}"
        for entry in ((health.log or [])[-3:] if health else [])
    ]


def docker_versions(client: DockerClient) -> dict[str, str]:
    """Docker client/server and Compose versions (for failure bundles); raises DockerException."""
    version = client.version()
    return {
        "docker client": str(version.client.version if version.client else "?"),
        "docker server": str(version.server.version if version.server else "?"),
        "docker compose": client.compose.version(),
    }
