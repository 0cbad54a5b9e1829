"""From `docker compose config` to a stack file Swarm deploys: pure functions, no Docker.

movieops renders compose.yaml with the Swarm overlay (compose.swarm.yaml) through `docker compose
config` (so interpolation, profiles, `!reset` and `!override` are Compose's own), then this module
removes or converts what `docker stack deploy` rejects or silently ignores, and pins every service
built from the project to one image reference.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECRET_PLACEHOLDER = "__movieops_swarm_uses_docker_secrets__"  # noqa: S105 - not a secret
"""The value movieops gives Compose for secret variables while rendering: the stack gets its
secrets as Docker secrets, so any variable still holding this value is dropped, and a file that
would still contain it is refused."""

STACK_VERSION = "3.9"

SECRET_VARIABLES = frozenset(
    {
        "MOVIE_REDIS_PASSWORD",
        "MOVIE_DATABASE_PASSWORD",
        "MOVIE_POSTGRES_PASSWORD",
        "MOVIE_RATE_LIMIT_EXEMPT_TOKENS",
        "POSTGRES_PASSWORD",
        "REDISCLI_AUTH",
    }
)
"""Variables that carry a secret: on Swarm they arrive as Docker secrets, so they are dropped
from every environment, whatever value an .env file or the shell gave them."""

# Service keys Swarm refuses (depends_on in its long form), ignores with a warning (build,
# restart, container_name, security_opt, tmpfs, mem_limit …) or that only Compose reads.
DROPPED_KEYS = (
    "build",
    "container_name",
    "depends_on",
    "env_file",
    "mem_limit",
    "pids_limit",
    "profiles",
    "pull_policy",
    "restart",
    "security_opt",
    "tmpfs",
)


class StackFileError(ValueError):
    """The rendered configuration cannot become a stack file (says why, in one line)."""


def _mode(value: Any) -> int:
    """A secret's file mode: Compose writes it as an octal string, Swarm's loader wants a number."""
    if isinstance(value, int):
        return value
    return int(str(value), 8)


def _bytes(value: Any) -> int:
    return int(str(value))


def _resources(service: Mapping[str, Any]) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if service.get("mem_limit") is not None:
        limits["memory"] = str(_bytes(service["mem_limit"]))
    if service.get("pids_limit") is not None:
        limits["pids"] = int(service["pids_limit"])
    return limits


def _tmpfs_volumes(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Compose's `tmpfs: [/tmp:size=16m,mode=1777]` as the tmpfs mounts Swarm supports."""
    mounts = []
    for entry in service.get("tmpfs") or []:
        target, _, options = str(entry).partition(":")
        tmpfs: dict[str, Any] = {}
        for option in filter(None, options.split(",")):
            key, _, value = option.partition("=")
            if key == "size":
                tmpfs["size"] = _size(value)
            elif key == "mode":
                tmpfs["mode"] = int(value, 8)
        mounts.append({"type": "tmpfs", "target": target, **({"tmpfs": tmpfs} if tmpfs else {})})
    return mounts


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def content_name(stack: str, key: str, path: Path) -> str:
    """A Docker secret/config name that changes with its content (they are immutable in Swarm:
    a new value must get a new name, and the services are updated to it)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return f"{stack}_{key}_{digest}"


def stack_file(
    config: Mapping[str, Any],
    *,
    stack: str,
    app_image: str,
    app_services: frozenset[str],
    services: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The stack file for ``config`` (the JSON of `docker compose config` with the overlay).

    ``app_services`` are the services built from the project: they run ``app_image``.
    ``services`` limits the stack to those services (all when None). Raises StackFileError
    when a secret would end up in the file, or a service needs something Swarm lacks.
    """
    config = copy.deepcopy(dict(config))
    out: dict[str, Any] = {"version": STACK_VERSION, "services": {}}
    for name, raw in sorted(config.get("services", {}).items()):
        if services is not None and name not in services:
            continue
        service = dict(raw)
        for key, value in list((service.get("environment") or {}).items()):
            if key in SECRET_VARIABLES or (value is not None and SECRET_PLACEHOLDER in str(value)):
                del service["environment"][key]
        mounts = _tmpfs_volumes(service)
        limits = _resources(service)
        deploy = dict(service.get("deploy") or {})
        if limits:
            resources = dict(deploy.get("resources") or {})
            resources["limits"] = {**limits, **(resources.get("limits") or {})}
            deploy["resources"] = resources
        for key in ("resources", "placement"):
            if key in deploy and not deploy[key]:
                del deploy[key]
        for key in DROPPED_KEYS:
            service.pop(key, None)
        for key in [k for k, v in service.items() if v is None]:
            del service[key]  # e.g. `command: null`: the image's own (Swarm wants no null)
        if mounts:
            service["volumes"] = [*(service.get("volumes") or []), *mounts]
        if deploy:
            service["deploy"] = deploy
        for secret in service.get("secrets") or []:
            if isinstance(secret, dict) and "mode" in secret:
                secret["mode"] = _mode(secret["mode"])
        for port in service.get("ports") or []:
            if port.get("mode") != "host":
                raise StackFileError(
                    f"service {name!r} publishes port {port.get('target')} through the routing "
                    "mesh, which needs IPVS: publish it in host mode (compose.swarm.yaml)"
                )
            port.pop("host_ip", None)
            if "published" in port:
                port["published"] = int(port["published"])
        if isinstance(service.get("networks"), dict):
            service["networks"] = sorted(service["networks"])
        if name in app_services:
            service["image"] = app_image
        out["services"][name] = service
    used_networks = {n for s in out["services"].values() for n in s.get("networks") or []}
    out["networks"] = {
        name: {k: v for k, v in net.items() if k != "name"}
        for name, net in (config.get("networks") or {}).items()
        if name in used_networks
    }
    used_volumes = {
        v["source"]
        for s in out["services"].values()
        for v in s.get("volumes") or []
        if isinstance(v, dict) and v.get("type") == "volume"
    }
    out["volumes"] = {
        name: {k: v for k, v in (vol or {}).items() if k != "name"}
        for name, vol in (config.get("volumes") or {}).items()
        if name in used_volumes
    }
    for kind in ("secrets", "configs"):
        used = {
            (ref if isinstance(ref, str) else ref["source"])
            for s in out["services"].values()
            for ref in s.get(kind) or []
        }
        out[kind] = {
            key: {
                "name": content_name(stack, key, Path(entry["file"])),
                "file": entry["file"],
            }
            for key, entry in (config.get(kind) or {}).items()
            if key in used
        }
    if SECRET_PLACEHOLDER in repr(out):
        raise StackFileError(
            "a secret variable is still used outside the Swarm overlay's Docker secrets"
        )
    return out
