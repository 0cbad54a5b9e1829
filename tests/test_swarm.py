"""movieops on the swarm runtime, on a real single-node Docker Swarm (marker docker; runs in CI).

One stack for the module: PostgreSQL, Redis, the migration job, three API replicas behind nginx
and the worker. The tests run in file order, as a deploy's life does: up, use, a rolling update
under a steady client, a manual rollback, a bad image that Swarm rolls back by itself, down.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clihelp import Cli
from tests.support import free_port
from tests.test_compose import ROOT, _engine_problem

pytestmark = [pytest.mark.docker, pytest.mark.slow]

STACK_LABEL = "com.docker.stack.namespace"
# A bad image: `python -m app` idles instead of serving, so its healthcheck never passes.
IDLE_API = (
    "USER root",
    "RUN python -c \"import app, pathlib; (pathlib.Path(app.__file__).parent / '__main__.py')"
    ".write_text('import time; time.sleep(10**6)')\"",
    "USER app",
)


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True, timeout=120
    ).stdout


def _swarm_state() -> str:
    return _docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """A single-node swarm: the engine's own when it is in one, else initialised here and left
    again at the end (the engine is left as it was found)."""
    problem = _engine_problem()
    if problem:
        pytest.skip(f"needs Docker with Compose: {problem}")
    created = _swarm_state() != "active"
    if created:
        _docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        if created:
            _docker("swarm", "leave", "--force")


@pytest.fixture(scope="module")
def stack(swarm: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """movieops --runtime swarm for a throw-away stack name, state directory and proxy port."""
    state = tmp_path_factory.mktemp("swarm-state")
    name = f"mosw{uuid.uuid4().hex[:6]}"
    env = {
        "MOVIEOPS_SWARM_STACK": name,
        "MOVIEOPS_STATE_DIR": str(state),
        "MOVIEOPS_PROXY_PORT": str(free_port()),
        "MOVIE_SWARM_SUBNET": "10.58.0.0/24",
    }
    run = Cli(ROOT, env, runtime="swarm")
    try:
        yield run
    finally:
        run("down", "--volumes", "--yes")


def _name(cli: Cli) -> str:
    return cli.env["MOVIEOPS_SWARM_STACK"]


def _state(cli: Cli) -> Path:
    return Path(cli.env["MOVIEOPS_STATE_DIR"])


def _api(cli: Cli) -> str:
    return f"http://127.0.0.1:{cli.env['MOVIEOPS_PROXY_PORT']}"


def _exempt(cli: Cli) -> dict[str, str]:
    """The contract's exemption header: a steady client must not meet the rate limit."""
    return {"X-RateLimit-Exempt": (_state(cli) / "contract.token").read_text().strip()}


def _service_images(cli: Cli) -> dict[str, str]:
    names = _docker("service", "ls", "--quiet", "--filter", f"label={STACK_LABEL}={_name(cli)}")
    specs = json.loads(_docker("service", "inspect", *names.split()))
    return {
        s["Spec"]["Name"].removeprefix(f"{_name(cli)}_"): s["Spec"]["TaskTemplate"][
            "ContainerSpec"
        ]["Image"]
        for s in specs
    }


