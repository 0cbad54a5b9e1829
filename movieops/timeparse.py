"""Times operators type: ``--since 10m`` or an ISO timestamp."""

from __future__ import annotations

import time
from datetime import datetime

from movieops.errors import UsageError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(since: str | None) -> datetime | None:
    """``--since`` as an absolute time: '10m', '2h', '30s' ago, or an ISO timestamp."""
    if not since:
        return None
    if since[-1] in UNIT_SECONDS and since[:-1].isdigit():
        return datetime.fromtimestamp(time.time() - int(since[:-1]) * UNIT_SECONDS[since[-1]])
    try:
        return datetime.fromisoformat(since)
    except ValueError:
        raise UsageError(
            f"--since {since!r} is neither a duration nor a timestamp",
            hint="use e.g. 10m, 2h, 30s or 2026-11-28T15:00:00",
        ) from None
