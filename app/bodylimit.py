"""Request bodies cost the server no more than the client: a size cap and a read deadline.

``BodyLimitMiddleware`` is the outermost layer. A declared ``Content-Length`` over the cap is
refused with 413 before anything is read; a streamed (chunked) body is counted as it arrives and
refused once it passes the cap, so nothing downstream ever holds more than the cap. Waiting longer
than the body timeout for the next part of a body answers 408. Both answers close the connection,
so the rest of the body is never read.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.identity import client_of
from app.responses import send_problem

log = logging.getLogger("app.bodylimit")

_CLOSE = (b"connection", b"close")


class BodyLimitError(HTTPException):
    """Raised from ``receive``: the body is too large (413) or too slow (408).

    An ``HTTPException``, so a route reading the body answers it through the app's error handler
    (FastAPI re-raises those from its body parsing); anything else lets it reach the middleware.
    """

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code, detail, headers={"Connection": "close"})


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, None without one; ValueError when it is not one number.

    Several headers, or a comma-separated list, are accepted only when every value agrees
    (RFC 9110, 8.6); digits only, so no sign, blank or ``0x``.
    """
    values = [
        part.strip()
        for name, value in scope["headers"]
        if name.lower() == b"content-length"
        for part in value.split(b",")
    ]
    if not values:
        return None
    if not all(value.isdigit() for value in values) or len(set(map(int, values))) != 1:
        raise ValueError("invalid Content-Length")
    return int(values[0])


def _has_header(scope: Scope, wanted: bytes) -> bool:
    return any(name.lower() == wanted for name, _value in scope["headers"])


class BodyLimitMiddleware:
    """Pure ASGI: cap request bodies at ``max_body_bytes`` and each wait for a part of one at
    ``body_timeout_seconds``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_seconds: float) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be at least 0")
        if body_timeout_seconds <= 0:
            raise ValueError("body_timeout_seconds must be positive")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            length = declared_length(scope)
        except ValueError:
            await _refuse(scope, send, 400, "Content-Length must be one number")
            return
        if length is not None and length > self.max_body_bytes:
            await _refuse(scope, send, 413, self._too_large)
            return
        if not length and not _has_header(scope, b"transfer-encoding"):
            # HTTP/1.1 (RFC 9112, 6.3): without Content-Length or Transfer-Encoding a request
            # has no body, so there is nothing to count or wait for (most GETs).
            await self.app(scope, receive, send)
            return

        received = 0
        body_complete = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:
                # Past the body only a disconnect can come, whenever it comes: no deadline.
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_seconds):
                    message = await receive()
            except TimeoutError:
                raise BodyLimitError(
                    408, f"Request body not received within {self.body_timeout_seconds:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyLimitError(413, self._too_large)
                body_complete = not message.get("more_body", False)
            else:
                body_complete = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyLimitError as exc:
            # Once a response has started it cannot become a 413/408; returning early lets the
            # server close the connection.
            if not response_started:
                await _refuse(scope, send, exc.status_code, exc.detail)

    @property
    def _too_large(self) -> str:
        return f"Request body larger than {self.max_body_bytes} bytes"


async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
    """Answer with problem JSON and close; logged here, as the access log runs inside."""
    log.info(
        "%s %s %d refused: %s client=%s",
        scope["method"],
        scope["path"],
        status,
        detail,
        client_of(scope),
    )
    await send_problem(send, status, detail, [_CLOSE])
