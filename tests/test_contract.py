"""The published OpenAPI contract holds: Schemathesis, every check, all four phases, in process."""

from __future__ import annotations

import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from redis import Redis as SyncRedis

from app.config import Settings
from app.constants import IDEMPOTENCY_KEY_PATTERN
from app.main import create_app
from app.migrate import migrate
from tests.conftest import run_coroutine

_VALID_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Give every valid Idempotency-Key a fresh value.

    Schemathesis reuses generated header values across different bodies, and the API then
    (correctly) answers 422 for a reused key; invalid keys stay as generated for negative tests.
    """
    headers = case.headers or {}
    for name in list(headers):
        value = headers[name]
        if (
            name.lower() == "idempotency-key"
            and isinstance(value, str)
            and _VALID_KEY.fullmatch(value)
        ):
            headers[name] = f"contract-{uuid.uuid4()}"


CALLS: list[tuple[str, int]] = []


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """Record (operation, status) of every call, to prove the stateful phase followed links."""
    CALLS.append((case.operation.label, response.status_code))


@pytest.fixture(scope="module")
def contract_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contract run's SQLite file."""
    return tmp_path_factory.mktemp("contract") / "movies.db"


@pytest.fixture(scope="module")
def contract_app(valkey: Any, contract_db: Path) -> FastAPI:
    """The API with real SQLite and valkey; Schemathesis runs its lifespan itself."""
    db = contract_db
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        redis_url=valkey.url,
        rate_limit_per_minute=1_000_000,
        # An empty catalog: a film can only be found through a link from its creation.
        seed_demo_data=False,
        ready_requires_worker=False,
        _env_file=None,
    )
    run_coroutine(migrate(settings))  # the deploy's migration step
    return create_app(settings)


@pytest.fixture(scope="module")
def api_schema(contract_app: FastAPI) -> Any:
    """The schema the running app publishes."""
    return schemathesis.openapi.from_asgi("/openapi.json", contract_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_its_schema(case: Any) -> None:
    """Examples, coverage and fuzzing phases: every response matches the documentation."""
    case.call_and_validate()


def test_linked_operations_conform_statefully(
    api_schema: Any, contract_db: Path, valkey: Any
) -> None:
    """Stateful phase: create → read/replace/rate/delete sequences through OpenAPI links.

    Every scenario starts from an empty catalog and an empty Redis: Hypothesis needs the same
    steps to meet the same state, or it reports the run as flaky.
    """

    class Workflow(api_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            with sqlite3.connect(contract_db) as conn:
                for table in ("ratings", "movie_genres", "recommendations", "movies"):
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            with SyncRedis.from_url(valkey.url) as redis:
                redis.flushdb()

    CALLS.clear()
    Workflow.run(
        settings=settings(
            max_examples=40,
            deadline=None,
            stateful_step_count=6,
            suppress_health_check=list(HealthCheck),
        )
    )
    reached = set(CALLS)
    for linked in [
        ("GET /movies/{movie_id}", 200),
        ("PUT /movies/{movie_id}", 200),
        ("DELETE /movies/{movie_id}", 204),
        ("POST /movies/{movie_id}/ratings", 201),
    ]:
        assert linked in reached, f"stateful phase never reached {linked}"
