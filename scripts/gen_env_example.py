"""Regenerate .env.example from the Settings model (a test checks they agree)."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings

HEADER = [
    "# Every setting of the movie API and worker, with its default.",
    "# Copy to .env (git-ignored) and change what you need; the environment wins over .env.",
    "",
]


def render() -> str:
    """The file's text."""
    lines = list(HEADER)
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, list):
            default = ",".join(default)
        lines += [f"# {field.description}", f"MOVIE_{name.upper()}={default}", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    Path(__file__).resolve().parent.parent.joinpath(".env.example").write_text(render())
