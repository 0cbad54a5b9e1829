"""One log line per request: method, path, status, latency, cache outcome, client, request id.

Request-controlled fields (method, path, cache header) are escaped here, so the line stays one
line even under a handler that is not ours (the log formatter escapes again, harmlessly: an
escaped field holds no control characters left to escape).
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.bodylimit import BodyLimitError
from app.constants import CACHE_STATUS_HEADER
from app.identity import client_of
from app.logs import ACCESS_FIELDS, RID_IN_MESSAGE, escape_controls
from app.ratelimit import ROUTE_SCOPE_KEY, RouteTemplates
from app.requestid import current_request_id

log = logging.getLogger("app.access")

_CACHE_HEADER = CACHE_STATUS_HEADER.lower().encode()


class AccessLogMiddleware:
    """Pure ASGI access log; runs inside IdentityMiddleware, so ``client`` is the real one.

    ``templates`` names the route for JSON lines (the rate limiter has usually matched it
    already; the match is kept in the scope).
    """

    def __init__(self, app: ASGIApp, templates: RouteTemplates | None = None) -> None:
        self.app = app
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        cache = "-"

        async def send_and_watch(message: Message) -> None:
            nonlocal status, cache
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == _CACHE_HEADER:
                        cache = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except BodyLimitError as exc:
            status = exc.status_code  # answered by BodyLimitMiddleware, outside this layer
            raise
        finally:
            if log.isEnabledFor(logging.INFO):
                self._log(scope, status, (time.perf_counter() - started) * 1000, cache)

    def _log(self, scope: Scope, status: int, duration_ms: float, cache: str) -> None:
        client = client_of(scope)
        request_id = current_request_id()
        route = (
            self.templates.template_for(scope)
            if self.templates is not None
            else scope.get(ROUTE_SCOPE_KEY)
        )
        fields = {
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(duration_ms, 2),
            "cache": None if cache == "-" else cache,
            "client": client,
        }
        log.info(
            "%s %s %d %.2fms cache=%s client=%s rid=%s",
            escape_controls(scope["method"]),
            escape_controls(scope["path"]),
            status,
            duration_ms,
            escape_controls(cache),
            client,
            request_id or "-",
            extra={RID_IN_MESSAGE: True, ACCESS_FIELDS: fields},
        )
