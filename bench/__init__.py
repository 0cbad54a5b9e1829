"""Benchmark of the movie API's Redis features against the usual alternatives (issue 7).

Run it with ``uv run --group bench python -m bench`` (see ``bench/README.md``).
"""

from __future__ import annotations

from pathlib import Path

#: The repository root (the parent of this package).
ROOT = Path(__file__).resolve().parent.parent
