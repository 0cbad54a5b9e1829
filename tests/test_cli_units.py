"""Pure parts of the CLI, without Docker or processes: argv and config building, parsing,
output shaping, the envelope and its schema."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from app.config import Settings
from app.jobs import JobState, JobView
from movieops.contract import ensure_token, read_token
from movieops.contract_hooks import fresh_idempotency_keys
from movieops.embedded import VALKEY_MAXMEMORY, valkey_launch
from movieops.errors import ExitCode, JobTimeout, MovieOpsError, NotRunning, UsageError
from movieops.jobs import show_job
from movieops.output import envelope, jsonable
from movieops.runtime import MetricsTarget
from movieops.runtime.compose import (
    compose_env,
    container_address,
    parse_ps,
    reachable,
    targets_or_published,
)
from movieops.runtime.local import (
    LocalLayout,
    LocalRuntime,
    supervisord_config,
    with_password,
)
from movieops.timeparse import parse_since
from tests.clihelp import SCHEMA, Cli
from tests.support import free_port


def test_exit_codes_are_distinct_and_documented() -> None:
    """Each failure class has its own code (no aliases: see test_exit_codes)."""
    assert len(ExitCode.__members__) == len(list(ExitCode))
    assert ExitCode.DOCKER_UNAVAILABLE.value == 3
    assert ExitCode.JOB_TIMEOUT.value == 8


def test_envelope_matches_the_published_schema_for_success_and_error() -> None:
    """ok ⇔ error is null; error has code, message, hint; data is plain JSON."""
    job = JobView("refresh:1", JobState.COMPLETE, finished_at=datetime(2026, 1, 1, tzinfo=UTC))
    ok = envelope("jobs show", job)
    jsonschema.validate(ok, SCHEMA)
    assert ok["data"]["state"] == "complete"
    assert ok["data"]["finished_at"] == "2026-01-01T00:00:00+00:00"
    error = envelope("refresh", error=JobTimeout("too slow", hint="check the worker", data=job))
    jsonschema.validate(error, SCHEMA)
    assert error["ok"] is False
    assert error["error"] == {
        "code": "job_timeout",
        "message": "too slow",
        "hint": "check the worker",
        "retryable": True,
        "next_command": "movieops health",
    }
    assert error["data"]["job_id"] == "refresh:1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**ok, "ok": False}, SCHEMA)


def test_jsonable_handles_paths_sets_and_nested_dataclasses() -> None:
    """Everything an operation returns becomes plain JSON."""
    assert jsonable({"p": Path("/x"), "s": (1, 2), "e": ExitCode.OK}) == {
        "p": "/x",
        "s": [1, 2],
        "e": 0,
    }
    assert MovieOpsError("m").code == "error"


def test_exemption_token_is_created_once_and_private(tmp_path: Path) -> None:
    """The secret persists across calls, is long enough for the API, and is mode 0600."""
    assert read_token(tmp_path) is None
    token = ensure_token(tmp_path)
    assert ensure_token(tmp_path) == token == read_token(tmp_path)
    assert len(token) >= 16
    assert (tmp_path / "contract.token").stat().st_mode & 0o777 == 0o600


def test_contract_hook_renews_only_valid_idempotency_keys() -> None:
    """Valid keys get unique values; invalid ones stay for the negative tests."""
    headers = {"Idempotency-Key": "abc", "Other": "x"}
    fresh_idempotency_keys(headers)
    assert headers["Idempotency-Key"].startswith("contract-")
    assert headers["Other"] == "x"
    bad = {"Idempotency-Key": "has space"}
    fresh_idempotency_keys(bad)
    assert bad == {"Idempotency-Key": "has space"}
    fresh_idempotency_keys(None)


def test_supervisord_config_runs_three_programs_bound_to_loopback(tmp_path: Path) -> None:
    """valkey (from its config file), api and worker, each restarted, logged, with the
    environment; the valkey config binds loopback, persists (AOF) and requires the password."""
    launch = valkey_launch(
        6390, tmp_path / "valkey", tmp_path / "valkey.conf", password="s3cret", persistent=True
    )
    text = supervisord_config(
        LocalLayout(tmp_path),
        tmp_path,
        "/py",
        launch,
        {"MOVIE_REDIS_URL": "redis://x/0", "P": "50%"},
    )
    for program in ("valkey", "api", "worker"):
        assert f"[program:{program}]" in text
    assert f"command={launch.argv[0]} {tmp_path / 'valkey.conf'}" in text
    assert "s3cret" not in text  # the password is in valkey.conf, not in any command line
    assert "command=/py -m app.worker" in text
    assert 'P="50%%"' in text  # supervisord's own % expansion is escaped
    assert "autorestart=true" in text
    no_redis = supervisord_config(LocalLayout(tmp_path), tmp_path, "/py", None, {})
    assert "[program:valkey]" not in no_redis


def test_only_the_worker_gets_its_metrics_port(tmp_path: Path) -> None:
    """Program-specific variables reach that program alone; the shared ones reach all."""
    text = supervisord_config(
        LocalLayout(tmp_path),
        tmp_path,
        "/py",
        None,
        {"SHARED": "1"},
        {"worker": {"MOVIE_WORKER_METRICS_PORT": "9555"}},
    )
    api, worker = text.split("[program:api]")[1].split("[program:worker]")
    assert 'SHARED="1"' in api
    assert "MOVIE_WORKER_METRICS_PORT" not in api
    assert 'MOVIE_WORKER_METRICS_PORT="9555"' in worker
    assert 'SHARED="1"' in worker


def test_local_metrics_targets_are_the_api_and_the_port_up_chose(tmp_path: Path) -> None:
    """The API's /metrics on MOVIE_PORT; the worker's on the free port `up` picked and wrote
    down (none before any `up`), which status shows as the worker's URL."""
    settings = Settings(port=8123, _env_file=None)
    runtime = LocalRuntime(settings, tmp_path / "state", tmp_path)
    api = MetricsTarget("api", "api", "http://127.0.0.1:8123/metrics")
    assert runtime.metrics_targets() == [api]
    (tmp_path / "state").mkdir()
    chosen = runtime._worker_metrics_environment()
    assert chosen["MOVIE_WORKER_METRICS_HOST"] == "127.0.0.1"
    port = int(chosen["MOVIE_WORKER_METRICS_PORT"])
    assert port > 0
    worker = MetricsTarget("worker", "worker", f"http://127.0.0.1:{port}/metrics")
    assert runtime.metrics_targets() == [api, worker]
    fixed = LocalRuntime(
        Settings(worker_metrics_port=9777, _env_file=None), tmp_path / "s", tmp_path
    )
    (tmp_path / "s").mkdir()
    assert fixed._worker_metrics_environment()["MOVIE_WORKER_METRICS_PORT"] == "9777"


