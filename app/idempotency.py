"""Idempotency-Key for POST: replay a completed response, refuse concurrent or mismatched reuse.

A first request claims the key with ``SET NX`` and a lease (state ``in_progress``, its request
fingerprint and an owner token). On completion the owner replaces the claim with the response,
kept for a day. A 5xx or a crash releases the claim so the retry can run; the lease bounds a crash
that could not even do that. Without Redis the promise cannot be kept, so such requests get 503.
A response larger than the storage cap is sent to the client as it comes but not stored: the key
is released (a retry runs again) and a warning logged, so Redis never holds a large record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.constants import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PATTERN,
    RETRY_AFTER_HEADER,
    RETRY_AFTER_IN_PROGRESS_SECONDS,
    RETRY_AFTER_UNAVAILABLE_SECONDS,
    idempotency_key,
)
from app.identity import client_of
from app.redisguard import RedisGuard, RedisUnavailable
from app.responses import send_problem

log = logging.getLogger("app.idempotency")

HEADER = IDEMPOTENCY_HEADER.lower().encode()
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
_VALID_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# Headers worth replaying; the rate-limit ones are recomputed for the replay itself.
_STORED_HEADERS = frozenset({b"content-type", b"location", b"etag"})
# 4xx answers that depend on timing, not on the request, so they must not be replayed.
_TRANSIENT_4XX = frozenset({408, 409, 425, 429})

# KEYS[1] record; ARGV[1] claim, ARGV[2] lease ms -> nil when claimed, else the existing record
CLAIM_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""

# KEYS[1] record; ARGV[1] owner, ARGV[2] new value ('' deletes), ARGV[3] ttl ms -> 1 done
FINISH_SCRIPT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if cjson.decode(raw)['owner'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""


class Verdict(StrEnum):
    """What to do with a request whose key is already recorded."""

    REPLAY = "replay"
    IN_PROGRESS = "in_progress"
    MISMATCH = "mismatch"


# The metrics' outcome of each verdict (movie_idempotency_requests_total).
_OUTCOME_OF = {
    Verdict.REPLAY: "replayed",
    Verdict.IN_PROGRESS: "conflict",
    Verdict.MISMATCH: "mismatch",
}


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Hash of method, path and the canonical body (JSON re-serialised with sorted keys)."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def decode_record(raw: bytes) -> dict[str, Any] | None:
    """A stored record as data, or None when it is not one of ours (JSON only, never pickle)."""
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        return None
    if record.get("state") == "completed":
        headers = record.get("headers")
        try:
            base64.b64decode(record["body"], validate=True)
        except (KeyError, TypeError, ValueError):
            return None
        if not isinstance(record.get("status"), int) or not isinstance(headers, list):
            return None
        if not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
            for pair in headers
        ):
            return None
    return record


def is_own_claim(raw: bytes, owner: str) -> bool:
    """Whether a found record is the claim this very request wrote (a retried SET NX)."""
    record = decode_record(raw)
    return record is not None and record.get("owner") == owner


def judge(record: dict[str, Any], request_fingerprint: str) -> Verdict:
    """Decide on a request that found its key taken."""
    if record.get("fingerprint") != request_fingerprint:
        return Verdict.MISMATCH
    if record.get("state") == "completed":
        return Verdict.REPLAY
    return Verdict.IN_PROGRESS


def should_store(status: int) -> bool:
    """Keep 2xx and deterministic 4xx; release on 5xx and timing-dependent 4xx."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in _TRANSIENT_4XX)


