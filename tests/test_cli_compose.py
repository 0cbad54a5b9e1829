"""movieops on the compose runtime, on a real Docker engine (marker docker; runs in CI)."""

from __future__ import annotations

import json
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clihelp import Cli
from tests.support import free_port
from tests.test_compose import ROOT, _engine_problem, cli_project_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, dict[str, Any]]]:
    """movieops --runtime compose for a throw-away project on its own ports and subnet, brought
    up cold once (with the data of that cold `up`); `down -v` at the end."""
    problem = _engine_problem()
    if problem:
        pytest.skip(f"needs Docker with Compose: {problem}")
    state = tmp_path_factory.mktemp("compose-state")
    env = cli_project_env("cli", state, 59)
    run = Cli(ROOT, env, runtime="compose")
    try:
        yield run, run.json("up")["data"]
    finally:
        run("down", "--volumes", "--yes")


@pytest.fixture
def compose(compose_stack: tuple[Cli, dict[str, Any]]) -> Cli:
    """The module's stack, up with one API: `up` is a quick no-op on a healthy stack and brings
    it back after a test that took it down, so no test depends on what ran before it."""
    run, _ = compose_stack
    run.json("up")
    return run


def _reset_rate_limits(compose: Cli) -> None:
    """Lift every client's counters with the CLI: the budget is per client and route template,
    so earlier tests' requests must not count in this one."""
    for client in {counter["client"] for counter in compose.json("rate-limits")["data"]}:
        compose.json("rate-limits", "--reset", "--client", client)


def test_up_cold_then_warm(compose_stack: tuple[Cli, dict[str, Any]], compose: Cli) -> None:
    """Cold: builds, starts and waits until healthy; warm: a quick no-op."""
    _, cold = compose_stack
    assert cold["already_running"] is False
    assert cold["runtime"] == "compose"
    api = cold["endpoints"]["api_url"]
    assert httpx.get(f"{api}/ready").status_code == 200
    started = time.monotonic()
    warm = compose.json("up")["data"]
    assert warm["already_running"] is True
    assert time.monotonic() - started < 15


def test_status_and_health_on_containers(compose: Cli) -> None:
    """Every container running and healthy, migrate done; every probe passing (Redis with the
    password movieops generated); status shows the Redis URL with the password redacted."""
    document = compose.json("status")
    services = {s["service"]: s for s in document["data"]}
    assert set(services) == {"redis", "migrate", "api", "worker"}
    migrate = services.pop("migrate")  # the one-shot schema step: exited 0 shows as done
    assert (migrate["state"], migrate["health"]) == ("done", None)
    assert all(s["state"] == "running" and s["health"] == "healthy" for s in services.values())
    assert all(p["ok"] for p in compose.json("health")["data"])
    password = (Path(compose.env["MOVIEOPS_STATE_DIR"]) / "redis.password").read_text().strip()
    port = compose.env["MOVIEOPS_REDIS_PORT"]
    assert services["redis"]["url"] == f"redis://:***@127.0.0.1:{port}/0"
    assert password not in json.dumps(document)


