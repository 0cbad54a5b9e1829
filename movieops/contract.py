"""`movieops contract`: Schemathesis against the API, every check, all four phases.

By default the run never meets the user's stack: movieops.sandbox starts a disposable API (own
SQLite, own valkey-server, fresh exemption secret), the run goes against it, and it is removed
afterwards, so a run cannot delete the catalog or leave junk films behind. `--live` runs against
the stack's own API instead (a disposable CI stack, say).

The API limits every client to 20 requests per minute per path, which would turn most of a
contract run into 429s. The run therefore sends the exemption secret (X-RateLimit-Exempt,
configured as MOVIE_RATE_LIMIT_EXEMPT_TOKENS): ordinary clients keep their limit, and without a
secret the run still works, only mostly against 429 answers.

The secret is handed to Schemathesis by environment only (MOVIEOPS_CONTRACT_EXEMPT_TOKEN, which
movieops/schemathesis.toml turns into the header), never on its command line, where `ps` would show
it. Schemathesis sanitizes the header in its output and reports; as a last line of defence every
line relayed from it and the JUnit report are redacted too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from movieops.errors import ContractFailed, NotRunning, PreflightFailed, UsageError
from movieops.secrets import ensure_secret, read_secret, redact
from movieops.waiting import wait_until

TOKEN_FILE = "contract.token"  # noqa: S105 - a file name, not a secret
TOKEN_ENV = "MOVIEOPS_CONTRACT_EXEMPT_TOKEN"  # noqa: S105 - a variable name, not a secret
CONFIG_FILE = Path(__file__).with_name("schemathesis.toml")
PHASES = "examples,coverage,fuzzing,stateful"
REPORT_PREFIX = "junit-"
KEEP_REPORTS = 10


@dataclass(frozen=True)
class ContractResult:
    """What the run did and where its report is."""

    schema_url: str
    exit_code: int
    report_dir: Path
    junit: Path | None
    exempt: bool
    command: list[str]
    seconds: float
    isolated: bool = False


def ensure_token(state_dir: Path) -> str:
    """The stack's exemption secret, created once: 0600 from birth, in a 0700 state directory."""
    return ensure_secret(state_dir / TOKEN_FILE)


def read_token(state_dir: Path) -> str | None:
    """The secret written by `movieops up`, if any."""
    return read_secret(state_dir / TOKEN_FILE)


def wait_for_schema(api_url: str, timeout: float) -> str:
    """Poll /openapi.json until it answers; return its URL."""
    from movieops.probes import http_problem  # httpx: only for a run, never for `up` or `status`

    url = f"{api_url}/openapi.json"
    last = "no answer"

    def answers() -> str | None:
        nonlocal last
        last = http_problem(url) or ""
        return None if last else url

    return wait_until(
        answers,
        within=timeout,
        interval=0.5,
        error=lambda: NotRunning(
            f"the API schema at {url} did not answer within {timeout:g}s ({last})",
            hint="start the stack with `movieops up`, or pass --api-url",
        ),
    )


def new_report_path(report_dir: Path) -> Path:
    """This run's JUnit file: named by its start time (UTC, sortable) plus a random suffix."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return report_dir / f"{REPORT_PREFIX}{stamp}-{secrets.token_hex(3)}.xml"


def prune_reports(report_dir: Path, keep: int = KEEP_REPORTS) -> list[Path]:
    """Delete all but the ``keep`` newest reports movieops wrote there; return the deleted."""
    reports = sorted(report_dir.glob(f"{REPORT_PREFIX}*.xml"))
    old = reports[:-keep] if keep > 0 else reports
    for path in old:
        path.unlink(missing_ok=True)
    return old


def redact_file(path: Path, values: list[str | None]) -> bool:
    """Replace every secret in ``values`` inside ``path`` by ``***``; return whether any was."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    clean = redact(text, values)
    if clean == text:
        return False
    path.write_text(clean, encoding="utf-8")
    return True


