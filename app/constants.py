"""Names and numbers shared by the API, the worker and the CLI: Redis keys, headers, durations.

Every Redis key the project writes is built here, so no other module types a prefix twice.
"""

from __future__ import annotations

RATE_KEY_PREFIX = "rate:"
# The one rate-limit bucket per client for every path that no route matches.
UNMATCHED_ROUTE_TEMPLATE = "/{unmatched}"
# rate:{client}:{template}: a client identity is at most 24 characters, a template one of the
# app's own routes, so no key comes near this (asserted where keys are made).
MAX_RATE_KEY_LENGTH = 128
# The catalog's shape (which films a page holds, totals): bumped by create, delete, genre edits.
CACHE_GENERATION_KEY = "cache:movies:gen"
# Every write takes the next number of this sequence and records it as the film's version.
CACHE_SEQUENCE_KEY = "cache:movies:seq"
# Hash: film id -> sequence number of the film's last write (one field per live film).
CACHE_VERSIONS_KEY = "cache:movies:versions"
# Entries: cache:movies:{generation}:{digest}, a hash of snapshot, film ids, ETag and body.
CACHE_ENTRY_PREFIX = "cache:movies:"
IDEMPOTENCY_KEY_PREFIX = "idem:"

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# RFC 9110 VCHAR: printable ASCII without space.
IDEMPOTENCY_KEY_PATTERN = rf"^[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}$"

RETRY_AFTER_HEADER = "Retry-After"
CACHE_STATUS_HEADER = "X-Cache"
# Seconds a client is told to wait: Redis unavailable, or the same key's request still running.
RETRY_AFTER_UNAVAILABLE_SECONDS = 1
RETRY_AFTER_IN_PROGRESS_SECONDS = 1

MAX_DB_ID = 2**31 - 1


def rate_key(client: str, template: str) -> str:
    """Counter of one client on one route: ``rate:{client}:{template}``, e.g.
    ``rate:203.0.113.7:/movies/{movie_id}`` or ``rate:2001:db8:1:2::/64:/{unmatched}``."""
    return f"{RATE_KEY_PREFIX}{client}:{template}"


def parse_rate_key(key: str) -> tuple[str, str] | None:
    """Split a ``rate:{client}:{template}`` key back into (client, template); None if it is not.

    The template starts with ``/`` and holds no ``:/``; a client may hold both (``::/64``), so
    split at the last ``:/``.
    """
    if not key.startswith(RATE_KEY_PREFIX):
        return None
    rest = key[len(RATE_KEY_PREFIX) :]
    client, sep, template = rest.rpartition(":/")
    if not sep or not client:
        return None
    return client, "/" + template


def idempotency_key(client: str, method: str, path: str, key: str) -> str:
    """Record of one Idempotency-Key: ``idem:{client}:{method}:{path}:{key}``."""
    return f"{IDEMPOTENCY_KEY_PREFIX}{client}:{method}:{path}:{key}"


# --- background jobs (arq) -------------------------------------------------------------------
QUEUE_NAME = "movies:queue"
HEALTH_CHECK_KEY = QUEUE_NAME + ":health-check"  # arq's heartbeat: queue name + this suffix
REFRESH_JOB = "refresh_recommendations"
REFRESH_CHANGED_JOB = "refresh_changed_users"
CRON_LAST_RUN_KEY = "movies:cron:refresh-changed:last-run"
# The job keyword that carries the id of the request that queued the job.
REQUEST_ID_KWARG = "request_id"
ARQ_RESULT_KEY_PREFIX = "arq:result:"
ARQ_IN_PROGRESS_KEY_PREFIX = "arq:in-progress:"
JOB_ID_PATTERN = r"^[A-Za-z0-9:_.-]{1,128}$"
# Wake-up tokens (see wake_key): bounded at WAKE_TOKENS_MAX one-byte tokens, the list gone
# WAKE_TTL_MS after the last push.
WAKE_KEY_PREFIX = "arq:wake:"
WAKE_TOKEN = b"1"
WAKE_TOKENS_MAX = 16
WAKE_TTL_MS = 60_000

# A finished job's result stays readable (GET /jobs/{id}) for an hour; a new manual refresh
# clears it first, so a finished job never blocks the next one.
JOB_RESULT_TTL_SECONDS = 3_600
RECOMMENDATIONS_PER_USER = 10


def refresh_job_id(user_id: int) -> str:
    """The one job id of a user's manual refresh: queued or running twice is impossible."""
    return f"refresh:{user_id}"


def wake_key(queue_name: str) -> str:
    """``arq:wake:{queue}``: an enqueuer pushes a token after queueing a job; that queue's idle
    worker blocks on the list (BLPOP, at most its poll delay) instead of sleeping."""
    return WAKE_KEY_PREFIX + queue_name


def catch_up_job_id(hour_iso: str) -> str:
    """Job id of the start-up catch-up for one missed hour (several workers enqueue it once)."""
    return f"cron:catch-up:{hour_iso}"