def test_the_generated_redis_password_is_private_and_required(compose: Cli) -> None:
    """redis.password and compose.env are 0600; Redis refuses a client without the password."""
    state = Path(compose.env["MOVIEOPS_STATE_DIR"])
    for name in ("redis.password", "compose.env"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    port = int(compose.env["MOVIEOPS_REDIS_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(200).startswith(b"-NOAUTH")


def test_rate_limits_after_traffic(compose: Cli) -> None:
    """Requests through the published port show up as one client's counter."""
    api = f"http://127.0.0.1:{compose.env['MOVIEOPS_API_PORT']}"
    _reset_rate_limits(compose)
    for _ in range(4):
        httpx.get(f"{api}/movies/5")
    (row,) = compose.json("rate-limits", "--path", "/movies/5")["data"]
    assert (row["count"], row["limit"], row["remaining"]) == (4, 20, 16)


def test_refresh_waits_for_the_worker_container(compose: Cli) -> None:
    """refresh --user 42 --wait: queued through Redis, run by the worker container."""
    data = compose.json("refresh", "--user", "42", "--wait", "--timeout", "60")["data"]
    assert data["job"]["state"] == "complete"


def test_contract_against_the_containers(compose: Cli) -> None:
    """Schemathesis passes against the compose stack's own API (--live: this test's stack is
    disposable), exempt from its 20/minute limit."""
    data = compose.json("contract", "--live", "--max-examples", "5", "--workers", "1")["data"]
    assert data["isolated"] is False
    assert data["exempt"] is True
    assert Path(data["junit"]).is_file()


def test_top_scrapes_each_container_at_its_own_address(compose: Cli) -> None:
    """top --once --json on the compose runtime: the api and the worker containers scraped at
    their addresses on the project's network (not through the published port), both up, and
    Redis' memory and keys. Needs the API's /metrics and the worker's metrics endpoint
    (compose: MOVIE_WORKER_METRICS_HOST=0.0.0.0, MOVIE_WORKER_METRICS_PORT=9101)."""
    data = compose.json("top", "--once", "--interval", "1")["data"]
    targets = {t["instance"]: t for t in data["targets"]}
    assert set(targets) == {"api", "worker"}
    assert all(t["state"] == "up" and t["note"] is None for t in targets.values()), targets
    assert targets["api"]["url"].startswith("http://172.30.59.")
    assert targets["api"]["url"].endswith(":8000/metrics")
    assert targets["worker"]["url"].endswith(":9101/metrics")
    assert data["redis"]["state"] == "up"
    assert data["redis"]["maxmemory_human"] == "192.00M"


def test_logs_of_a_service(compose: Cli) -> None:
    """Compose logs of one service, tailed."""
    lines = compose.json("logs", "worker", "--tail", "5")["data"]["lines"]
    assert 1 <= len(lines) <= 5


def test_up_with_three_replicas_behind_the_proxy(compose: Cli) -> None:
    """up --replicas 3: nginx in front of three API containers that share one limit; status
    lists every replica, health probes the proxy route, and the API URL is the proxy's."""
    proxy = f"http://127.0.0.1:{compose.env['MOVIEOPS_PROXY_PORT']}"
    try:
        data = compose.json("up", "--replicas", "3")["data"]
        assert data["already_running"] is False
        assert data["endpoints"]["api_url"] == data["endpoints"]["proxy_url"] == proxy
        services = [s["service"] for s in compose.json("status")["data"]]
        assert services == ["redis", "migrate", "api-1", "api-2", "api-3", "worker", "proxy"]
        probes = {p["name"]: p for p in compose.json("health")["data"]}
        assert probes["proxy"]["ok"], probes
        created = httpx.post(
            f"{proxy}/movies", json={"title": "Behind nginx", "year": 1999, "genres": ["Drama"]}
        )
        assert created.status_code == 201, created.text
        path = created.headers["location"]
        _reset_rate_limits(compose)
        statuses = [
            httpx.get(f"{proxy}{path}", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(24)
        ]
        assert statuses == [200] * 20 + [429] * 4
        lines = compose.json("logs", "api", "--tail", "200")["data"]["lines"]
        # top scrapes every replica on its own; the 24 requests above went to several of them.
        top = compose.json("top", "--once", "--interval", "1")["data"]
        load = compose.json("load", "--requests", "30", "--rate", "30", "--exempt")["data"]
    finally:
        # `up` on a healthy stack is a no-op whatever its replicas: take this mode down (the
        # volumes stay) so the next test's `up` starts the single-API stack again.
        compose("down")
    served_by = {line.split("|")[0].strip() for line in lines if f"GET {path} " in line}
    assert len(served_by) >= 2, served_by
    targets = {t["instance"]: t["state"] for t in top["targets"]}
    assert targets == {"api-1": "up", "api-2": "up", "api-3": "up", "worker": "up"}
    # load through the proxy: one client (the proxy passes this host's address), exempt.
    assert (load["requests"], load["limited"], load["error_rate"]) == (30, 0, 0)


def test_a_failing_service_is_reported_with_its_bundle(
    compose_stack: tuple[Cli, dict[str, Any]],
) -> None:
    """A stack whose processes cannot start: `up` names the service (migrate, the first to
    run), with its exception on the error line, exits 5 at once, saves a bundle."""
    compose, _ = compose_stack  # its settings only: the broken project is a stack of its own
    broken = Cli(
        ROOT,
        {
            **compose.env,
            "MOVIEOPS_COMPOSE_PROJECT": f"{compose.env['MOVIEOPS_COMPOSE_PROJECT']}-broken",
            "MOVIEOPS_API_PORT": str(free_port()),
            "MOVIEOPS_REDIS_PORT": str(free_port()),
            "MOVIE_NETWORK_SUBNET": "172.30.60.0/24",
            # Becomes the containers' MOVIE_TRUSTED_PROXIES: not an address, so the api and
            # the worker refuse to start (the proxy, which would use it, is not started).
            "MOVIE_PROXY_ADDRESS": "999.1.1.1",
        },
        runtime="compose",
    )
    try:
        document = broken.json("up", "--timeout", "20", code=5)
    finally:
        broken("down", "--volumes", "--yes")
    # migrate, which runs first, fails on it: api and worker never start.
    assert document["data"]["blocked"] == "migrate"
    assert "MOVIE_TRUSTED_PROXIES" in document["error"]["message"]
    bundle = Path(document["data"]["bundle"])
    assert (bundle / "logs.txt").is_file()
    assert "MOVIE_TRUSTED_PROXIES" in (bundle / "logs.txt").read_text()


def test_down_volumes_removes_everything(compose: Cli) -> None:
    """down -v --yes: containers and volumes gone; status shows the services missing."""
    done = compose.json("down", "--volumes", "--yes")["data"]["done"]
    assert "deleted the database and Redis volumes" in done
    assert {s["state"] for s in compose.json("status")["data"]} == {"missing"}
