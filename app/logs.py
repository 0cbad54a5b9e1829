"""Logging set-up shared by the API and the worker processes.

Every log line is one line of printable text: control characters (C0, DEL, C1 and the Unicode
line/paragraph separators) in a message are written as escapes (``\\n``, ``\\x1b``), so a request
path or header can neither forge a log line nor send escapes to an operator's terminal.
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

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
        """The record's line, escaped whole."""
        return escape_controls(super().formatMessage(record))


def configure_logging(level: str) -> None:
    """One plain-text, control-character-free format for every logger, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
