"""Logging set-up shared by the API and the worker processes.

Every log line is one line of printable text: control characters (C0, DEL, C1 and the Unicode
line/paragraph separators) in a message are written as escapes (``\\n``, ``\\x1b``), so a request
path or header can neither forge a log line nor send escapes to an operator's terminal.

Each line written while a request (or a job) runs carries its id (``app.requestid``): as
`` rid=<id>`` at the end of a text line, as ``request_id`` in a JSON one (``MOVIE_LOG_FORMAT``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from app.requestid import current_request_id

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

RID_IN_MESSAGE = "rid_in_message"
"""A record attribute (``extra``): its message already names the request id (the access log)."""
ACCESS_FIELDS = "access"
"""A record attribute (``extra``): the access line's fields, written as JSON keys."""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]


def _escape(code: int) -> str:
    return _NAMED.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


_ESCAPES = {code: _escape(code) for code in _CONTROLS}
# In a traceback the newlines are its structure; every other control character is escaped.
_TRACEBACK_ESCAPES = {code: text for code, text in _ESCAPES.items() if code != ord("\n")}


def escape_controls(text: str) -> str:
    """``text`` on one line with no terminal escapes: control characters become ``\\xNN``."""
    return text.translate(_ESCAPES)


def request_id_of(record: logging.LogRecord) -> str | None:
    """The request id of a record: the one a filter stored on it, else the current one."""
    stored = getattr(record, "request_id", None)
    return stored if isinstance(stored, str) else current_request_id()


class RequestIdFilter(logging.Filter):
    """Stores the current request id on every record (``request_id``) as it is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; remember the request it was written for."""
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class EscapingFormatter(logging.Formatter):
    """A Formatter whose line holds no control characters, whatever the message carried.

    The message line is escaped whole; a traceback keeps its line breaks (it is readable and
    indented) but loses every other control character.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record (on a copy: other handlers see it unchanged), escaped."""
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = self.formatException(record.exc_info)
        escaped = logging.makeLogRecord(record.__dict__)
        # Another handler may have cached the raw traceback on the record: escape it here.
        escaped.exc_text = exc_text.translate(_TRACEBACK_ESCAPES) if exc_text else exc_text
        if record.stack_info:
            escaped.stack_info = record.stack_info.translate(_TRACEBACK_ESCAPES)
        return super().format(escaped)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's line with its request id (`` rid=…``), escaped whole."""
        line = super().formatMessage(record)
        request_id = request_id_of(record)
        if request_id is not None and not getattr(record, RID_IN_MESSAGE, False):
            line = f"{line} rid={request_id}"
        return escape_controls(line)


# json.dumps escapes C0 and the quote; DEL, C1 and the Unicode line separators it leaves raw
# (ensure_ascii=False keeps titles readable), so they become \u escapes too: still valid JSON.
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in (0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``,
    ``request_id`` when there is one, the access line's fields, and ``exception``/``stack``
    (their line breaks escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        created = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_of(record)
        if request_id is not None:
            entry["request_id"] = request_id
        access = getattr(record, ACCESS_FIELDS, None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str).translate(_JSON_ESCAPES)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Every logger on stderr, one line per record: plain text free of control characters, or
    one JSON object (``log_format="json"``); each line carries its request's id."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else EscapingFormatter(LOG_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
