"""The compose runtime's own files and URLs, without a Docker engine: the generated Redis and
PostgreSQL passwords, the 0600 compose.env that carries them, the remembered database, what
status shows of them, and how a one-shot service counts while `up` waits."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from movieops.errors import Unhealthy
from movieops.runtime import Endpoints, ServiceState, UpOptions
from movieops.runtime.compose import ComposeMode, ComposeRuntime, service_state
from movieops.stack import last_exception, wait_healthy
from tests.clihelp import Cli


def _runtime(tmp_path: Path) -> ComposeRuntime:
    return ComposeRuntime(
        tmp_path / "project", "movieops-unit", tmp_path / "state", (18000, 18080, 16379), "t" * 32
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_compose_env_is_private_and_carries_a_generated_redis_password(tmp_path: Path) -> None:
    """compose.env is 0600 in a 0700 state dir and holds a 48-hex-digit MOVIE_REDIS_PASSWORD,
    generated once and the same for every later command."""
    runtime = _runtime(tmp_path)
    runtime.client()
    env_file = tmp_path / "state" / "compose.env"
    assert _mode(env_file) == 0o600
    assert _mode(tmp_path / "state") == 0o700
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert re.fullmatch(r"[0-9a-f]{48}", values["MOVIE_REDIS_PASSWORD"])
    assert values["MOVIE_RATE_LIMIT_EXEMPT_TOKENS"] == "t" * 32
    assert _mode(tmp_path / "state" / "redis.password") == 0o600
    assert _runtime(tmp_path).redis_password == values["MOVIE_REDIS_PASSWORD"]


def test_an_old_world_readable_compose_env_is_replaced_private(tmp_path: Path) -> None:
    """A compose.env an older movieops left 0644 is rewritten 0600."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "compose.env").write_text("MOVIE_API_PORT=1\n")
    (state / "compose.env").chmod(0o644)
    _runtime(tmp_path).client()
    assert _mode(state / "compose.env") == 0o600
    assert "MOVIE_REDIS_PASSWORD=" in (state / "compose.env").read_text()


def test_redis_endpoint_has_the_password_but_status_shows_it_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """endpoints() gives clients the authenticated URL; status rows show `***` instead."""
    runtime = _runtime(tmp_path)
    password = runtime.redis_password
    assert runtime.endpoints().redis_url == f"redis://:{password}@127.0.0.1:16379/0"
    monkeypatch.setattr(runtime, "_ps_rows", list)  # nothing running: every service "missing"
    rows = {row.service: row for row in runtime.status()}
    assert rows["redis"].url == "redis://:***@127.0.0.1:16379/0"
    assert all(password not in (row.url or "") for row in rows.values())


def test_postgres_mode_writes_its_generated_password_and_url_only_to_the_private_env_file(
    tmp_path: Path,
) -> None:
    """--database postgres: a 48-hex-digit password, generated once (0600), reaches Compose
    with the container URL through compose.env only; the postgres profile is on; SQLite mode
    writes neither and leaves the profile off."""
    runtime = _runtime(tmp_path)
    runtime.mode = ComposeMode(database="postgres")
    client = runtime.client()
    assert client.client_config.compose_profiles == ["postgres"]
    state = tmp_path / "state"
    values = dict(line.split("=", 1) for line in (state / "compose.env").read_text().splitlines())
    assert re.fullmatch(r"[0-9a-f]{48}", values["MOVIE_POSTGRES_PASSWORD"])
    assert values["MOVIE_COMPOSE_DATABASE_URL"] == "postgresql+asyncpg://movie@postgres:5432/movie"
    assert values["MOVIE_POSTGRES_PORT"] == "5432"
    assert _mode(state / "postgres.password") == 0o600
    assert _runtime(tmp_path).postgres_password == values["MOVIE_POSTGRES_PASSWORD"]
    assert values["MOVIE_POSTGRES_PASSWORD"] not in runtime.postgres_url

    sqlite = ComposeRuntime(tmp_path / "p", "movieops-unit", tmp_path / "s2", (1, 2, 3))
    assert sqlite.client(every_profile=False).client_config.compose_profiles == []
    env = (tmp_path / "s2" / "compose.env").read_text()
    assert "MOVIE_POSTGRES_PASSWORD" not in env
    assert "MOVIE_COMPOSE_DATABASE_URL" not in env
    assert not (tmp_path / "s2" / "postgres.password").exists()