def build_command(
    schemathesis: str,
    schema_url: str,
    *,
    checks: str,
    max_examples: int,
    workers: int,
    junit: Path,
    seed: int | None,
) -> list[str]:
    """The Schemathesis command line (pure). No secret: the exemption travels by environment."""
    command = [
        schemathesis,
        "--config-file", str(CONFIG_FILE),
        "run",
        schema_url,
        "--checks", checks,
        "--phases", PHASES,
        "--max-examples", str(max_examples),
        "--workers", str(workers),
        "--report", "junit",
        "--report-junit-path", str(junit),
        "--no-color",
    ]  # fmt: skip
    if seed is not None:
        command += ["--seed", str(seed)]
    return command


def build_env(base: dict[str, str], token: str | None) -> dict[str, str]:
    """Schemathesis' environment (pure): our hooks, and the secret (empty when there is none;
    the configuration refers to the variable, so it must exist)."""
    return {**base, "SCHEMATHESIS_HOOKS": "movieops.contract_hooks", TOKEN_ENV: token or ""}


def run_contract(
    api_url: str,
    *,
    token: str | None,
    checks: str = "all",
    max_examples: int = 50,
    workers: int = 2,
    report_dir: Path,
    schema_timeout: float = 60,
    seed: int | None = None,
    on_output: Callable[[str], None],
    timeout: float = 900,
    isolated: bool = False,
) -> ContractResult:
    """Run Schemathesis, relaying its output to ``on_output``. Raise ContractFailed on failures."""
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
        "schemathesis"
    )
    if binary is None:
        raise PreflightFailed(
            "Schemathesis is not installed", hint="uv sync (it is in the test dependency group)"
        )
    schema_url = wait_for_schema(api_url, schema_timeout)
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = new_report_path(report_dir)
    command = build_command(
        binary,
        schema_url,
        checks=checks,
        max_examples=max_examples,
        workers=workers,
        junit=junit,
        seed=seed,
    )
    env = build_env(dict(os.environ), token)
    relay = on_output
    started = time.monotonic()
    try:
        with subprocess.Popen(  # noqa: S603 - our own venv's schemathesis
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process:
            # A watchdog, so a run that hangs ends with a clear error instead of blocking CI.
            watchdog = threading.Timer(timeout, process.kill)
            watchdog.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    relay(redact(line.rstrip("\n"), [token]))
            finally:
                watchdog.cancel()
    finally:
        # Schemathesis sanitizes the header itself; this catches a secret echoed anywhere else.
        redact_file(junit, [token])
        prune_reports(report_dir)
    if process.returncode < 0 and time.monotonic() - started >= timeout:
        raise ContractFailed(
            f"Schemathesis did not finish within {timeout:g}s and was stopped",
            hint="raise --timeout, or lower --max-examples; its output above shows where it was",
        )
    result = ContractResult(
        schema_url,
        process.returncode,
        report_dir,
        junit if junit.is_file() else None,
        token is not None,
        command,
        round(time.monotonic() - started, 1),
        isolated,
    )
    if process.returncode != 0:
        raise ContractFailed(
            f"Schemathesis reported failures (exit {process.returncode})",
            hint=f"see its output above and the JUnit report {result.junit or report_dir}",
            data=result,
        )
    return result


def check_target(*, live: bool, attached_api: bool, token_given: bool) -> None:
    """A run that creates and deletes films targets a given API only when asked (--live)."""
    if live:
        return
    if attached_api:
        raise UsageError(
            "--api-url with contract needs --live (the run creates and deletes films)",
            hint="add --live to run against that API, or drop --api-url for a disposable instance",
        )
    if token_given:
        raise UsageError(
            "--token applies to --live only (a disposable instance has its own secret)",
            hint="add --live, or drop --token",
        )


def run_isolated(
    *, schema_timeout: float, on_output: Callable[[str], None], **options: Any
) -> ContractResult:
    """Run the contract against a disposable API of its own, started and removed around the run."""
    from movieops.sandbox import disposable_api  # starts processes: only when it is needed

    on_output("starting a disposable API for the run (own database and Redis)")
    with disposable_api(schema_timeout) as sandbox:
        return run_contract(
            sandbox.api_url,
            token=sandbox.token,
            isolated=True,
            schema_timeout=schema_timeout,
            on_output=on_output,
            **options,
        )
