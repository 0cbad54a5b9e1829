"""Every movieops command against a real stack run by the local runtime (supervisord,
valkey-server, uvicorn and the Arq worker as processes)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError

from movieops.secrets import REDACTED
from tests.clihelp import Cli
from tests.support import ValkeyProcess, free_port, hourly_refresh_minute
from tests.test_worker import planted_pickle


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Ports and settings of the session's local stack."""
    return {
        "MOVIE_PORT": str(free_port()),
        "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MOVIE_LOG_LEVEL": "INFO",
        "MOVIE_HOURLY_REFRESH_MINUTE": hourly_refresh_minute(),
    }


@pytest.fixture(scope="session")
def local(tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str]) -> Iterator[Cli]:
    """`movieops up` on the local runtime once for the session; `down -v` at the end."""
    project = tmp_path_factory.mktemp("project")
    run = Cli(project, stack_env)
    document = run.json("up")
    assert document["data"]["already_running"] is False
    yield run
    run("down", "--volumes", "--yes")


@pytest.fixture
def api(local: Cli) -> str:
    """The local stack's API URL."""
    return f"http://127.0.0.1:{local.env['MOVIE_PORT']}"


def _state(local: Cli) -> Path:
    return local.project_dir / ".movieops"


def _password(local: Cli) -> str:
    """The password `up` generated for the local stack's Redis."""
    return (_state(local) / "redis.password").read_text().strip()


def _authenticated_url(local: Cli) -> str:
    return local.env["MOVIE_REDIS_URL"].replace("redis://", f"redis://:{_password(local)}@")


def test_up_is_healthy_and_a_second_up_is_a_quick_no_op(local: Cli, api: str) -> None:
    """The stack answers; `up` again says it is already running, without restarting anything."""
    assert httpx.get(f"{api}/ready").status_code == 200
    started = time.monotonic()
    document = local.json("up")
    assert time.monotonic() - started < 10
    data = document["data"]
    assert data["already_running"] is True
    assert data["runtime"] == "local"
    assert data["endpoints"]["api_url"] == api
    assert {s["service"] for s in data["services"]} == {"redis", "api", "worker"}
    human = local("up")
    assert "already running and healthy" in human.stderr
    assert f"API    {api}" in human.stderr


def test_status_lists_every_service_running_with_uptime(local: Cli) -> None:
    """status: service, state, restarts, uptime, URL."""
    services = {s["service"]: s for s in local.json("status")["data"]}
    assert set(services) == {"redis", "api", "worker"}
    assert all(s["state"] == "running" for s in services.values())
    assert services["api"]["uptime_seconds"] > 0
    assert services["api"]["restarts"] == 0
    assert services["redis"]["url"] == local.env["MOVIE_REDIS_URL"].replace(
        "redis://", f"redis://:{REDACTED}@"
    )
    assert "running" in local("status").stdout


def test_the_local_redis_refuses_clients_without_the_password(local: Cli) -> None:
    """NOAUTH for a client without the password; the generated one (in MOVIE_REDIS_URL of the
    API and worker) works, and the server runs protected, capped and never evicting."""
    with (
        Redis.from_url(local.env["MOVIE_REDIS_URL"]) as anonymous,
        pytest.raises(AuthenticationError),
    ):
        anonymous.ping()
    with Redis.from_url(_authenticated_url(local)) as client:
        assert client.ping()
        config = client.config_get("*")
    assert config["protected-mode"] == "yes"
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) == 256 * 1024 * 1024


def test_the_tests_redis_refuses_clients_without_the_password(valkey: ValkeyProcess) -> None:
    """Every test talks to an authenticated server: without the password, NOAUTH."""
    parts = urlsplit(valkey.url)
    assert parts.password
    bare = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
    with Redis.from_url(bare) as anonymous, pytest.raises(AuthenticationError):
        anonymous.ping()


