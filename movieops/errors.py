"""One error tree for the CLI; each error carries its documented exit code and a hint."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes (the same in a terminal and in CI)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PREFLIGHT_FAILED = 4


class MovieOpsError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code: ExitCode = ExitCode.ERROR
    code = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(MovieOpsError):
    """Invalid MOVIE_* settings."""

    exit_code = ExitCode.USAGE
    code = "config_invalid"


class PreflightError(MovieOpsError):
    """Something the stack needs is missing or in the way (e.g. a busy port)."""

    exit_code = ExitCode.PREFLIGHT_FAILED
    code = "preflight_failed"
