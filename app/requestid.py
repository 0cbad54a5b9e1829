"""The request id: one per HTTP request, carried into the jobs it enqueues and their log lines.

A client may send ``X-Request-ID``; a well-formed one (``REQUEST_ID_PATTERN``) is kept, anything
else is replaced by a fresh id. The id lives in a context variable for the request's (or the
job's) task, so log records and error bodies can read it without it being passed around.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("app.error")

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""1 to 128 characters: letters, digits and ``. _ : -``, starting with a letter or digit (UUIDs,
ULIDs, W3C trace ids and most load-balancer ids fit; nothing that could split a log line)."""

_current: ContextVar[str | None] = ContextVar("movie_request_id", default=None)


def new_request_id() -> str:
    """A fresh id: 32 lowercase hex digits (128 random bits; a quarter of uuid4's cost)."""
    return secrets.token_hex(16)


def accept_request_id(offered: str | None) -> str:
    """The client's id when it is well-formed, else a fresh one."""
    if offered is not None and REQUEST_ID_PATTERN.fullmatch(offered):
        return offered
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request (or job) this code runs for, if any."""
    return _current.get()


@contextmanager
def bound_request_id(request_id: str | None) -> Iterator[None]:
    """Run the block with ``request_id`` as the current one (``None``: no request)."""
    token = _current.set(request_id)
    try:
        yield
    finally:
        _current.reset(token)


_HEADER = REQUEST_ID_HEADER.lower().encode()
_INTERNAL_ERROR = "Internal Server Error"


class RequestObserver(Protocol):
    """What watches every request from the outermost layer (``app.metrics.ApiMetrics``)."""

    def request_started(self) -> None:
        """A request arrived."""

    def request_finished(
        self, scope: Scope, status: int, headers: Iterable[tuple[bytes, bytes]], seconds: float
    ) -> None:
        """Its answer (status and headers) was sent, ``seconds`` after it arrived."""


class RequestIdMiddleware:
    """Pure ASGI, the outermost layer: every response carries ``X-Request-ID``.

    The client's id is kept when it sent exactly one well-formed one; otherwise (none, several,
    malformed, too long) a fresh id is used, never a refusal. The id is the current one (see
    :func:`bound_request_id`) while the request runs, so error bodies and log lines read it.

    An exception no inner layer answered becomes a JSON 500 with the id, logged here (with the
    id) instead of by the server, which would log it after the id is gone.

    ``observer`` (the metrics, when on) hears of every request and its answer from here: the
    layer that sees every answer anyway, so counting costs no layer of its own.
    """

    def __init__(self, app: ASGIApp, observer: RequestObserver | None = None) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = [value for name, value in scope["headers"] if name == _HEADER]
        request_id = accept_request_id(offered[0].decode("latin-1") if len(offered) == 1 else None)
        header = (_HEADER, request_id.encode())
        started = False
        status = 500
        answer_headers: Iterable[tuple[bytes, bytes]] = ()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status, answer_headers
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                answer_headers = message.get("headers", ())
                message = {**message, "headers": [*answer_headers, header]}
            await send(message)

        observer = self.observer
        if observer is not None:
            observer.request_started()
        arrived = time.perf_counter()
        with bound_request_id(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                if started:
                    raise  # the answer is on its way: nothing left to say but the server's
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
                body = json.dumps({"detail": _INTERNAL_ERROR, "request_id": request_id}).encode()
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                start = {"type": "http.response.start", "status": 500, "headers": headers}
                await send_with_id(start)
                await send({"type": "http.response.body", "body": body})
            finally:
                if observer is not None:
                    observer.request_finished(
                        scope, status, answer_headers, time.perf_counter() - arrived
                    )
