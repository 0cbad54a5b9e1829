"""Run the API under uvicorn with the project's settings (``python -m app``)."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from app.config import Settings, load_settings_or_exit
from app.db import SchemaNotReady
from app.httpbounds import header_timeout_protocol
from app.logs import configure_logging
from app.main import create_app
from app.migrate import require_schema


def uvicorn_limits(settings: Settings) -> dict[str, Any]:
    """``uvicorn.Config`` arguments for the connection limits in ``settings``."""
    return {
        "http": header_timeout_protocol(settings.header_timeout_seconds),
        # uvicorn answers 503 once its connections reach limit_concurrency, counting the new
        # one: one more than max_connections lets exactly max_connections be served.
        "limit_concurrency": settings.max_connections + 1,
    }


def serve(settings: Settings) -> None:
    """Serve until interrupted. Proxy headers are handled inside the app from its settings,
    so uvicorn's own (which trusts 127.0.0.1 by default) is switched off."""
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        proxy_headers=False,
        access_log=False,
        log_config=None,
        log_level=settings.log_level.lower(),
        **uvicorn_limits(settings),
    )


def main() -> int:
    """Entry point: read settings once, refuse to start on invalid ones or before the database
    is at the schema revision this build needs."""
    settings = load_settings_or_exit()
    try:
        require_schema(settings)
    except SchemaNotReady as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    serve(settings)
    return 0