def test_the_database_is_remembered_until_down_volumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up --database postgres` is remembered in the mode file: a later `up` without --database
    and every other command use it, also after `down`; `down -v` forgets it and the password."""
    runtime = _runtime(tmp_path)
    runtime.mode = runtime._mode_for(UpOptions(database="postgres", proxy=True))
    runtime._save_mode()
    again = _runtime(tmp_path)
    assert again.mode == ComposeMode(proxy=True, database="postgres")
    assert again.services == ("redis", "postgres", "migrate", "api", "worker", "proxy")
    assert again._mode_for(UpOptions()) == ComposeMode(database="postgres")
    assert again._mode_for(UpOptions(database="sqlite")) == ComposeMode()

    class Compose:
        def down(self, **_: object) -> None:
            """Nothing to stop."""

    class Client:
        compose = Compose()

    monkeypatch.setattr(ComposeRuntime, "client", lambda self, every_profile=False: Client())
    again.stop(volumes=False)
    assert _runtime(tmp_path).mode == ComposeMode(database="postgres")
    again.postgres_password  # noqa: B018 (created on first use)
    again.stop(volumes=True)
    assert _runtime(tmp_path).mode == ComposeMode()
    assert not (tmp_path / "state" / "postgres.password").exists()


def test_a_one_shot_that_exited_0_is_done_and_otherwise_failed() -> None:
    """migrate exited 0 shows as done, exited 1 as failed; a long-running service that exited
    stays exited."""
    assert service_state({"Service": "migrate", "State": "exited", "ExitCode": 0}) == "done"
    assert service_state({"Service": "migrate", "State": "exited", "ExitCode": 1}) == "failed"
    assert service_state({"Service": "migrate", "State": "running"}) == "running"
    assert service_state({"Service": "api", "State": "exited", "ExitCode": 0}) == "exited"


class _OneShotStack:
    """A runtime whose migrate service is in a given state (the rest healthy, no probes)."""

    name = "compose"
    services = ("postgres", "migrate")

    def __init__(self, migrate: ServiceState) -> None:
        self.migrate = migrate

    def status(self) -> list[ServiceState]:
        return [ServiceState("postgres", "running", "healthy"), self.migrate]

    def endpoints(self) -> Endpoints:
        return Endpoints("http://127.0.0.1:9", "redis://127.0.0.1:9/0")

    def rollout_failure(self) -> None:
        return None


def test_waiting_counts_a_done_one_shot_as_healthy_and_stops_at_once_on_a_failed_one() -> None:
    """wait_healthy: migrate done (and postgres healthy by its healthcheck) is a healthy stack;
    migrate failed raises Unhealthy naming it at once, not after the budget."""
    done = _OneShotStack(ServiceState("migrate", "done", detail="Exited (0)"))
    progress = wait_healthy(done, 5, 2, lambda _: None)  # type: ignore[arg-type]
    assert {(p.service, p.state, p.healthy) for p in progress} == {
        ("postgres", "healthy", True),
        ("migrate", "done", True),
    }
    failed = _OneShotStack(ServiceState("migrate", "failed", detail="Exited (1)"))
    with pytest.raises(Unhealthy, match=r"^migrate failed \(Exited \(1\)\)") as raised:
        wait_healthy(failed, 600, 2, lambda _: None)  # type: ignore[arg-type]
    assert raised.value.data["blocked"] == "migrate"  # type: ignore[index]


def test_the_local_runtime_refuses_postgres_in_one_line(tmp_path: Path) -> None:
    """`up --database postgres` on the local runtime: exit 2, one line saying it runs SQLite
    only and what to use instead; nothing is started."""
    run = Cli(tmp_path, {"MOVIEOPS_STATE_DIR": str(tmp_path / "state")}, runtime="local")
    document = run.json("up", "--database", "postgres", code=2)
    assert document["error"]["code"] == "usage"
    assert "supports SQLite only" in document["error"]["message"]
    assert "\n" not in document["error"]["message"]
    assert "--runtime compose" in document["error"]["hint"]
    assert not (tmp_path / "state" / "supervisord.pid").exists()


def test_the_cause_of_a_failed_one_shot_is_its_error_line() -> None:
    """A step that prints one ``error:`` line instead of a traceback (python -m app.migrate)
    has that line as the cause `up` shows."""
    lines = [
        "migrate-1  | starting",
        "migrate-1  | error: migration failed: OSError: Connect call failed ('10.0.0.2', 5432)",
    ]
    assert last_exception(lines) == (
        "error: migration failed: OSError: Connect call failed ('10.0.0.2', 5432)"
    )


def test_monitoring_mode_starts_its_profile_publishes_prometheus_and_is_remembered(
    tmp_path: Path,
) -> None:
    """`up --monitoring`: the monitoring profile, Prometheus's published port in compose.env,
    prometheus and redis-exporter among the services (after the rest), kept in the mode file;
    without it, none of that."""
    runtime = ComposeRuntime(
        tmp_path / "project",
        "movieops-unit",
        tmp_path / "state",
        (18000, 18080, 16379),
        prometheus_port=19090,
    )
    runtime.mode = runtime._mode_for(UpOptions(monitoring=True))
    runtime._save_mode()
    again = ComposeRuntime(tmp_path / "project", "movieops-unit", tmp_path / "state", (1, 2, 3))
    assert again.mode == ComposeMode(monitoring=True)
    assert again.services[-2:] == ("prometheus", "redis-exporter")
    assert runtime.client().client_config.compose_profiles == ["monitoring"]
    env = (tmp_path / "state" / "compose.env").read_text().splitlines()
    assert "MOVIE_PROMETHEUS_PORT=19090" in env
    plain = _runtime(tmp_path / "plain")
    assert "prometheus" not in plain.services
    assert plain.client().client_config.compose_profiles == []


def test_the_local_runtime_refuses_monitoring_in_one_line(tmp_path: Path) -> None:
    """`up --monitoring` outside compose: exit 2, one line, the compose hint; nothing starts."""
    run = Cli(tmp_path, {"MOVIEOPS_STATE_DIR": str(tmp_path / "state")}, runtime="local")
    document = run.json("up", "--monitoring", code=2)
    assert document["error"]["code"] == "usage"
    assert "monitoring profile" in document["error"]["message"]
    assert "--runtime compose" in document["error"]["hint"]
    assert not (tmp_path / "state" / "supervisord.pid").exists()


def test_the_redis_exporter_row_counts_for_itself_not_for_a_replica_of_redis() -> None:
    """While `up` waits, api-1/api-2 are rows of api, but redis-exporter is a service of its own
    (running is its health: it has no probe and no healthcheck)."""

    class Monitoring(_OneShotStack):
        services = ("postgres", "redis-exporter")

        def status(self) -> list[ServiceState]:
            return [
                ServiceState("postgres", "running", "healthy"),
                ServiceState("redis-exporter", "running"),
            ]

    done = wait_healthy(Monitoring(ServiceState("migrate", "done")), 5, 2, lambda _: None)  # type: ignore[arg-type]
    assert {(item.service, item.healthy) for item in done} == {
        ("postgres", True),
        ("redis-exporter", True),
    }