@dataclass
class CapturedResponse:
    """The downstream response as it went out (``passed_through``: too large to keep, so it
    went on to the client instead of being recorded)."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] | None = None
    chunks: list[bytes] = field(default_factory=list)
    passed_through: bool = False

    @property
    def body(self) -> bytes:
        """The recorded body."""
        return b"".join(self.chunks)


class IdempotencyMiddleware:
    """Pure ASGI middleware honouring ``Idempotency-Key`` on POST requests."""

    def __init__(
        self,
        app: ASGIApp,
        guard: RedisGuard,
        lease_seconds: int,
        ttl_seconds: int,
        max_response_bytes: int,
        outcomes: Mapping[str, Counter] | None = None,
    ) -> None:
        if max_response_bytes < 0:
            raise ValueError("max_response_bytes must be at least 0")
        self.app = app
        # Pre-bound counters per outcome (app.metrics); None: not counted.
        self.outcomes = outcomes
        self.guard = guard
        self.lease_ms = lease_seconds * 1000
        self.ttl_ms = ttl_seconds * 1000
        self.max_response_bytes = max_response_bytes
        self._claim = guard.client.register_script(CLAIM_SCRIPT)
        self._finish = guard.client.register_script(FINISH_SCRIPT)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw_keys = [value for name, value in scope["headers"] if name == HEADER]
        if not raw_keys:
            await self.app(scope, receive, send)
            return
        key = raw_keys[0].decode("latin-1")
        if len(raw_keys) > 1 or not _VALID_KEY.fullmatch(key):
            await send_problem(
                send,
                400,
                f"{IDEMPOTENCY_HEADER} must be one header of 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
                "visible ASCII characters",
            )
            return
        await self._handle(scope, receive, send, key)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        body = await _read_body(receive)
        if body is None:  # the client left mid-body: nothing to claim, run or answer
            return
        record_key = idempotency_key(client_of(scope), "POST", scope["path"], key)
        request_fingerprint = fingerprint("POST", scope["path"], body)
        owner = uuid.uuid4().hex
        claim = json.dumps(
            {"state": "in_progress", "fingerprint": request_fingerprint, "owner": owner}
        )
        try:
            existing = await self.guard.script(self._claim, [record_key], [claim, self.lease_ms])
        except RedisUnavailable:
            self._count("unavailable")
            await _unavailable(
                send,
                "Idempotency-Key cannot be honoured right now (Redis unavailable); retry later",
            )
            return
        # A claim retried after a timeout may find the record its own first attempt wrote.
        if existing is not None and not is_own_claim(existing, owner):
            await self._answer_existing(send, existing, request_fingerprint)
            return

        captured = CapturedResponse()
        capture = _capture(captured, send, self.max_response_bytes)
        try:
            await self.app(scope, _replay_body(body, receive), capture)
        except BaseException:
            await self._release(record_key, owner)
            raise
        if captured.passed_through:
            # Already sent; too large to keep, so the key must not promise a replay.
            await self._release(record_key, owner)
            log.warning(
                "idempotency record %s not stored: response larger than %d bytes",
                record_key,
                self.max_response_bytes,
            )
            return
        if should_store(captured.status):
            if await self._complete(record_key, owner, request_fingerprint, captured):
                self._count("stored")
        else:
            await self._release(record_key, owner)
        await send(
            {
                "type": "http.response.start",
                "status": captured.status,
                "headers": captured.headers or [],
            }
        )
        await send({"type": "http.response.body", "body": captured.body})

    async def _answer_existing(self, send: Send, raw: bytes, request_fingerprint: str) -> None:
        record = decode_record(raw)
        if record is None:
            log.error("unreadable idempotency record; answering 503")
            self._count("unavailable")
            await _unavailable(send, "Idempotency-Key record is unreadable; retry later")
            return
        verdict = judge(record, request_fingerprint)
        self._count(_OUTCOME_OF[verdict])
        if verdict is Verdict.MISMATCH:
            await send_problem(
                send,
                422,
                "Idempotency-Key was already used with a different request body; use a new key",
            )
        elif verdict is Verdict.IN_PROGRESS:
            await send_problem(
                send,
                409,
                "A request with this Idempotency-Key is in progress",
                [_retry_after(RETRY_AFTER_IN_PROGRESS_SECONDS)],
            )
        else:
            headers = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in record["headers"]
            ]
            body = base64.b64decode(record["body"])
            headers.append((b"content-length", str(len(body)).encode()))
            headers.append(REPLAYED_HEADER)
            await send(
                {"type": "http.response.start", "status": record["status"], "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})

    def _count(self, outcome: str) -> None:
        if self.outcomes is not None:
            self.outcomes[outcome].inc()

    async def _complete(
        self, record_key: str, owner: str, request_fingerprint: str, captured: CapturedResponse
    ) -> bool:
        """Replace the claim with the response; False when Redis could not take it."""
        stored = json.dumps(
            {
                "state": "completed",
                "fingerprint": request_fingerprint,
                "owner": owner,
                "status": captured.status,
                "headers": [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in captured.headers or []
                    if name.lower() in _STORED_HEADERS
                ],
                "body": base64.b64encode(captured.body).decode(),
            }
        )
        try:
            await self.guard.script(self._finish, [record_key], [owner, stored, self.ttl_ms])
        except RedisUnavailable:
            # The side effect happened; the lease expires and a retry would run it again.
            log.error("idempotency record %s not completed: redis unavailable", record_key)
            return False
        return True

    async def _release(self, record_key: str, owner: str) -> None:
        try:
            await self.guard.script(self._finish, [record_key], [owner, "", 0])
        except RedisUnavailable:
            log.error("idempotency record %s not released: redis unavailable", record_key)


async def _unavailable(send: Send, detail: str) -> None:
    """503 with Retry-After: the promise of the key cannot be kept right now."""
    await send_problem(send, 503, detail, [_retry_after(RETRY_AFTER_UNAVAILABLE_SECONDS)])


def _retry_after(seconds: int) -> tuple[bytes, bytes]:
    return RETRY_AFTER_HEADER.lower().encode(), str(seconds).encode()


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first.

    Bounded by the body limits in front (size and per-part deadline), so it neither grows nor
    waits without end; a partial body must not be fingerprinted or run.
    """
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, downstream: Receive) -> Receive:
    """Hand the already-read body to the app once, then pass through (disconnect events)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await downstream()

    return receive


def _capture(captured: CapturedResponse, client: Send, limit: int) -> Send:
    """Record the response while its body fits in ``limit`` bytes; past that, send what was
    recorded and everything after it straight on to ``client`` (memory stays bounded)."""
    size = 0

    async def send(message: Message) -> None:
        nonlocal size
        if captured.passed_through:
            await client(message)
        elif message["type"] == "http.response.start":
            captured.status = message["status"]
            captured.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                captured.chunks.append(chunk)
                return
            captured.passed_through = True
            start = {"type": "http.response.start", "status": captured.status}
            await client({**start, "headers": captured.headers or []})
            await client({"type": "http.response.body", "body": captured.body, "more_body": True})
            captured.chunks.clear()
            await client(message)

    return send
