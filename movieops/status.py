"""The status of a stack movieops did not start (attached with --api-url/--redis-url)."""

from __future__ import annotations

from movieops.probes import run_probes
from movieops.runtime import Endpoints, ServiceState
from movieops.secrets import redact_url


def attached_status(endpoints: Endpoints, worker_interval_seconds: int) -> list[ServiceState]:
    """api, redis and worker as their probes see them: running, or unreachable and why."""
    probes = {p.name.split()[0]: p for p in run_probes(endpoints, worker_interval_seconds)}
    urls = {"api": endpoints.api_url, "redis": redact_url(endpoints.redis_url), "worker": None}
    return [
        ServiceState(
            name,
            "running" if probes[name].ok else "unreachable",
            url=url,
            detail=probes[name].detail,
        )
        for name, url in urls.items()
    ]
