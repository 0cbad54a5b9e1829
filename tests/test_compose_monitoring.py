"""The compose `monitoring` profile on a real engine (`movieops up --monitoring`): Prometheus
scrapes both API replicas (behind the proxy), the worker, the Redis exporter and itself; its
recording rules evaluate and its alert rules are loaded.

One throw-away project for the module (its own ports and subnet); skips with a reason when no
engine with the Compose plugin answers, and `.ci/run` turns any skip into a failure.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from python_on_whales import DockerClient

from tests.clihelp import Cli
from tests.support import assert_hardened
from tests.test_compose import ROOT, _engine_problem, cli_project_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]

API_REPLICAS = 2
EXPECTED_TARGETS = {"api": API_REPLICAS, "worker": 1, "redis": 1, "prometheus": 1}


@dataclass
class Monitored:
    """The module's project: its Docker client, the proxy and Prometheus, its environment."""

    docker: DockerClient
    proxy: str
    prometheus: str
    env: dict[str, str]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": promql})
        answer.raise_for_status()
        return list(answer.json()["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus's active scrape targets."""
        answer = httpx.get(f"{self.prometheus}/api/v1/targets", params={"state": "active"})
        answer.raise_for_status()
        return list(answer.json()["data"]["activeTargets"])

    def container(self, service: str) -> Any:
        """The (first) container of ``service``."""
        return next(
            c
            for c in self.docker.compose.ps()
            if (c.config.labels or {})["com.docker.compose.service"] == service
        )


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(1)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    """`movieops up --monitoring --replicas 2 --build` (the proxy comes with replicas) for a
    throw-away project on its own ports and subnet; `down -v` at the end."""
    problem = _engine_problem()
    if problem:
        pytest.skip(f"needs Docker with Compose: {problem}")
    state = tmp_path_factory.mktemp("compose-monitoring-state")
    env = cli_project_env("mon", state, 74, "MOVIEOPS_PROMETHEUS_PORT")
    run = Cli(ROOT, env, runtime="compose")
    docker = DockerClient(
        compose_files=[ROOT / "compose.yaml", ROOT / "compose.replicas.yaml"],
        compose_project_name=env["MOVIEOPS_COMPOSE_PROJECT"],
        compose_project_directory=ROOT,
        compose_profiles=["*"],
        compose_env_files=[state / "compose.env"],
    )
    try:
        up = run.json("up", "--monitoring", "--replicas", str(API_REPLICAS), "--build")["data"]
        rows = {row["service"]: row for row in up["services"]}
        assert rows["prometheus"]["url"] == f"http://127.0.0.1:{env['MOVIEOPS_PROMETHEUS_PORT']}"
        assert rows["redis-exporter"]["state"] == "running"
        yield Monitored(
            docker,
            f"http://127.0.0.1:{env['MOVIEOPS_PROXY_PORT']}",
            f"http://127.0.0.1:{env['MOVIEOPS_PROMETHEUS_PORT']}",
            {**env, "MOVIE_REDIS_PASSWORD": (state / "redis.password").read_text().strip()},
        )
    finally:
        run("down", "--volumes", "--yes")


def test_prometheus_scrapes_every_api_replica_the_worker_redis_and_itself(
    monitored: Monitored,
) -> None:
    """Docker's DNS gives one target per API replica; every target ends up `up`."""

    def all_up() -> list[dict[str, Any]] | None:
        targets = monitored.targets()
        jobs = Counter(t["labels"]["job"] for t in targets)
        healthy = all(t["health"] == "up" for t in targets)
        return targets if healthy and jobs == Counter(EXPECTED_TARGETS) else None

    targets = _until(all_up, 120, f"targets {EXPECTED_TARGETS} all up: {monitored.targets()}")
    api_instances = {t["labels"]["instance"] for t in targets if t["labels"]["job"] == "api"}
    assert len(api_instances) == API_REPLICAS  # two addresses, each scraped on its own
    assert monitored.query("redis_up")[0]["value"][1] == "1"  # the exporter got in: password
    heartbeat = monitored.query("movie_worker_heartbeat_timestamp_seconds")
    assert float(heartbeat[0]["value"][1]) > time.time() - 60


def test_a_recording_rule_evaluates_once_traffic_flows(monitored: Monitored) -> None:
    """Requests through the proxy show up in `movie:http_requests:rate1m`, summed over both
    replicas."""
    with httpx.Client(base_url=monitored.proxy) as http:
        for _ in range(30):
            assert http.get("/movies?limit=2").status_code in (200, 429)
            http.get("/health")

    def rate() -> float:
        result = monitored.query("movie:http_requests:rate1m")
        return float(result[0]["value"][1]) if result else 0.0

    assert _until(rate, 90, "the recorded request rate") > 0
    per_replica = monitored.query('sum by (instance) (movie_http_requests_total{job="api"})')
    assert len(per_replica) == API_REPLICAS


def test_alert_rules_are_loaded_and_quiet(monitored: Monitored) -> None:
    """Every alert of deploy/prometheus/rules.yml is loaded; with a healthy stack none fires."""
    answer = httpx.get(f"{monitored.prometheus}/api/v1/rules", params={"type": "alert"})
    answer.raise_for_status()
    alerts = {
        rule["name"]: rule["state"]
        for group in answer.json()["data"]["groups"]
        for rule in group["rules"]
    }
    assert {
        "MovieHighErrorRatio",
        "MovieHigh429Ratio",
        "MovieApiDown",
        "MovieJobQueueDeep",
        "MovieWorkerDown",
        "MovieWorkerHeartbeatStale",
        "MovieRedisDown",
    } <= set(alerts)

    def quiet() -> bool:
        # Rules evaluated before the first scrapes may see no worker yet (absent()) and go
        # pending; a healthy stack settles to inactive within a few evaluations.
        answer = httpx.get(f"{monitored.prometheus}/api/v1/rules", params={"type": "alert"})
        states = {
            rule["name"]: rule["state"]
            for group in answer.json()["data"]["groups"]
            for rule in group["rules"]
        }
        return bool(states["MovieWorkerDown"] == states["MovieWorkerHeartbeatStale"] == "inactive")

    assert _until(quiet, 60, "the worker alerts inactive")


def test_only_prometheus_is_published_on_loopback_and_the_exporter_hides_the_password(
    monitored: Monitored,
) -> None:
    """Prometheus on 127.0.0.1 only; the worker's and the exporter's metrics are not published;
    Redis's password is in the exporter's environment, not on its command line; both new
    services are hardened like the rest."""
    for service in ("prometheus", "redis-exporter"):
        assert_hardened(service, monitored.container(service))
    published = {
        service: [
            (binding["HostIp"], binding["HostPort"])
            for bindings in (monitored.container(service).network_settings.ports or {}).values()
            for binding in bindings or []
        ]
        for service in ("prometheus", "redis-exporter", "worker")
    }
    assert published == {
        "prometheus": [("127.0.0.1", monitored.env["MOVIEOPS_PROMETHEUS_PORT"])],
        "redis-exporter": [],
        "worker": [],
    }
    exporter = monitored.container("redis-exporter")
    argv = [exporter.path, *exporter.args]
    assert not [arg for arg in argv if monitored.env["MOVIE_REDIS_PASSWORD"] in arg]
