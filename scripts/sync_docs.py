"""Regenerate the generated parts of the docs from the code (tests check they agree):

- ``.env.example``: every MOVIE_* setting with its default and meaning;
- the README's configuration table (MOVIE_* and MOVIEOPS_*);
- the route table in docs/service-contract.md, from the live OpenAPI schema.

Run: ``uv run python scripts/sync_docs.py``
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from app.config import Settings
from app.main import create_app
from movieops.settings import CliSettings

ROOT = Path(__file__).resolve().parent.parent
ENV_HEADER = [
    "# Every setting of the movie API and worker, with its default.",
    "# Copy to .env (git-ignored) and change what you need; the environment wins over .env.",
    "",
]


def _default(field: Any) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(value)
    return "" if value is None else str(value)


def render_env_example() -> str:
    """The text of .env.example."""
    lines = list(ENV_HEADER)
    for name, field in Settings.model_fields.items():
        lines += [f"# {field.description}", f"MOVIE_{name.upper()}={_default(field)}", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_settings_table() -> str:
    """The README table of every MOVIE_* and MOVIEOPS_* variable."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    models: list[tuple[str, type[BaseSettings]]] = [
        ("MOVIE_", Settings),
        ("MOVIEOPS_", CliSettings),
    ]
    for prefix, model in models:
        for name, field in model.model_fields.items():
            default = _default(field) or "*(none)*"
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name.upper()}` | `{default}` | {description} |")
    return "\n".join(rows)


def render_routes_table() -> str:
    """The service contract's route table, from the app's OpenAPI schema."""
    schema = create_app(Settings(_env_file=None)).openapi()
    rows = ["| Method | Path | Statuses |", "|---|---|---|"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = ", ".join(sorted(operation["responses"]))
            rows.append(f"| {method.upper()} | {path} | {codes} |")
    return "\n".join(rows)


def replace_block(text: str, name: str, body: str) -> str:
    """Replace what stands between <!-- name:start --> and <!-- name:end -->."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no {name} block")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> None:
    """Write every generated part."""
    (ROOT / ".env.example").write_text(render_env_example())
    readme = ROOT / "README.md"
    readme.write_text(replace_block(readme.read_text(), "settings", render_settings_table()))
    contract = ROOT / "docs" / "service-contract.md"
    contract.write_text(replace_block(contract.read_text(), "routes", render_routes_table()))


if __name__ == "__main__":
    main()
