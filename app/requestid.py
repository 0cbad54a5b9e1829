"""The request id: one per HTTP request, carried into the jobs it enqueues and their log lines.

A client may send ``X-Request-ID``; a well-formed one (``REQUEST_ID_PATTERN``) is kept, anything
else is replaced by a fresh id. The id lives in a context variable for the request's (or the
job's) task, so log records and error bodies can read it without it being passed around.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""1 to 128 characters: letters, digits and ``. _ : -``, starting with a letter or digit (UUIDs,
ULIDs, W3C trace ids and most load-balancer ids fit; nothing that could split a log line)."""

_current: ContextVar[str | None] = ContextVar("movie_request_id", default=None)


def new_request_id() -> str:
    """A fresh id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


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
