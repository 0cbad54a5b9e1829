"""Logging set-up shared by the API and the worker processes."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """One plain-text format for every logger, on stderr."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
