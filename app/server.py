"""Run the API under uvicorn with the project's settings (``python -m app``)."""

from __future__ import annotations

import uvicorn

from app.config import Settings, load_settings_or_exit
from app.logs import configure_logging
from app.main import create_app


def serve(settings: Settings) -> None:
    """Serve until interrupted. Proxy headers are handled inside the app from its settings,
    so uvicorn's own (which trusts 127.0.0.1 by default) is switched off."""
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        proxy_headers=False,
        access_log=False,
        log_config=None,
        log_level=settings.log_level.lower(),
    )


def main() -> int:
    """Entry point: read settings once, refuse to start on invalid ones."""
    serve(load_settings_or_exit())
    return 0