def test_the_redis_password_is_never_shown_nor_on_a_command_line(local: Cli) -> None:
    """status and up (human and --json) show the URL redacted; no process of the stack has the
    password in its argv; the files holding it are 0600 inside a 0700 .movieops."""
    password = _password(local)
    outputs = [
        local("status", "--json").stdout,
        local("status").stdout,
        local("up", "--json").stdout,
    ]
    human_up = local("up")
    outputs += [human_up.stdout, human_up.stderr]
    assert all(password not in text for text in outputs)
    assert f"redis://:{REDACTED}@" in outputs[0]
    assert "***" in human_up.stderr
    supervisord = psutil.Process(int((_state(local) / "supervisord.pid").read_text()))
    processes = [supervisord, *supervisord.children(recursive=True)]
    assert len(processes) >= 4  # supervisord, valkey-server, the API and the worker
    for process in processes:
        assert password not in " ".join(process.cmdline())
    state = _state(local)
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("supervisord.conf", "valkey.conf", "redis.password"):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name
    assert password in (state / "valkey.conf").read_text()


def test_health_probes_every_part(local: Cli) -> None:
    """API /health and /ready, Redis PING and the worker heartbeat all pass."""
    probes = {p["name"]: p for p in local.json("health")["data"]}
    assert set(probes) == {"api /health", "api /ready", "redis", "worker"}
    assert all(p["ok"] for p in probes.values())
    assert probes["worker"]["detail"].startswith("heartbeat")


def test_rate_limits_show_counters_after_traffic_and_reset_clears_them(
    local: Cli, api: str
) -> None:
    """Counters via SCAN with count, limit, remaining and reset; filters; --reset."""
    for _ in range(3):
        httpx.get(f"{api}/movies/2")
    rows = local.json("rate-limits", "--path", "/movies/2")["data"]
    assert rows == [
        {
            "client": "127.0.0.1",
            "path": "/movies/{movie_id}",
            "count": 3,
            "limit": 20,
            "remaining": 17,
            "reset_seconds": rows[0]["reset_seconds"],
        }
    ]
    assert 1 <= rows[0]["reset_seconds"] <= 60
    assert local.json("rate-limits", "--client", "10.9.9.9")["data"] == []
    table = local("rate-limits", "--watch", "--count", "2", "--interval", "0.2")
    assert table.exit_code == 0
    assert table.stdout.count("/movies/{movie_id}") == 2
    reset = local.json("rate-limits", "--reset", "--client", "127.0.0.1")
    assert reset["data"]["deleted"] >= 1
    assert local.json("rate-limits", "--client", "127.0.0.1")["data"] == []


def test_refresh_waits_for_the_outcome_and_says_what_happened(local: Cli) -> None:
    """enqueued → complete; again at once → done recently; --force → enqueued again."""
    first = local.json("refresh", "--user", "42", "--wait")["data"]
    assert first["action"] == "enqueued"
    assert first["job"]["state"] == "complete"
    assert first["job"]["result"]["users"] == 1
    again = local.json("refresh", "--user", "42")["data"]
    assert again["action"] == "done_recently"
    forced = local.json("refresh", "--user", "42", "--force", "--wait")["data"]
    assert forced["action"] == "enqueued"
    assert "refresh:42" in local("refresh", "--user", "42").stdout


@pytest.mark.parametrize("user", ["abc", "0", "-3", "2147483648"])
def test_malformed_user_id_is_a_usage_error(local: Cli, user: str) -> None:
    """Exit 2 with Click's one-line reason, no traceback."""
    result = local("refresh", "--user", user)
    assert result.exit_code == 2
    assert "--user" in result.stderr
    assert "Traceback" not in result.stderr


def test_jobs_ls_and_show(local: Cli) -> None:
    """The refresh job is listed with tries and times; show gives it in full; unknown → 9."""
    local.json("refresh", "--user", "7", "--wait")
    jobs = {j["job_id"]: j for j in local.json("jobs", "ls")["data"]}
    assert jobs["refresh:7"]["state"] == "complete"
    assert jobs["refresh:7"]["tries"] == 1
    shown = local.json("jobs", "show", "refresh:7")["data"]
    assert shown["function"] == "refresh_recommendations"
    assert shown["args"] == [7]
    missing = local.json("jobs", "show", "refresh:99999", code=9)
    assert missing["error"]["code"] == "not_running"
    assert local("jobs", "show", "bad id!").exit_code == 2


