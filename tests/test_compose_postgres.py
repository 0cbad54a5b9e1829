"""movieops on the compose runtime with PostgreSQL (`up --database postgres`), on a real engine.

One stack for the whole module (a cold `up --build`): the postgres profile, the one-shot migrate
step, the data across `down`/`up`, what is published, and `down -v`. Skips with a reason when no
engine with the Compose plugin answers; `.ci/run` turns any skip into a failure.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from python_on_whales import DockerClient

from tests.clihelp import Cli
from tests.support import assert_hardened
from tests.test_compose import ROOT, _engine_problem, cli_project_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]
# The PostgreSQL driver comes with the app's PostgreSQL support (the `pg` branch).
asyncpg = pytest.importorskip("asyncpg")


class PgStack:
    """The module's stack: the CLI bound to it, and a Docker client for its project."""

    def __init__(self, run: Cli, cold: dict[str, Any]) -> None:
        self.run, self.cold = run, cold
        self.docker = DockerClient(
            compose_files=[ROOT / "compose.yaml"],
            compose_project_name=run.env["MOVIEOPS_COMPOSE_PROJECT"],
            compose_project_directory=ROOT,
            compose_profiles=["*"],
            compose_env_files=[Path(run.env["MOVIEOPS_STATE_DIR"]) / "compose.env"],
        )

    @property
    def api(self) -> str:
        """The published API."""
        return f"http://127.0.0.1:{self.run.env['MOVIEOPS_API_PORT']}"

    @property
    def password(self) -> str:
        """The PostgreSQL password movieops generated."""
        state = Path(self.run.env["MOVIEOPS_STATE_DIR"])
        return (state / "postgres.password").read_text().strip()

    def sql(self, query: str) -> str:
        """One query through psql inside the postgres container (its local socket)."""
        output = self.docker.compose.execute(
            "postgres", ["psql", "-U", "movie", "-d", "movie", "-tA", "-c", query], tty=False
        )
        return (output or "").strip()

    def migrate_container(self) -> Any:
        """The migrate service's container (python-on-whales Container)."""
        (container,) = [
            c
            for c in self.docker.compose.ps(all=True)
            if (c.config.labels or {})["com.docker.compose.service"] == "migrate"
        ]
        return container


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgStack]:
    """`up --database postgres --build` once for a throw-away project on its own ports and
    subnet; `down -v` at the end."""
    problem = _engine_problem()
    if problem:
        pytest.skip(f"needs Docker with Compose: {problem}")
    state = tmp_path_factory.mktemp("compose-pg-state")
    env = cli_project_env("pg", state, 73, "MOVIEOPS_POSTGRES_PORT")
    run = Cli(ROOT, env, runtime="compose")
    try:
        yield PgStack(run, run.json("up", "--database", "postgres", "--build")["data"])
    finally:
        run("down", "--volumes", "--yes")


def test_up_brings_postgres_and_a_completed_migrate_step(pg: PgStack) -> None:
    """Cold `up --database postgres`: healthy; status lists postgres (healthy) and migrate
    (done, not failed); migrate ran once and exited 0; the API's data is in PostgreSQL."""
    assert pg.cold["already_running"] is False
    rows = pg.run.json("status")["data"]
    assert [r["service"] for r in rows] == ["redis", "postgres", "migrate", "api", "worker"]
    states = {r["service"]: (r["state"], r["health"]) for r in rows}
    assert states["postgres"] == ("running", "healthy")
    assert states["migrate"] == ("done", None)
    assert states["api"] == states["worker"] == ("running", "healthy")
    port = pg.run.env["MOVIEOPS_POSTGRES_PORT"]
    assert {r["service"]: r["url"] for r in rows}["postgres"] == (
        f"postgresql://movie@127.0.0.1:{port}/movie"
    )
    migrate = pg.migrate_container()
    assert (migrate.state.exit_code, migrate.restart_count) == (0, 0)
    assert int(pg.sql("SELECT count(*) FROM movies")) >= 50
    assert pg.sql("SELECT count(*) FROM alembic_version") == "1"
    answer = httpx.get(f"{pg.api}/ready")
    assert answer.status_code == 200, answer.text
    assert pg.run.json("up")["data"]["already_running"] is True


