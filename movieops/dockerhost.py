"""Whether a Docker engine can answer at all, told from its socket without running the docker CLI.

Auto runtime selection asks this on every command in a project with a compose.yaml, so a
machine without a running engine must learn it in a millisecond, not in the ~0.3 s that
importing python-on-whales and running `docker info` take. Only the plain case is decided here
(the default or a ``unix://`` DOCKER_HOST, no Docker context chosen); anything else is left to
Docker itself.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path

DEFAULT_HOST = "unix:///var/run/docker.sock"
CONNECT_TIMEOUT_SECONDS = 0.5
# The errors of a socket nobody serves: no such file, or nothing listening on it.
NOBODY_LISTENS = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK}


def _context_chosen(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether DOCKER_CONTEXT or the CLI config names a context (it may point anywhere)."""
    if environ.get("DOCKER_CONTEXT"):
        return True
    config_dir = Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((config_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    current = config.get("currentContext") if isinstance(config, dict) else None
    return bool(current) and current != "default"


def unix_socket_path(environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """The unix socket the docker CLI would use, or None when that is not plain to see."""
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST") or ""
    if host:
        return host.removeprefix("unix://") if host.startswith("unix://") else None
    if _context_chosen(env):
        return None
    return DEFAULT_HOST.removeprefix("unix://")


def engine_unreachable(environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """Why no Docker engine can answer (the docker CLI's own words), or None when one may."""
    env = os.environ if environ is None else environ
    if shutil.which("docker", path=env.get("PATH")) is None:
        return "the docker command is not installed"
    path = unix_socket_path(env)
    if path is None:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(CONNECT_TIMEOUT_SECONDS)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in NOBODY_LISTENS:
                return None  # e.g. permission denied: Docker words that better
            return (
                "no Docker engine answers: Cannot connect to the Docker daemon at "
                f"unix://{path}. Is the docker daemon running?"
            )
    return None