def test_a_containers_address_comes_from_its_network() -> None:
    """docker inspect's networks: the first with an address; none: None."""

    class Network:
        def __init__(self, ip_address: str) -> None:
            self.ip_address = ip_address

    assert container_address({"p_backend": Network("172.30.59.4")}) == "172.30.59.4"
    assert container_address({"p_backend": Network("")}) is None
    assert container_address(None) is None


def test_unreachable_container_addresses_fall_back_to_the_published_port() -> None:
    """Every container when the host reaches the first API one; else the published API port,
    marked, as the one target (no worker: it is not published)."""
    containers = [
        MetricsTarget("api", "api-1", "http://172.30.59.3:8000/metrics"),
        MetricsTarget("api", "api-2", "http://172.30.59.4:8000/metrics"),
        MetricsTarget("worker", "worker", "http://172.30.59.5:9101/metrics"),
    ]
    published = "http://127.0.0.1:8000/metrics"
    asked: list[tuple[str, int]] = []

    def reach(host: str, port: int) -> bool:
        asked.append((host, port))
        return True

    assert targets_or_published(containers, reach, published) == containers
    assert asked == [("172.30.59.3", 8000)]
    fallback = targets_or_published(containers, lambda host, port: False, published)
    assert fallback == [MetricsTarget("api", "api", published, note="via published port")]
    assert targets_or_published([], reach, published) == fallback


