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