def _derived_image(base: str, tag: str, *lines: str) -> str:
    dockerfile = "\n".join([f"FROM {base}", f"LABEL movieops.test={tag}", *lines]) + "\n"
    subprocess.run(
        ["docker", "build", "--quiet", "-t", tag, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        timeout=300,
    )
    return tag


class SteadyClient:
    """GET /movies through the proxy in a loop, recording every failure (status or error)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=15, headers=self.headers) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(f"{self.url}/movies?limit=5")
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"HTTP {response.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.02)

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_up_deploys_postgres_three_replicas_the_proxy_and_the_worker(stack: Cli) -> None:
    """A cold `up --build --replicas 3` waits until every task is healthy and the migration
    job ran (--build: the image of this checkout, not an older one left on the machine)."""
    data = stack.json("up", "--build", "--replicas", "3")["data"]
    assert data["runtime"] == "swarm"
    rows = {s["service"]: s for s in data["services"]}
    assert {"api-1", "api-2", "api-3", "worker", "redis", "postgres", "proxy"} <= rows.keys()
    for name in ("api-1", "api-2", "api-3", "worker", "redis", "postgres", "proxy"):
        assert rows[name]["state"] == "running", rows[name]
    assert rows["migrate"]["state"] == "done"
    ready = httpx.get(f"{_api(stack)}/ready", timeout=10).json()
    assert ready["status"] == "ready"
    assert "revision" in ready["checks"]["database"]


def test_a_second_up_on_the_healthy_stack_is_a_no_op(stack: Cli) -> None:
    """`up` again changes nothing: the same image, no update started."""
    before = _service_images(stack)
    data = stack.json("up", "--replicas", "3")["data"]
    assert data["already_running"] is True
    assert _service_images(stack) == before


def test_up_with_another_number_of_replicas_scales_the_api(stack: Cli) -> None:
    """`up --replicas 2` on the 3-replica stack is no no-op: it deploys and waits until two
    replicas run; `up --replicas 3` brings the third back."""
    rows = stack.json("up", "--replicas", "2")["data"]["services"]
    assert sorted(r["service"] for r in rows if r["service"].startswith("api")) == [
        "api-1",
        "api-2",
    ]
    rows = stack.json("up", "--replicas", "3")["data"]["services"]
    assert sum(1 for r in rows if r["service"].startswith("api-")) == 3


def test_secrets_are_docker_secrets_never_in_the_stack_file_or_the_service_specs(
    stack: Cli,
) -> None:
    """The stack file and every service's spec hold no password or token; the app gets them
    as Docker secrets (files), and only the proxy is published."""
    state = _state(stack)
    secrets = [
        (state / f).read_text().strip()
        for f in ("redis.password", "postgres.password", "contract.token")
    ]
    stack_file = (state / "swarm-stack.json").read_text()
    names = _docker("service", "ls", "--quiet", "--filter", f"label={STACK_LABEL}={_name(stack)}")
    specs = _docker("service", "inspect", *names.split())
    for secret in secrets:
        assert secret not in stack_file
        assert secret not in specs
    published = {
        s["Spec"]["Name"].removeprefix(f"{_name(stack)}_"): s["Spec"]
        .get("EndpointSpec", {})
        .get("Ports", [])
        for s in json.loads(specs)
    }
    assert [p["PublishMode"] for p in published["proxy"]] == ["host"]
    assert all(not ports for name, ports in published.items() if name != "proxy")
    api = next(s for s in json.loads(specs) if s["Spec"]["Name"].endswith("_api"))
    mounted = {s["File"]["Name"] for s in api["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]}
    assert {"movie_redis_password", "movie_database_password"} <= mounted
    assert stat_mode(state / "swarm-stack.json") == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_operations_work_against_the_swarm_stack(stack: Cli) -> None:
    """status, health, logs, rate-limits, refresh and jobs answer for the swarm stack."""
    states = stack.json("status")["data"]
    assert sum(1 for s in states if s["service"].startswith("api-")) == 3
    assert all(p["ok"] for p in stack.json("health")["data"])
    httpx.get(f"{_api(stack)}/movies", timeout=10)
    assert stack.json("rate-limits")["ok"]
    job = stack.json("refresh", "--user", "42", "--wait", "--timeout", "60")["data"]
    assert job["job"]["state"] == "complete"
    assert stack.json("jobs", "ls")["ok"]
    logs = stack("logs", "api", "--tail", "5")
    assert logs.exit_code == 0
    assert "api-" in logs.stdout


def test_top_scrapes_every_task_on_the_gateway_bridge(stack: Cli) -> None:
    """top --once --json: each of the three API tasks and the worker scraped at its container's
    address on docker_gwbridge (nothing but the proxy is published), all up, named as status
    names them. Needs the API's /metrics and the worker's metrics endpoint (port 9101, on
    0.0.0.0 in the containers)."""
    data = stack.json("top", "--once", "--interval", "1")["data"]
    targets = {t["instance"]: t for t in data["targets"]}
    assert set(targets) == {"api-1", "api-2", "api-3", "worker"}
    assert all(t["state"] == "up" for t in targets.values()), targets
    assert not any(t["url"].startswith("http://127.0.0.1") for t in targets.values())
    assert data["redis"]["state"] == "up"


def test_contract_passes_against_the_swarm_stack(stack: Cli) -> None:
    """Schemathesis against the stack's own API, through the proxy and the replicas."""
    data = stack.json("contract", "--live", "--max-examples", "5", "--workers", "1")["data"]
    assert data["exit_code"] == 0


def test_a_rolling_update_loses_no_request_of_a_steady_client(stack: Cli) -> None:
    """`up --image NEW` replaces the replicas one by one (start-first) while a client reads
    through the proxy: every request of that client succeeds."""
    current = _service_images(stack)["api"]
    new = _derived_image(current, f"movieops-app:swarm-test-good-{uuid.uuid4().hex[:6]}")
    with SteadyClient(_api(stack), _exempt(stack)) as client:
        data = stack.json("up", "--replicas", "3", "--image", new)["data"]
        time.sleep(2)  # the last old replica's shutdown, seen by the client too
    assert data["already_running"] is False
    assert client.ok > 50
    assert client.failures == []
    images = _service_images(stack)
    assert images["api"] != current
    assert images["api"] == images["worker"]


def test_rollback_returns_to_the_previous_image(stack: Cli) -> None:
    """`movieops rollback` puts the app services back on the image before the last update."""
    before = _service_images(stack)["api"]
    data = stack.json("rollback")["data"]
    assert set(data["rolled_back"]) == {"api", "worker"}
    after = _service_images(stack)
    assert after["api"] != before
    assert all(p["ok"] for p in stack.json("health")["data"])


def test_an_image_that_never_gets_healthy_is_rolled_back_and_up_fails(stack: Cli) -> None:
    """A new image whose API never answers its healthcheck: Swarm rolls the update back by
    itself, `up` exits 10 saying so, and the previous image serves again."""
    good = _service_images(stack)["api"]
    bad = _derived_image(
        good,
        f"movieops-app:swarm-test-bad-{uuid.uuid4().hex[:6]}",
        *IDLE_API,
    )
    envelope = stack.json("up", "--replicas", "3", "--image", bad, code=10)
    assert envelope["error"]["code"] == "rolled_back"
    assert "rolled back" in envelope["error"]["message"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _service_images(stack)["api"] != good:
        time.sleep(1)
    images = _service_images(stack)
    assert images["api"] == good
    assert images["worker"] == good  # rolled back with the api: one version runs
    assert stack.json("health", "--wait", "--timeout", "120")["ok"]


def test_down_leaves_nothing_behind(stack: Cli) -> None:
    """`down --volumes` removes the services, containers, networks, secrets, configs and
    volumes of the stack, and returns only when they are gone."""
    stack.json("down", "--volumes", "--yes")
    label = f"label={STACK_LABEL}={_name(stack)}"
    assert _docker("service", "ls", "--quiet", "--filter", label).strip() == ""
    assert _docker("ps", "--all", "--quiet", "--filter", label).strip() == ""
    assert _docker("network", "ls", "--quiet", "--filter", label).strip() == ""
    assert _docker("secret", "ls", "--quiet", "--filter", label).strip() == ""
    assert _docker("config", "ls", "--quiet", "--filter", label).strip() == ""
    assert _docker("volume", "ls", "--quiet", "--filter", label).strip() == ""