def test_jobs_show_of_a_planted_pickle_is_one_line_and_never_unpickled(
    local: Cli, tmp_path: Path
) -> None:
    """A pickle written into arq:result:{id}: `jobs show` exits 7 with one line naming the
    unreadable record, `jobs ls` lists it as corrupt, and the payload never runs."""
    marker = tmp_path / "pwned"
    with Redis.from_url(_authenticated_url(local)) as client:
        client.set("arq:result:refresh:4242", planted_pickle(marker))
    try:
        shown = local("jobs", "show", "refresh:4242")
        assert shown.exit_code == 7
        assert shown.stderr.startswith("error: job refresh:4242 cannot be read")
        assert "Traceback" not in shown.stderr
        assert len(shown.stderr.strip().splitlines()) == 2  # the error and its hint
        assert local.json("jobs", "show", "refresh:4242", code=7)["error"]["code"] == "job_failed"
        listed = {j["job_id"]: j["state"] for j in local.json("jobs", "ls")["data"]}
        assert listed["refresh:4242"] == "corrupt"
    finally:
        with Redis.from_url(_authenticated_url(local)) as client:
            client.delete("arq:result:refresh:4242")
    assert not marker.exists()


def test_logs_tail_and_unknown_service(local: Cli, api: str) -> None:
    """logs prefix each line with its service; an unknown service is a usage error."""
    httpx.get(f"{api}/movies?limit=1")
    result = local("logs", "api", "--tail", "5")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert 1 <= len(lines) <= 5
    assert all(line.startswith("api") for line in lines)
    assert local.json("logs", "worker", "--tail", "3")["data"]["lines"]
    unknown = local("logs", "nosuch")
    assert unknown.exit_code == 2
    assert "unknown service 'nosuch'" in unknown.stderr
    assert local("logs", "--follow", "--json").exit_code == 2


def test_contract_passes_without_spending_the_rate_limit(local: Cli, api: str) -> None:
    """Schemathesis over the live API (--live) passes, writes JUnit, and (with the exemption
    secret `up` created, passed by environment only) leaves ordinary clients' counters untouched."""
    document = local.json(
        "contract", "--live", "--max-examples", "5", "--workers", "1", "--timeout", "300"
    )
    data = document["data"]
    assert data["exit_code"] == 0
    assert data["exempt"] is True
    assert data["isolated"] is False
    assert Path(data["junit"]).is_file()
    secret = (local.project_dir / ".movieops" / "contract.token").read_text().strip()
    assert "--header" not in data["command"]
    assert secret not in json.dumps(document)
    assert secret not in Path(data["junit"]).read_text()
    counters = local.json("rate-limits", "--path", "/movies")["data"]
    assert all(row["count"] < 20 for row in counters)


def test_doctor_reports_checks_with_fixes(local: Cli) -> None:
    """Each check has a name, ok flag and detail; all pass with the stack up."""
    checks = local.json("doctor")["data"]
    assert {c["name"] for c in checks} >= {"python", "settings", "docker", "valkey-server"}
    assert all(c["ok"] for c in checks)


def test_down_volumes_without_a_tty_refuses_without_yes(local: Cli) -> None:
    """No prompt without a TTY: exit 2 and a hint, nothing stopped."""
    result = local("down", "--volumes")
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert local.json("health")["ok"]


def test_json_is_the_only_thing_on_stdout_in_a_real_subprocess(local: Cli) -> None:
    """The console script as users run it: one JSON document on stdout, exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "movieops.cli", "--runtime", "local", "--project-dir",
         str(local.project_dir), "status", "--json"],
        env={**os.environ, **local.env},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["command"] == "status"


def test_logs_follow_prints_new_lines_until_interrupted(local: Cli, api: str) -> None:
    """logs --follow as users run it: a request made after it started shows up, and Ctrl-C
    ends it quietly with exit 130."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "movieops.cli", "--runtime", "local", "--project-dir",
         str(local.project_dir), "logs", "api", "--follow", "--tail", "1"],
        env={**os.environ, **local.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As from a terminal: a shell without job control starts background jobs with
        # SIGINT ignored, and an ignored signal stays ignored across exec.
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert follower.stdout is not None
    seen = b""
    try:
        seen += _read_until(follower.stdout, b"\n", within=30)  # the tail is out: following
        path = f"/movies/{1_500_000 + os.getpid() % 100_000}"
        assert httpx.get(f"{api}{path}").status_code == 404
        seen += _read_until(follower.stdout, f"GET {path}".encode(), within=15)
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            _out, err = follower.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.communicate()
            raise
    assert follower.returncode == 130
    assert b"Traceback" not in err
    assert b"interrupted" in err
    assert all(line.startswith(b"api    | ") for line in seen.splitlines()), seen


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _read_until(stream: IO[bytes], wanted: bytes, within: float) -> bytes:
    """Read a pipe until ``wanted`` appears (without blocking past ``within`` seconds)."""
    deadline = time.monotonic() + within
    seen = b""
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} did not appear; got {seen!r}"
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            chunk = os.read(stream.fileno(), 4096)
            assert chunk, f"the stream ended before {wanted!r}; got {seen!r}"
            seen += chunk
    return seen


