"""Schemathesis hooks for `movieops contract` (loaded through SCHEMATHESIS_HOOKS).

Schemathesis reuses generated header values across different bodies; the API then correctly
answers 422 for an Idempotency-Key reused with another body, which Schemathesis would report as a
rejected valid request. Every *valid* key therefore gets a fresh value per call; invalid keys stay
as generated, so the negative tests still reach the 400 path.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

from app.constants import IDEMPOTENCY_KEY_PATTERN

_VALID_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def fresh_idempotency_keys(headers: dict[str, Any] | None) -> None:
    """Replace every valid Idempotency-Key value with a unique one (in place)."""
    if not headers:
        return
    for name, value in list(headers.items()):
        if name.lower() != "idempotency-key" or not isinstance(value, str):
            continue
        if _VALID_KEY.fullmatch(value):
            headers[name] = f"contract-{uuid.uuid4()}"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Unique Idempotency-Key values per call."""
    fresh_idempotency_keys(case.headers)