def test_the_catalog_is_served_and_a_rating_survives_down_and_up(pg: PgStack) -> None:
    """GET /movies from PostgreSQL; a rating is stored there, and after `down` (volumes kept)
    a plain `up` (the remembered database) serves it again; the catalog is not seeded twice."""
    page = httpx.get(f"{pg.api}/movies?limit=5")
    assert page.status_code == 200
    total = page.json()["total"]
    rated = httpx.post(f"{pg.api}/movies/7/ratings", json={"user_id": 100077, "score": 0.5})
    assert rated.status_code == 201, rated.text
    count = httpx.get(f"{pg.api}/movies/7").json()["rating_count"]

    pg.run("down")
    assert pg.run.json("status")["data"][0]["state"] == "missing"
    again = pg.run.json("up")["data"]
    assert again["already_running"] is False
    assert pg.sql("SELECT score FROM ratings WHERE user_id = 100077 AND movie_id = 7") == "0.5"
    assert httpx.get(f"{pg.api}/movies/7").json()["rating_count"] == count
    assert httpx.get(f"{pg.api}/movies?limit=5").json()["total"] == total
    assert pg.migrate_container().state.exit_code == 0


def test_postgres_is_published_on_loopback_only_and_needs_the_private_password(
    pg: PgStack,
) -> None:
    """Every published port is bound to 127.0.0.1; PostgreSQL on its port refuses a wrong
    password and takes the generated one, which lives 0600 in the state dir and appears on
    no container's command line and in no movieops output."""
    for container in pg.docker.compose.ps():
        for bindings in (container.network_settings.ports or {}).values():
            assert all(b["HostIp"] == "127.0.0.1" for b in bindings or []), container.name
    state = Path(pg.run.env["MOVIEOPS_STATE_DIR"])
    for name in ("postgres.password", "compose.env"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    port = int(pg.run.env["MOVIEOPS_POSTGRES_PORT"])

    async def connect(password: str) -> str:
        connection = await asyncpg.connect(
            host="127.0.0.1", port=port, user="movie", database="movie", password=password
        )
        try:
            return str(await connection.fetchval("SELECT current_user"))
        finally:
            await connection.close()

    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(connect("not-the-password"))
    assert asyncio.run(connect(pg.password)) == "movie"
    for container in pg.docker.compose.ps():
        command = [*(container.args or []), *(container.config.cmd or [])]
        assert pg.password not in " ".join(command), container.name
    assert pg.password not in json.dumps(pg.run.json("status"))
    assert pg.password not in (ROOT / "compose.yaml").read_text()


def test_postgres_and_migrate_are_hardened_like_the_others(pg: PgStack) -> None:
    """postgres and migrate: read-only root, no capabilities, no-new-privileges, memory and
    pids limits, a non-root user, /tmp a tmpfs (and postgres's socket directory); migrate is
    never restarted."""
    containers = {
        (c.config.labels or {})["com.docker.compose.service"]: c
        for c in pg.docker.compose.ps(all=True)
    }
    for service in ("postgres", "migrate"):
        assert_hardened(service, containers[service])
    tmpfs = {str(path) for path in containers["postgres"].host_config.tmpfs or {}}
    assert "/var/run/postgresql" in tmpfs
    policy = containers["migrate"].host_config.restart_policy
    assert policy is not None
    assert policy.name in {"no", ""}
    user = pg.docker.compose.execute("postgres", ["id", "-un"], tty=False)
    assert (user or "").strip() == "postgres"


def test_down_volumes_deletes_the_postgres_volume(pg: PgStack) -> None:
    """`down -v --yes` removes the PostgreSQL volume with the others, and its password."""
    project = pg.run.env["MOVIEOPS_COMPOSE_PROJECT"]
    volumes = pg.docker.volume.list(filters=[("label", f"com.docker.compose.project={project}")])
    assert any(str(v.name).endswith("_postgres-data") for v in volumes)
    pg.run.json("down", "--volumes", "--yes")
    volumes = pg.docker.volume.list(filters=[("label", f"com.docker.compose.project={project}")])
    assert volumes == []
    assert not (Path(pg.run.env["MOVIEOPS_STATE_DIR"]) / "postgres.password").exists()
