"""From `docker compose config` to a stack file, and reading Swarm's task list (no Docker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from movieops.runtime.swarm import log_line, task_rows
from movieops.swarmfile import SECRET_PLACEHOLDER, StackFileError, stack_file


def _config(tmp_path: Path) -> dict[str, Any]:
    """The shape `docker compose config --format json` gives for compose.yaml + the overlay."""
    secret = tmp_path / "redis.password"
    secret.write_text("s3cret")
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}")
    return {
        "name": "movieops",
        "services": {
            "api": {
                "build": {"context": "."},
                "image": "movieops-app:local",
                "depends_on": {"redis": {"condition": "service_healthy", "required": True}},
                "restart": "unless-stopped",
                "mem_limit": "268435456",
                "pids_limit": 256,
                "tmpfs": ["/tmp:size=16m,mode=1777"],  # noqa: S108 - a container path
                "security_opt": ["no-new-privileges:true"],
                "environment": {
                    "MOVIE_REDIS_URL": "redis://redis:6379/0",
                    "MOVIE_REDIS_PASSWORD": SECRET_PLACEHOLDER,
                    "MOVIE_LOG_LEVEL": "INFO",
                },
                "secrets": [{"source": "redis_password", "target": "x", "mode": "0400"}],
                "volumes": [{"type": "volume", "source": "db-data", "target": "/data"}],
                "networks": {"backend": None},
                "deploy": {"replicas": 3, "resources": {}, "placement": {}},
            },
            "proxy": {
                "image": "nginx:1.30.4-alpine",
                "ports": [{"mode": "host", "target": 8080, "published": "8080", "host_ip": ""}],
                "configs": [{"source": "nginx_conf", "target": "/etc/nginx.conf"}],
                "networks": {"backend": None},
            },
            "other": {"image": "x", "networks": {"backend": None}},
        },
        "networks": {"backend": {"name": "movieops_backend", "driver": "overlay"}},
        "volumes": {"db-data": {"name": "movieops_db-data"}, "unused": {}},
        "secrets": {"redis_password": {"name": "movieops_redis_password", "file": str(secret)}},
        "configs": {"nginx_conf": {"name": "movieops_nginx_conf", "file": str(conf)}},
    }


def test_swarm_rejected_keys_are_dropped_and_limits_become_deploy_resources(
    tmp_path: Path,
) -> None:
    """build, depends_on, restart … go; memory/pids limits and tmpfs become Swarm's forms."""
    out = stack_file(
        _config(tmp_path),
        stack="st",
        app_image="movieops-app:abc",
        app_services=frozenset({"api"}),
        services=frozenset({"api", "proxy"}),
    )
    api = out["services"]["api"]
    for key in ("build", "depends_on", "restart", "mem_limit", "pids_limit", "tmpfs"):
        assert key not in api
    assert api["deploy"]["resources"]["limits"] == {"memory": "268435456", "pids": 256}
    assert "placement" not in api["deploy"]
    tmp = "/tmp"  # noqa: S108 - a path inside the container
    assert {"type": "tmpfs", "target": tmp, "tmpfs": {"size": 16 << 20, "mode": 0o1777}} in (
        api["volumes"]
    )
    assert api["image"] == "movieops-app:abc"
    assert api["networks"] == ["backend"]
    assert api["secrets"][0]["mode"] == 0o400
    assert set(out["services"]) == {"api", "proxy"}
    assert out["volumes"] == {"db-data": {}}
    assert "name" not in out["networks"]["backend"]


def test_secret_placeholders_never_reach_the_stack_file(tmp_path: Path) -> None:
    """A variable rendered with the secret placeholder is dropped from the environment."""
    out = stack_file(_config(tmp_path), stack="st", app_image="i", app_services=frozenset({"api"}))
    assert out["services"]["api"]["environment"] == {
        "MOVIE_REDIS_URL": "redis://redis:6379/0",
        "MOVIE_LOG_LEVEL": "INFO",
    }
    assert SECRET_PLACEHOLDER not in repr(out)


def test_secret_variables_from_an_env_file_never_reach_the_stack_file(tmp_path: Path) -> None:
    """A password an .env file put in a service's environment (env_file) is dropped too: the
    service gets it as a Docker secret, never in its spec."""
    config = _config(tmp_path)
    config["services"]["api"]["environment"]["MOVIE_DATABASE_PASSWORD"] = "hunter2hunter2"
    config["services"]["api"]["environment"]["POSTGRES_PASSWORD"] = "hunter2hunter2"
    out = stack_file(config, stack="st", app_image="i", app_services=frozenset({"api"}))
    assert "hunter2hunter2" not in repr(out)


def test_a_placeholder_outside_the_environment_is_refused(tmp_path: Path) -> None:
    """A secret interpolated anywhere else (a command line) stops the deploy."""
    config = _config(tmp_path)
    config["services"]["api"]["command"] = ["run", f"--password={SECRET_PLACEHOLDER}"]
    with pytest.raises(StackFileError, match="secret"):
        stack_file(config, stack="st", app_image="i", app_services=frozenset({"api"}))


