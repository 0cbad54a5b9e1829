"""The JSON envelope every command prints with --json, and turning results into JSON data."""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from movieops.errors import MovieOpsError

SCHEMA_VERSION = 1
ENVELOPE_SCHEMA_PATH = Path(__file__).with_name("envelope.schema.json")


def jsonable(value: Any) -> Any:
    """Dataclasses, enums, datetimes and paths as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def envelope(command: str, data: Any = None, error: MovieOpsError | None = None) -> dict[str, Any]:
    """The versioned envelope: schema_version, command, ok, data,
    error {code, message, hint, retryable, next_command}."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "ok": error is None,
        "data": jsonable(error.data if error is not None and data is None else data),
        "error": None
        if error is None
        else {
            "code": error.code,
            "message": error.message,
            "hint": error.hint,
            "retryable": error.retryable,
            "next_command": error.next_command,
        },
    }


def dumps(document: dict[str, Any]) -> str:
    """One line of JSON."""
    return json.dumps(document, ensure_ascii=False, sort_keys=False)
