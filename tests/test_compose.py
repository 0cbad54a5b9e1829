"""The container stack on a real Docker engine: compose.yaml, the Dockerfile, the proxy profile.

Skips with a reason when no engine with the Compose plugin answers; `.ci/run` bootstraps one and
turns any skip into a failure. Images: PYTHON_IMAGE / REDIS_IMAGE / PROXY_IMAGE from the
environment (the public defaults otherwise).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from python_on_whales import DockerClient

from movieops.whales import docker_problem
from tests.support import assert_hardened, free_port, hourly_refresh_minute

ROOT = Path(__file__).resolve().parent.parent
# The app image's tag (compose's MOVIE_APP_IMAGE): the default, unless a machine that runs
# several checkouts at once gives each its own.
APP_IMAGE = os.environ.get("MOVIEOPS_TEST_APP_IMAGE", "movieops-app:local")
pytestmark = [pytest.mark.docker, pytest.mark.slow]

IDEMPOTENT_POST = {"title": "Compose Test", "year": 2001, "genres": ["Drama"]}


def _engine_problem() -> str | None:
    return docker_problem()


def cli_project_env(name: str, state: Path, subnet: int, *ports: str) -> dict[str, str]:
    """The environment of `movieops --runtime compose` for a throw-away project: a unique name
    (``movieops-<name>-…``), its own state directory, free ports (the API's, the proxy's and
    Redis's, plus each MOVIEOPS_*_PORT in ``ports``) and the subnet 172.30.<subnet>.0/24."""
    return {
        "MOVIEOPS_COMPOSE_PROJECT": f"movieops-{name}-{uuid.uuid4().hex[:6]}",
        "MOVIEOPS_STATE_DIR": str(state),
        **{
            variable: str(free_port())
            for variable in (
                "MOVIEOPS_API_PORT",
                "MOVIEOPS_PROXY_PORT",
                "MOVIEOPS_REDIS_PORT",
                *ports,
            )
        },
        "MOVIE_NETWORK_SUBNET": f"172.30.{subnet}.0/24",
        "MOVIE_PROXY_ADDRESS": f"172.30.{subnet}.10",
        "MOVIE_APP_IMAGE": APP_IMAGE,
        "MOVIE_HOURLY_REFRESH_MINUTE": hourly_refresh_minute(),
    }


@dataclass
class Stack:
    """One compose project under test, on its own ports and subnet."""

    docker: DockerClient
    api: str
    proxy: str
    env: dict[str, str]

    @property
    def redis_password(self) -> str:
        """The password this project's Redis requires (MOVIE_REDIS_PASSWORD)."""
        return self.env["MOVIE_REDIS_PASSWORD"]

    @property
    def exempt(self) -> dict[str, str]:
        """Headers that exempt a request from the rate limit (the project's exemption token)."""
        return {"X-RateLimit-Exempt": self.env["MOVIE_RATE_LIMIT_EXEMPT_TOKENS"]}

    def project(self) -> str:
        """The compose project name."""
        return str(self.docker.client_config.compose_project_name)

    def client(self, *, replicas: bool = False, proxy: bool = False) -> DockerClient:
        """A client for this project: with the replicas overlay and/or the proxy profile."""
        files: list[str | Path] = [ROOT / "compose.yaml"]
        if replicas:
            files.append(ROOT / "compose.replicas.yaml")
        return DockerClient(
            compose_files=files,
            compose_project_name=self.project(),
            compose_project_directory=ROOT,
            compose_profiles=["proxy"] if proxy else [],
        )

    def wait_healthy(self, timeout: float = 120) -> None:
        """Every container running and healthy."""
        deadline = time.monotonic() + timeout
        while True:
            states = [(c.name, c.state.status, c.state.health) for c in self.docker.compose.ps()]
            if states and all(
                status == "running" and (health is None or health.status == "healthy")
                for _, status, health in states
            ):
                return
            assert time.monotonic() < deadline, f"not healthy: {states}"
            time.sleep(0.5)


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A cold `up --build --wait` of api + worker + redis in a throw-away project."""
    problem = _engine_problem()
    if problem:
        pytest.skip(f"needs Docker with Compose: {problem}")
    project = f"movieops-test-{uuid.uuid4().hex[:6]}"
    env = {
        "MOVIE_API_PORT": str(free_port()),
        "MOVIE_PROXY_PORT": str(free_port()),
        "MOVIE_REDIS_PORT": str(free_port()),
        "MOVIE_NETWORK_SUBNET": "172.30.58.0/24",
        "MOVIE_PROXY_ADDRESS": "172.30.58.10",
        # What `movieops up` generates; plain `docker compose` refuses to start without it.
        "MOVIE_REDIS_PASSWORD": secrets.token_hex(24),
        "MOVIE_RATE_LIMIT_EXEMPT_TOKENS": secrets.token_hex(16),
        "MOVIE_APP_IMAGE": APP_IMAGE,
        "MOVIE_HOURLY_REFRESH_MINUTE": hourly_refresh_minute(),
    }
    everything = DockerClient(  # every profile, so teardown also removes the proxy
        compose_files=[ROOT / "compose.yaml", ROOT / "compose.replicas.yaml"],
        compose_project_name=project,
        compose_project_directory=ROOT,
        compose_profiles=["*"],
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        single = DockerClient(
            compose_files=[ROOT / "compose.yaml"],
            compose_project_name=project,
            compose_project_directory=ROOT,
        )
        result = Stack(
            single,
            f"http://127.0.0.1:{env['MOVIE_API_PORT']}",
            f"http://127.0.0.1:{env['MOVIE_PROXY_PORT']}",
            env,
        )
        try:
            single.compose.up(build=True, detach=True, wait=True, wait_timeout=300, quiet=True)
            yield result
        finally:
            everything.compose.down(volumes=True, remove_orphans=True, quiet=True)


@pytest.fixture(autouse=True)
def _fresh_rate_limits(request: pytest.FixtureRequest) -> None:
    """Each test that uses the stack starts with no rate-limit counters: the budget is per
    client and route template, so one test's requests must not spend the next one's."""
    if "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        keys = _rate_keys(stack)
        if keys:
            stack.docker.compose.execute("redis", ["redis-cli", "del", *keys], tty=False)


def _rate_keys(stack: Stack) -> list[str]:
    output = stack.docker.compose.execute(
        "redis", ["redis-cli", "--scan", "--pattern", "rate:*"], tty=False
    )
    return sorted((output or "").split())


def test_cold_up_reaches_all_healthy(stack: Stack) -> None:
    """api, worker and redis are running and healthy after `up --build --wait`."""
    containers = stack.docker.compose.ps()
    assert {(c.config.labels or {})["com.docker.compose.service"] for c in containers} == {
        "api",
        "worker",
        "redis",
    }
    stack.wait_healthy(timeout=5)
    for container in containers:
        ports = container.network_settings.ports or {}
        for bindings in ports.values():
            assert all(b["HostIp"] == "127.0.0.1" for b in bindings or [])


def test_api_limits_caches_and_counts_in_redis(stack: Stack) -> None:
    """First GET has X-RateLimit-*, the second is a HIT; rate:* keys live in the redis
    container; the 21st request to one path within the minute is refused (limit 20)."""
    # A page no other test reads: its first read is a MISS whatever ran before.
    first = httpx.get(f"{stack.api}/movies?limit=47")
    second = httpx.get(f"{stack.api}/movies?limit=47")
    assert first.status_code == 200
    assert first.json()["total"] >= 50
    assert first.headers["x-ratelimit-limit"] == "20"
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert any(key.endswith(":/movies") for key in _rate_keys(stack))

    answers = [httpx.get(f"{stack.api}/movies/2") for _ in range(21)]
    assert [answer.status_code for answer in answers] == [200] * 20 + [429]
    refused = answers[-1]
    assert refused.headers["retry-after"] == refused.headers["x-ratelimit-reset"]


def test_refresh_job_runs_in_the_worker_container(stack: Stack) -> None:
    """POST refresh → the worker container completes the job → recommendations readable."""
    rated = httpx.post(f"{stack.api}/movies/3/ratings", json={"user_id": 42, "score": 5})
    assert rated.status_code == 201, rated.text
    accepted = httpx.post(f"{stack.api}/users/42/recommendations/refresh")
    assert accepted.status_code == 202

    def complete() -> bool:
        return bool(httpx.get(f"{stack.api}/jobs/refresh:42").json()["state"] == "complete")

    _until(complete, 30, "refresh:42 to complete")
    assert len(httpx.get(f"{stack.api}/users/42/recommendations").json()["items"]) == 10
    assert "refresh:42" in stack.docker.compose.logs(services=["worker"], tail="50")


def test_redis_outage_degrades_and_everything_recovers(stack: Stack) -> None:
    """Redis stopped: GET 200 BYPASS without rate headers, keyed POST 503, /ready 503,
    /health 200. Redis back: the API recovers without a restart and the worker by itself."""
    stack.docker.compose.stop(["redis"])
    try:
        down = httpx.get(f"{stack.api}/movies?limit=3")
        assert down.status_code == 200
        assert down.headers["x-cache"] == "BYPASS"
        assert "x-ratelimit-limit" not in down.headers
        keyed = httpx.post(
            f"{stack.api}/movies", json=IDEMPOTENT_POST, headers={"Idempotency-Key": "outage"}
        )
        assert keyed.status_code == 503
        assert keyed.headers["retry-after"] == "1"
        ready = httpx.get(f"{stack.api}/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["ok"] is False
        assert httpx.get(f"{stack.api}/health").status_code == 200
    finally:
        stack.docker.compose.start(["redis"])
    _until(lambda: httpx.get(f"{stack.api}/ready").status_code == 200, 60, "API ready again")

    def limited_again() -> bool:  # once the circuit breaker's cool-down has passed
        return "x-ratelimit-limit" in httpx.get(f"{stack.api}/movies?limit=3").headers

    _until(limited_again, 10, "rate limiting to come back")
    assert httpx.get(f"{stack.api}/movies?limit=3").headers["x-cache"] in {"MISS", "HIT"}
    stack.wait_healthy(timeout=60)
    accepted = httpx.post(f"{stack.api}/users/43/recommendations/refresh")
    assert accepted.status_code == 202

    def complete() -> bool:
        return bool(httpx.get(f"{stack.api}/jobs/refresh:43").json()["state"] == "complete")

    _until(complete, 30, "the worker to run a job after the outage")


def test_proxy_profile_spreads_load_and_keeps_one_global_limit(stack: Stack) -> None:
    """Three api replicas behind nginx: requests reach several replicas, 30 requests with
    forged X-Forwarded-For give exactly 20 successes, and the identity is the real peer."""
    proxied = DockerClient(
        compose_files=[ROOT / "compose.yaml", ROOT / "compose.replicas.yaml"],
        compose_project_name=stack.docker.client_config.compose_project_name,
        compose_project_directory=ROOT,
        compose_profiles=["proxy"],
    )
    try:
        proxied.compose.up(detach=True, wait=True, wait_timeout=180, scales={"api": 3}, quiet=True)
        statuses = [
            httpx.get(
                f"{stack.proxy}/movies/4", headers={"X-Forwarded-For": f"198.51.100.{n}"}
            ).status_code
            for n in range(30)
        ]
        logs = proxied.compose.logs(services=["api"], tail="200")
        keys = _rate_keys(stack)
    finally:
        # Back to the single published API for the tests after this one, even on a failure.
        proxied.compose.stop(["proxy"])
        stack.docker.compose.up(
            detach=True, wait=True, wait_timeout=180, scales={"api": 1}, quiet=True
        )
    assert statuses == [200] * 20 + [429] * 10
    replicas = {
        line.split("|")[0].strip() for line in logs.splitlines() if "GET /movies/4 " in line
    }
    assert len(replicas) >= 2, replicas
    movie_keys = [key for key in keys if key.endswith(":/movies/{movie_id}")]
    assert len(movie_keys) == 1
    assert "198.51.100." not in movie_keys[0]


@pytest.fixture
def with_proxy(stack: Stack) -> Iterator[DockerClient]:
    """The proxy profile started next to the single published API; stopped afterwards."""
    proxied = stack.client(proxy=True)
    proxied.compose.up(detach=True, wait=True, wait_timeout=180, quiet=True)
    try:
        yield proxied
    finally:
        proxied.compose.stop(["proxy"])


def test_every_container_is_hardened(stack: Stack, with_proxy: DockerClient) -> None:
    """api, worker, redis and proxy: read-only root, every capability dropped,
    no-new-privileges, a memory and a pids limit, a non-root user, /tmp a tmpfs."""
    containers = with_proxy.compose.ps()
    services = {(c.config.labels or {})["com.docker.compose.service"]: c for c in containers}
    assert set(services) == {"api", "worker", "redis", "proxy"}
    for service, container in services.items():
        assert_hardened(service, container)


def test_the_services_take_the_hourly_refresh_minute_from_the_environment(stack: Stack) -> None:
    """MOVIE_HOURLY_REFRESH_MINUTE reaches the worker (and the API, which shares its settings)."""
    wanted = f"MOVIE_HOURLY_REFRESH_MINUTE={stack.env['MOVIE_HOURLY_REFRESH_MINUTE']}"
    for service in ("api", "worker"):
        (container,) = stack.docker.compose.ps([service])
        assert wanted in (container.config.env or []), service


def test_redis_refuses_unauthenticated_clients_and_keeps_its_password_off_argv(
    stack: Stack,
) -> None:
    """A PING without the password gets NOAUTH on the published port; with it, PONG. The
    password is in no container's command (docker inspect) nor any process's argv in Redis."""
    port = int(stack.env["MOVIE_REDIS_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(200).startswith(b"-NOAUTH")
    client = redis.Redis.from_url(f"redis://:{stack.redis_password}@127.0.0.1:{port}/0")
    try:
        assert client.ping() is True
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") != {"maxmemory": "0"}
    finally:
        client.close()

    for container in stack.docker.compose.ps():
        command = [
            container.path or "",
            *(container.args or []),
            *(container.config.cmd or []),
            *(container.config.entrypoint or []),
        ]
        assert stack.redis_password not in " ".join(command), container.name
    argv = stack.docker.compose.execute(
        "redis",
        ["sh", "-c", "for f in /proc/[0-9]*/cmdline; do cat $f; echo; done"],
        tty=False,
    )
    assert "redis-server" in (argv or "")
    assert stack.redis_password not in (argv or "")


def test_nginx_hides_its_version_and_caps_bodies_at_64k(
    stack: Stack, with_proxy: DockerClient
) -> None:
    """`Server: nginx` without a version; a body over 64 KiB is refused with 413 by nginx."""
    health = httpx.get(f"{stack.proxy}/health")
    assert health.status_code == 200
    assert health.headers["server"] == "nginx"
    too_big = httpx.post(
        f"{stack.proxy}/movies",
        content=b"x" * (64 * 1024 + 1),
        headers={"Content-Type": "application/json", **stack.exempt},
    )
    assert too_big.status_code == 413
    assert "nginx" in too_big.text  # refused by the proxy, before any replica read it
    assert too_big.headers["server"] == "nginx"


def test_the_proxy_never_publishes_metrics(stack: Stack, with_proxy: DockerClient) -> None:
    """/metrics is for Prometheus on the internal network: the proxy answers it with a 404 of
    its own (a problem body with a request id) and no replica's counters leak through it."""
    for url in (f"{stack.proxy}/metrics", f"{stack.proxy}/metrics?x=1"):
        response = httpx.get(url)
        assert response.status_code == 404
        assert response.json()["detail"] == "Not Found"
        assert response.headers["x-request-id"] == response.json()["request_id"]
        assert "movie_http_requests_total" not in response.text


class SteadyClient:
    """GETs through the proxy at about `rate` per second until stopped (bounded duration)."""

    def __init__(self, url: str, headers: dict[str, str], rate: float = 20, limit: float = 180):
        self.url, self.headers, self.interval, self.limit = url, headers, 1 / rate, limit
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(headers=self.headers, timeout=15) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    self.statuses[client.get(self.url).status_code] += 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_scaling_api_replicas_behind_the_proxy_under_steady_load(stack: Stack) -> None:
    """The proxy starts with one api replica; scaled to 3, then 3 → 1 → 3 under ~20 GET/s:
    no 5xx and no failed request, and afterwards at least two replicas serve traffic (nginx
    re-resolves `api`; resolving once at start would keep every request on the first one)."""
    proxied = stack.client(replicas=True, proxy=True)

    def scale(replicas: int) -> None:
        proxied.compose.up(
            detach=True,
            wait=True,
            wait_timeout=180,
            scales={"api": replicas},
            recreate=False,
            quiet=True,
        )

    try:
        proxied.compose.up(detach=True, wait=True, wait_timeout=180, scales={"api": 1}, quiet=True)
        scale(3)
        with SteadyClient(f"{stack.proxy}/movies/8", stack.exempt) as steady:
            time.sleep(2)
            scale(1)
            time.sleep(2)
            scale(3)
            time.sleep(3)
        probes = [
            httpx.get(f"{stack.proxy}/movies/9", headers=stack.exempt).status_code
            for _ in range(30)
        ]
        logs = proxied.compose.logs(services=["api"], tail="500")
    finally:
        # Back to the single published API for the tests after this one.
        proxied.compose.stop(["proxy"])
        stack.docker.compose.up(
            detach=True, wait=True, wait_timeout=180, scales={"api": 1}, quiet=True
        )
    assert steady.errors == []
    assert sum(steady.statuses.values()) >= 100, steady.statuses
    assert set(steady.statuses) == {200}, steady.statuses
    assert probes == [200] * 30
    served_by = Counter(
        line.split("|")[0].strip() for line in logs.splitlines() if "GET /movies/9 " in line
    )
    assert sum(served_by.values()) == 30, served_by
    assert len(served_by) >= 2, served_by


def test_data_survives_down_and_up_and_down_v_removes_it(stack: Stack) -> None:
    """`down` keeps the database and Redis volumes; `down -v` deletes them."""
    created = httpx.post(f"{stack.api}/movies", json={**IDEMPOTENT_POST, "title": "Survivor"})
    assert created.status_code == 201
    location = created.headers["location"]
    stack.docker.compose.execute("redis", ["redis-cli", "SET", "probe", "kept"], tty=False)

    project = stack.docker.client_config.compose_project_name
    try:
        stack.docker.compose.down(quiet=True)
        stack.docker.compose.up(detach=True, wait=True, wait_timeout=180, quiet=True)
        assert httpx.get(f"{stack.api}{location}").json()["title"] == "Survivor"
        probe = stack.docker.compose.execute("redis", ["redis-cli", "GET", "probe"], tty=False)
        assert (probe or "").strip() == "kept"
        stack.docker.compose.down(volumes=True, quiet=True)
        volumes = stack.docker.volume.list(
            filters=[("label", f"com.docker.compose.project={project}")]
        )
    finally:
        # The stack is up again for the tests after this one, even when a step above failed.
        stack.docker.compose.up(detach=True, wait=True, wait_timeout=180, quiet=True)
    assert volumes == []
    assert httpx.get(f"{stack.api}{location}").status_code == 404


def test_dockerfile_builds_a_non_root_image(stack: Stack) -> None:
    """The app image runs as an unprivileged user: the Dockerfile's USER, not compose's."""
    user = stack.docker.compose.execute("api", ["id", "-u"], tty=False)
    assert (user or "").strip() == "10001"
    (api,) = [
        c
        for c in stack.docker.compose.ps()
        if (c.config.labels or {})["com.docker.compose.service"] == "api"
    ]
    assert stack.docker.image.inspect(api.image).config.user == "app"
