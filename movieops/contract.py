"""`movieops contract`: Schemathesis against the live API, every check, all four phases.

The API limits every client to 20 requests per minute per path, which would turn most of a
contract run into 429s. The run therefore sends the stack's exemption secret
(X-RateLimit-Exempt, configured as MOVIE_RATE_LIMIT_EXEMPT_TOKENS): ordinary clients keep their
limit, and without a secret the run still works, only mostly against 429 answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from movieops.errors import ContractFailed, NotRunning, PreflightFailed
from movieops.secrets import ensure_secret, read_secret

TOKEN_FILE = "contract.token"  # noqa: S105 - a file name, not a secret
CONFIG_FILE = Path(__file__).with_name("schemathesis.toml")
PHASES = "examples,coverage,fuzzing,stateful"


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


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ensure_token(state_dir: Path) -> str:
    """The stack's exemption secret, created once: 0600 from birth, in a 0700 state directory."""
    return ensure_secret(state_dir / TOKEN_FILE)


def read_token(state_dir: Path) -> str | None:
    """The secret written by `movieops up`, if any."""
    return read_secret(state_dir / TOKEN_FILE)


def wait_for_schema(api_url: str, timeout: float) -> str:
    """Poll /openapi.json until it answers; return its URL."""
    url = f"{api_url}/openapi.json"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return url
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise NotRunning(
        f"the API schema at {url} did not answer within {timeout:g}s ({last})",
        hint="start the stack with `movieops up`, or pass --api-url",
    )


def build_command(
    schemathesis: str,
    schema_url: str,
    *,
    checks: str,
    max_examples: int,
    workers: int,
    report_dir: Path,
    token: str | None,
    seed: int | None,
) -> list[str]:
    """The Schemathesis command line (pure)."""
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
        "--report-dir", str(report_dir),
        "--no-color",
    ]  # fmt: skip
    if token:
        command += ["--header", f"X-RateLimit-Exempt: {token}"]
    if seed is not None:
        command += ["--seed", str(seed)]
    return command


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
    on_output: Callable[[str], None] | None = None,
    timeout: float = 900,
) -> ContractResult:
    """Run Schemathesis; its own output goes to stderr. Raise ContractFailed on failures."""
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
        "schemathesis"
    )
    if binary is None:
        raise PreflightFailed(
            "Schemathesis is not installed", hint="uv sync (it is in the test dependency group)"
        )
    schema_url = wait_for_schema(api_url, schema_timeout)
    report_dir.mkdir(parents=True, exist_ok=True)
    command = build_command(
        binary,
        schema_url,
        checks=checks,
        max_examples=max_examples,
        workers=workers,
        report_dir=report_dir,
        token=token,
        seed=seed,
    )
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "movieops.contract_hooks"}
    started = time.monotonic()
    with subprocess.Popen(  # noqa: S603 - our own venv's schemathesis
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        # A watchdog, so a run that hangs ends with a clear error instead of blocking CI.
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                (on_output or _to_stderr)(line.rstrip("\n"))
        finally:
            watchdog.cancel()
    if process.returncode < 0 and time.monotonic() - started >= timeout:
        raise ContractFailed(
            f"Schemathesis did not finish within {timeout:g}s and was stopped",
            hint="raise --timeout, or lower --max-examples; its output above shows where it was",
        )
    completed = process
    junit = next(iter(sorted(report_dir.glob("*.xml"))), None)
    shown = [
        part if token is None or token not in part else "X-RateLimit-Exempt: ***"
        for part in command
    ]
    result = ContractResult(
        schema_url,
        completed.returncode,
        report_dir,
        junit,
        token is not None,
        shown,
        round(time.monotonic() - started, 1),
    )
    if completed.returncode != 0:
        raise ContractFailed(
            f"Schemathesis reported failures (exit {completed.returncode})",
            hint=f"see its output above and the JUnit report in {report_dir}",
            data=result,
        )
    return result