def test_load_sends_fifty_requests_and_summarises_them(local: Cli) -> None:
    """load --requests 50 --exempt --json: exactly 50 answered, no 5xx, no 429 (the stack's
    exemption secret, which `up` made), some answers from the cache, ratings written."""
    data = local.json("load", "--requests", "50", "--rate", "50", "--exempt", "--seed", "5")["data"]
    assert data["requests"] == 50
    assert sum(data["statuses"].values()) == 50
    assert data["transport_errors"] == {}
    assert (data["error_rate"], data["limited"]) == (0, 0)
    assert data["exempt"] is True
    assert data["cache"].get("HIT", 0) > 0
    assert data["latency_ms"]["p50"] > 0
    assert data["ratings_written"] > 0


def test_top_sees_the_api_and_the_worker_while_load_runs(local: Cli) -> None:
    """top --once --json while `movieops load` runs in another process: the API scraped at
    its /metrics with a request rate above 0, the worker at the port `up` chose for it (the
    URL status shows), Redis memory and keys. Needs the API's /metrics and the worker's
    metrics endpoint (MOVIE_WORKER_METRICS_PORT)."""
    load = subprocess.Popen(
        [sys.executable, "-m", "movieops.cli", "--runtime", "local", "--project-dir",
         str(local.project_dir), "load", "--duration", "8", "--rate", "20", "--exempt"],
        env={**os.environ, **local.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(2)  # under way
        data = local.json("top", "--once", "--interval", "2")["data"]
    finally:
        _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    targets = {t["instance"]: t for t in data["targets"]}
    assert set(targets) == {"api", "worker"}
    assert all(t["state"] == "up" for t in targets.values()), targets
    assert targets["api"]["api"]["requests_per_second"] > 0
    assert targets["worker"]["worker"]["queue_depth"] is not None
    services = {s["service"]: s for s in local.json("status")["data"]}
    assert targets["worker"]["url"] == services["worker"]["url"]
    assert data["redis"]["state"] == "up"
    assert data["redis"]["keys"]["cache:"] > 0


# --- failure classes -------------------------------------------------------------------------


def test_unreachable_attach_urls_exit_9(local: Cli) -> None:
    """Nothing answers at --api-url/--redis-url: 'not running', exit 9, with a hint."""
    dead = local.json(
        "--api-url", f"http://127.0.0.1:{free_port()}", "--redis-url",
        f"redis://127.0.0.1:{free_port()}/0", "health", code=9,
    )  # fmt: skip
    assert dead["error"]["code"] == "not_running"
    assert "movieops up" in dead["error"]["hint"]
    assert local.json(
        "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "refresh", "--user", "1", code=9
    )["error"]["message"].startswith("cannot reach Redis")


def test_busy_port_fails_preflight_with_exit_4_naming_the_holder(tmp_path: Path) -> None:
    """A port taken by another process: named, with the variable to change."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = Cli(
            tmp_path,
            {"MOVIE_PORT": str(port), "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
        )
        document = run.json("up", code=4)
    assert document["error"]["code"] == "preflight_failed"
    assert f"port {port}" in document["error"]["message"]
    assert "python" in document["error"]["message"]
    assert "MOVIE_PORT" in document["error"]["hint"]


def test_invalid_settings_exit_2_naming_the_variable(tmp_path: Path) -> None:
    """MOVIE_* and MOVIEOPS_* mistakes are usage errors with the variable's name."""
    run = Cli(tmp_path, {"MOVIE_PORT": "http"})
    assert "MOVIE_PORT" in run.json("status", code=2)["error"]["message"]
    bad_runtime = Cli(tmp_path, {}, runtime="kubernetes")("status")
    assert bad_runtime.exit_code == 2


def test_compose_runtime_without_docker_exits_3(tmp_path: Path) -> None:
    """--runtime compose where no engine answers: exit 3 and a pointer to --runtime local."""
    run = Cli(tmp_path, {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, runtime="compose")
    document = run.json("status", code=3)
    assert document["error"]["code"] == "docker_unavailable"
    assert "--runtime local" in document["error"]["hint"]


def test_failing_service_is_named_and_a_bundle_is_saved(tmp_path: Path) -> None:
    """Processes that cannot start: `up` names the blocked service, its state and last log
    lines, saves a failure bundle and exits 5."""
    env = {
        "MOVIE_PORT": str(free_port()),
        "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        # An address of no interface here (TEST-NET-3): the migration step passes, then the API
        # cannot bind and crashes at start-up, again and again.
        "MOVIE_HOST": "203.0.113.1",
    }
    run = Cli(tmp_path, env)
    try:
        # A generous budget: `up` must stop on the crash loop itself, long before it, and by
        # then every crash has written its cause to the log (however slow the machine).
        document = run.json("up", "--timeout", "300", code=5)
    finally:
        run("down", "--volumes", "--yes")
    error, data = document["error"], document["data"]
    assert error["code"] == "unhealthy"
    assert data["blocked"] in {"api", "worker"}
    assert error["message"].startswith(f"{data['blocked']} keeps crashing: restarted")
    bundle = Path(data["bundle"])
    assert {p.name for p in bundle.iterdir()} >= {
        "status.json",
        "logs.txt",
        "health.txt",
        "versions.json",
    }
    status_json = (bundle / "status.json").read_text()
    assert f"redis://:{REDACTED}@" in status_json
    assert (tmp_path / ".movieops" / "redis.password").read_text() not in status_json
    assert "203.0.113.1" in (bundle / "logs.txt").read_text()
    assert any("203.0.113.1" in line for line in data["last_log_lines"])
    assert error["next_command"] == f"movieops logs {data['blocked']}"


def test_human_output_is_tables_and_sentences(local: Cli, api: str) -> None:
    """Without --json: tables on stdout with the key facts, messages on stderr."""
    httpx.get(f"{api}/movies/9")
    health = local("health")
    assert health.exit_code == 0
    assert "heartbeat" in health.stdout
    limits = local("rate-limits", "--path", "/movies/9")
    assert "/movies/{movie_id}" in limits.stdout
    rows = local.json("rate-limits", "--path", "/movies/9", "--client", "127.0.0.1")["data"]
    assert [(r["path"], r["limit"]) for r in rows] == [("/movies/{movie_id}", 20)]
    assert rows[0]["remaining"] == max(0, 20 - rows[0]["count"])
    assert f"{rows[0]['count']}" in limits.stdout
    refresh = local("refresh", "--user", "5", "--wait")
    assert refresh.exit_code == 0
    assert "complete" in refresh.stdout
    assert "refresh:5" in local("jobs", "ls").stdout
    shown = local("jobs", "show", "refresh:5").stdout
    assert "refresh_recommendations" in shown
    assert "tries" in shown
    doctor = local("doctor")
    assert doctor.exit_code == 0
    assert "valkey-server" in doctor.stdout
    reset = local("rate-limits", "--reset", "--client", "192.0.2.1")
    assert "deleted 0 counter(s) of 192.0.2.1" in reset.stdout
    attached = local.json("--api-url", api, "--redis-url", _authenticated_url(local), "status")
    assert {row["service"]: row["state"] for row in attached["data"]} == {
        "api": "running",
        "redis": "running",
        "worker": "running",
    }
    assert "attached stack" in local("--api-url", api, "status").stdout
    stopped = local("contract", "--live", "--max-examples", "50", "--timeout", "1")
    assert stopped.exit_code == 6
    assert "did not finish within 1s" in stopped.stderr


def test_errors_are_one_line_with_a_hint_in_human_mode(tmp_path: Path) -> None:
    """A failure prints `error: …` and `hint: …` on stderr, nothing on stdout."""
    run = Cli(tmp_path, {"MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    result = run("rate-limits")
    assert result.exit_code == 9
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot reach Redis")
    assert "hint: start the stack with `movieops up`, or pass --redis-url" in result.stderr
    assert run("logs", "--since", "yesterday").exit_code == 2
    assert run("--api-url", "http://127.0.0.1:1", "down").exit_code == 2
    waited = run(
        "--api-url", f"http://127.0.0.1:{free_port()}", "health", "--wait", "--timeout", "0.5"
    )
    assert waited.exit_code == 5
    assert "probe(s) failing" in waited.stderr