def test_secret_and_config_names_change_with_their_content(tmp_path: Path) -> None:
    """Docker secrets are immutable: a new value gets a new name, so a deploy can update it."""
    config = _config(tmp_path)
    first = stack_file(config, stack="st", app_image="i", app_services=frozenset())
    (tmp_path / "redis.password").write_text("another")
    second = stack_file(config, stack="st", app_image="i", app_services=frozenset())
    assert first["secrets"]["redis_password"]["name"].startswith("st_redis_password_")
    assert first["secrets"]["redis_password"]["name"] != second["secrets"]["redis_password"]["name"]
    assert first["configs"] == second["configs"]


def test_ports_through_the_routing_mesh_are_refused(tmp_path: Path) -> None:
    """Ingress-mode ports need IPVS: the overlay must publish in host mode."""
    config = _config(tmp_path)
    config["services"]["proxy"]["ports"][0]["mode"] = "ingress"
    with pytest.raises(StackFileError, match="host mode"):
        stack_file(config, stack="st", app_image="i", app_services=frozenset())


def _task(name: str, desired: str, current: str, error: str = "") -> dict[str, str]:
    return {"Name": name, "DesiredState": desired, "CurrentState": current, "Error": error}


def test_task_rows_show_replicas_restarts_and_a_completed_job() -> None:
    """Replicas by slot, earlier ended tasks of a slot as restarts, the job as exit 0."""
    tasks = [
        _task("st_api.1", "Running", "Running 5 seconds ago"),
        _task("st_api.2", "Running", "Starting 2 seconds ago"),
        _task("st_worker.1", "Running", "Running 1 second ago"),
        _task(r" \_ st_worker.1", "Shutdown", "Failed 9 seconds ago", "task: non-zero exit (1)"),
        _task(r" \_ st_worker.1", "Shutdown", "Complete 20 seconds ago"),
        _task("st_migrate.abc123", "Complete", "Complete 30 seconds ago"),
        _task("other_api.1", "Running", "Running 5 seconds ago"),
    ]
    rows = {r.service: r for r in task_rows(tasks, "st")}
    assert set(rows) == {"api-1", "api-2", "worker", "migrate"}
    assert (rows["api-1"].state, rows["api-1"].health) == ("running", "healthy")
    assert (rows["api-2"].state, rows["api-2"].health) == ("starting", "starting")
    assert rows["worker"].restarts == 2
    assert (rows["migrate"].state, rows["migrate"].detail) == ("done", "exit 0")


def test_service_log_lines_take_the_compose_shape() -> None:
    """`st_api.2.taskid@node | text` reads `api-2 | text`; other lines are left alone."""
    assert log_line("st_api.2.x1y2z3@vm    | hello | world", "st") == "api-2 | hello | world"
    assert log_line("plain line", "st") == "plain line"


def test_a_failed_task_of_a_service_is_restarting_and_of_a_job_failed() -> None:
    """Swarm replaces a service's failed task (not a failure of `up` by itself); a job's is."""
    tasks = [
        _task("st_api.1", "Running", "Failed 1 second ago", "task: non-zero exit (143)"),
        _task("st_migrate.abc", "Complete", "Failed 2 seconds ago", "task: non-zero exit (1)"),
    ]
    rows = {r.service: r for r in task_rows(tasks, "st")}
    assert rows["api"].state == "restarting"
    assert (rows["migrate"].state, rows["migrate"].detail) == ("failed", "task: non-zero exit (1)")


def test_asking_for_other_replicas_makes_a_healthy_stack_not_up_to_date(tmp_path: Path) -> None:
    """`up --replicas N` on a stack running another number is no no-op: slots to start are
    missing, slots to remove are stopping (so `up` deploys and waits)."""
    from movieops.runtime import ServiceState
    from movieops.runtime.swarm import SwarmRuntime

    runtime = SwarmRuntime(tmp_path, "st", tmp_path, 8080)
    three = [ServiceState(f"api-{n}", "running", "healthy") for n in (1, 2, 3)]
    runtime._wanted_replicas = 3
    assert runtime._against_wanted_replicas(list(three), None) == three
    runtime._wanted_replicas = 5
    grown = runtime._against_wanted_replicas(list(three), None)
    assert [(r.service, r.state) for r in grown[3:]] == [("api-4", "missing"), ("api-5", "missing")]
    runtime._wanted_replicas = 1
    shrunk = {r.service: r.state for r in runtime._against_wanted_replicas(list(three), None)}
    assert shrunk == {"api-1": "running", "api-2": "stopping", "api-3": "stopping"}
    runtime._wanted_replicas = 2
    single = [ServiceState("api", "running", "healthy")]
    assert [r.service for r in runtime._against_wanted_replicas(list(single), None)] == [
        "api",
        "api-2",
    ]
