"""uvicorn's HTTP/1.1 protocol with a deadline and a size cap on a request's head.

Shared by the API (``app.server``) and the worker's metrics endpoint (``app.workermetrics``);
it imports nothing of the app, so the worker loads no API code for it.
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar, cast

from uvicorn.protocols.http.auto import AutoHTTPProtocol

MAX_HEADER_BYTES = 65_536
"""Largest request line plus headers; httptools itself buffers a header of any size."""


def _header_too_large_response() -> bytes:
    body = json.dumps({"detail": f"Request headers larger than {MAX_HEADER_BYTES} bytes"}).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class HeaderDeadline(asyncio.Protocol):
    """Mixin for uvicorn's HTTP/1.1 protocols: a connection whose request line and headers are
    not complete within ``header_timeout_seconds`` is closed, and one whose headers pass
    ``MAX_HEADER_BYTES`` gets 431 and is closed.

    uvicorn times out only idle keep-alive connections, so a client that sends part of a request
    and stalls holds its connection (and a ``limit_concurrency`` slot) forever. The deadline is
    armed when the connection opens and when the next request on a kept-alive connection begins,
    and met once uvicorn starts a new request cycle (its ``cycle`` attribute, replaced when a
    request's headers are complete, in both the h11 and the httptools protocol).
    """

    header_timeout_seconds: ClassVar[float] = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _header_cycle: object = None
    _header_bytes = 0
    _header_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._header_transport = transport
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        """Start the clock when a new request begins; stop it once its headers are complete."""
        cycle = getattr(self, "cycle", None)
        if self._header_timer is None and (
            cycle is None or getattr(cycle, "response_complete", False)
        ):
            self._arm_header_deadline()
        if self._header_timer is not None:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._header_timer is None:
            return
        if getattr(self, "cycle", None) is not cycle:
            self._disarm_header_deadline()
        elif self._header_bytes > MAX_HEADER_BYTES and self._header_transport is not None:
            self._disarm_header_deadline()
            transport = cast(asyncio.Transport, self._header_transport)
            if transport.get_protocol() is self and not transport.is_closing():
                transport.write(_header_too_large_response())
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """No deadline outlives its connection."""
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_cycle = getattr(self, "cycle", None)
        self._header_bytes = 0
        self._header_timer = asyncio.get_running_loop().call_later(
            self.header_timeout_seconds, self._header_deadline_passed
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        transport = self._header_transport
        # Headers completed unnoticed (a new cycle), or the connection was handed to another
        # protocol (an upgrade): not a stalled request.
        if getattr(self, "cycle", None) is not self._header_cycle or transport is None:
            return
        if transport.get_protocol() is self and not transport.is_closing():
            transport.close()


def header_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's own choice of HTTP/1.1 protocol (httptools, else h11) with a header deadline."""
    name = f"HeaderDeadline{AutoHTTPProtocol.__name__}"
    attributes = {"header_timeout_seconds": seconds}
    return cast(type[asyncio.Protocol], type(name, (HeaderDeadline, AutoHTTPProtocol), attributes))