def test_reachable_is_whether_a_tcp_connection_opens() -> None:
    """A listening socket is reachable; a port nobody listens on is not (no exception)."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert reachable("127.0.0.1", listener.getsockname()[1])
    assert not reachable("127.0.0.1", free_port())


def test_valkey_launch_is_one_config_file_with_auth_and_a_no_eviction_memory_cap(
    tmp_path: Path,
) -> None:
    """The argv is the binary and the config file; the file binds loopback, turns protected mode
    on, caps memory without eviction and carries the password (quoted)."""
    launch = valkey_launch(7001, tmp_path / "d ir", tmp_path / "v.conf", password='p"w')
    assert launch.argv[1:] == (str(tmp_path / "v.conf"),)
    lines = launch.config.splitlines()
    assert {"port 7001", "bind 127.0.0.1", "protected-mode yes", "appendonly yes"} <= set(lines)
    assert f"maxmemory {VALKEY_MAXMEMORY}" in lines
    assert "maxmemory-policy noeviction" in lines
    assert 'requirepass "p\\"w"' in lines
    assert f'dir "{tmp_path / "d ir"}"' in lines
    bare = valkey_launch(7001, tmp_path, tmp_path / "v.conf", password=None, persistent=False)
    assert "appendonly no" in bare.config
    assert "requirepass" not in bare.config


def test_the_redis_url_carries_the_generated_password_but_is_shown_redacted(
    tmp_path: Path,
) -> None:
    """A local MOVIE_REDIS_URL gets .movieops/redis.password (0600, in a 0700 directory); one
    with a password keeps it; status shows the URL with ``***``."""
    state = tmp_path / ".movieops"
    runtime = LocalRuntime(
        Settings(redis_url="redis://127.0.0.1:6399/0", _env_file=None), state, tmp_path
    )
    assert runtime.endpoints().redis_url == "redis://127.0.0.1:6399/0"  # nothing generated yet
    url = runtime.redis_url(create=True)
    password = (state / "redis.password").read_text()
    assert url == f"redis://:{password}@127.0.0.1:6399/0"
    assert runtime.endpoints().redis_url == url
    assert (state / "redis.password").stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    (redis,) = [s for s in runtime.status() if s.service == "redis"]
    assert redis.url == "redis://:***@127.0.0.1:6399/0"
    given = LocalRuntime(
        Settings(redis_url="redis://:mine@localhost:6399/1", _env_file=None), state, tmp_path
    )
    assert given.redis_url(create=True) == "redis://:mine@localhost:6399/1"
    assert with_password("redis://[::1]:7/0", "a/b") == "redis://:a%2Fb@[::1]:7/0"


def test_compose_ps_output_in_both_formats_and_env() -> None:
    """JSON array (newer Compose) and JSON lines (older) both parse."""
    assert parse_ps('[{"Service": "api"}]') == [{"Service": "api"}]
    assert parse_ps('{"Service": "api"}\n{"Service": "redis"}\n') == [
        {"Service": "api"},
        {"Service": "redis"},
    ]
    assert parse_ps("") == []
    env = compose_env(1, 2, 3, "tok")
    assert env == {
        "MOVIE_API_PORT": "1",
        "MOVIE_PROXY_PORT": "2",
        "MOVIE_REDIS_PORT": "3",
        "MOVIE_PROMETHEUS_PORT": "9090",  # used by the monitoring profile only
        "MOVIE_RATE_LIMIT_EXEMPT_TOKENS": "tok",
    }
    assert "MOVIE_RATE_LIMIT_EXEMPT_TOKENS" not in compose_env(1, 2, 3, None)


def test_since_accepts_durations_and_timestamps() -> None:
    """10m, 2h, 30s ago, or an ISO time; nothing means no cut-off."""
    now = datetime.now()
    ten_minutes = parse_since("10m")
    assert ten_minutes is not None
    assert 590 < (now - ten_minutes).total_seconds() < 610
    assert parse_since("2026-01-01T00:00:00") == datetime(2026, 1, 1)
    assert parse_since(None) is None
    with pytest.raises(UsageError, match="--since"):
        parse_since("yesterday")


def test_stale_supervisord_state_is_detected_and_cleaned(tmp_path: Path) -> None:
    """A pid file of a dead supervisord (and its socket) is reported by preflight and removed."""
    from app.config import Settings
    from movieops.runtime import UpOptions
    from movieops.runtime.local import LocalRuntime
    from tests.support import free_port

    state = tmp_path / ".movieops"
    state.mkdir()
    (state / "supervisord.pid").write_text("999999\n")  # no such process
    (state / "supervisor.sock").write_text("")
    settings = Settings(
        _env_file=None, port=free_port(), redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    runtime = LocalRuntime(settings, state, tmp_path)
    assert runtime.supervisord_pid() is None
    checks = {c.name: c for c in runtime.preflight(UpOptions())}
    assert checks["state"].ok
    assert "stale supervisord.pid, supervisor.sock" in checks["state"].detail
    assert sorted(runtime.clear_stale_state()) == [
        "removed stale supervisor.sock",
        "removed stale supervisord.pid",
    ]
    assert not (state / "supervisord.pid").exists()
    proxy = {c.name: c for c in runtime.preflight(UpOptions(proxy=True))}["proxy"]
    assert not proxy.ok
    assert "--runtime compose" in (proxy.fix or "")


def test_following_a_log_continues_after_supervisord_rotates_it(tmp_path: Path) -> None:
    """Rotation leaves a shorter file behind: following starts again at its beginning."""
    from app.config import Settings
    from movieops.runtime.local import LocalRuntime
    from tests.support import free_port

    settings = Settings(
        _env_file=None, port=free_port(), redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    runtime = LocalRuntime(settings, tmp_path / ".movieops", tmp_path)
    log = runtime.layout.log_file("api")
    log.parent.mkdir(parents=True)
    log.write_text("a long line from before the rotation\n")
    lines = runtime.logs(["api"], None, None, follow=True)
    assert next(lines) == "api    | a long line from before the rotation"
    log.write_text("after\n")  # the rotated-to file, shorter than the position reached

    def give_up(*_: object) -> None:
        raise TimeoutError("following never resumed after the rotation")

    previous = signal.signal(signal.SIGALRM, give_up)  # a regression fails, it does not hang
    signal.alarm(5)
    try:
        assert next(lines) == "api    | after"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


async def test_an_unreachable_redis_is_named_without_its_password(tmp_path: Path) -> None:
    """`cannot reach Redis at …` (jobs and rate-limits alike) shows the URL redacted."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(NotRunning) as caught:
        await show_job(url, "refresh:1")
    assert caught.value.message.startswith("cannot reach Redis at redis://:***@127.0.0.1:")
    result = Cli(tmp_path, {"MOVIE_REDIS_URL": url})("rate-limits")
    assert result.exit_code == 9
    assert "redis://:***@127.0.0.1:" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
