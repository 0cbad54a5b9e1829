"""One error tree for the CLI. Each error carries a stable code, its documented exit code, a
hint, whether running the same command again later may succeed (``retryable``) and, where the CLI
knows it, the command to run next; only the CLI edge catches them, prints one line (or the JSON
envelope) and exits."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes: the same in a terminal and in CI."""

    OK = 0
    ERROR = 1  # anything unexpected
    USAGE = 2  # bad arguments or invalid MOVIE_*/MOVIEOPS_* settings
    DOCKER_UNAVAILABLE = 3  # compose runtime asked for, but no engine or no Compose plugin
    PREFLIGHT_FAILED = 4  # a port is taken, config invalid, stale state that cannot be fixed
    UNHEALTHY = 5  # a service did not become healthy in its budget, or a probe failed
    CONTRACT_FAILED = 6  # Schemathesis found failures
    JOB_FAILED = 7  # a background job ended in failure
    JOB_TIMEOUT = 8  # waited for a job longer than --timeout
    NOT_RUNNING = 9  # the stack is not running, or an --api-url/--redis-url is unreachable
    ROLLED_BACK = 10  # swarm: the update failed and Swarm rolled the services back
    THRESHOLD_EXCEEDED = 11  # load: the run broke --max-error-rate or --max-p99


class MovieOpsError(Exception):
    """Base of every error the CLI reports."""

    exit_code: ExitCode = ExitCode.ERROR
    code = "error"
    retryable = False
    """Whether the same command may succeed later without a change (a stack still starting)."""
    default_next_command: str | None = None

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        data: object = None,
        next_command: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.data = data
        self.next_command = next_command or self.default_next_command


class UsageError(MovieOpsError):
    """Bad command-line input."""

    exit_code = ExitCode.USAGE
    code = "usage"


class ConfigError(MovieOpsError):
    """Invalid MOVIE_* or MOVIEOPS_* settings."""

    exit_code = ExitCode.USAGE
    code = "config_invalid"


class DockerUnavailable(MovieOpsError):
    """No Docker engine answers, or the Compose plugin is missing."""

    exit_code = ExitCode.DOCKER_UNAVAILABLE
    code = "docker_unavailable"


class PreflightFailed(MovieOpsError):
    """Something the stack needs is missing or in the way."""

    exit_code = ExitCode.PREFLIGHT_FAILED
    code = "preflight_failed"


class Unhealthy(MovieOpsError):
    """A service is not healthy (or did not become healthy in time)."""

    exit_code = ExitCode.UNHEALTHY
    code = "unhealthy"
    retryable = True
    default_next_command = "movieops logs"


class RolledBack(Unhealthy):
    """Swarm rolled an update back: its new tasks failed (the previous version runs again)."""

    exit_code = ExitCode.ROLLED_BACK
    code = "rolled_back"
    retryable = False


class ContractFailed(MovieOpsError):
    """The contract run found failures."""

    exit_code = ExitCode.CONTRACT_FAILED
    code = "contract_failed"


class JobFailed(MovieOpsError):
    """A job finished in failure."""

    exit_code = ExitCode.JOB_FAILED
    code = "job_failed"


class JobTimeout(MovieOpsError):
    """A job did not finish in time."""

    exit_code = ExitCode.JOB_TIMEOUT
    code = "job_timeout"
    retryable = True
    default_next_command = "movieops health"


class NotRunning(MovieOpsError):
    """The stack (or the given URL) does not answer."""

    exit_code = ExitCode.NOT_RUNNING
    code = "not_running"
    retryable = True
    default_next_command = "movieops up"


class ThresholdExceeded(MovieOpsError):
    """A load run broke one of its thresholds (--max-error-rate, --max-p99)."""

    exit_code = ExitCode.THRESHOLD_EXCEEDED
    code = "threshold_exceeded"
