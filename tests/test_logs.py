"""Log lines: text with ``rid=`` or one JSON object per line (MOVIE_LOG_FORMAT=json), each
carrying the id of the request it was written for."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.config import Settings
from app.logs import (
    LOG_FORMAT,
    EscapingFormatter,
    JsonFormatter,
    RequestIdFilter,
    configure_logging,
)
from app.main import create_app
from app.requestid import bound_request_id
from tests.conftest import CLIENT_IP
from tests.support import captured_logs

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def json_output() -> Iterator[io.StringIO]:
    """The JSON lines the process would write."""
    yield from captured_logs(JsonFormatter())


@pytest.fixture
def text_output() -> Iterator[io.StringIO]:
    """The text lines the process would write."""
    yield from captured_logs(EscapingFormatter(LOG_FORMAT))


async def _get_logged(app: FastAPI, path: str, request_id: str) -> httpx.Response:
    @app.get("/log-something")
    async def log_something() -> dict[str, str]:
        logging.getLogger("app.something").warning("inside\nthe request \u2028\x85")
        return {}

    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path, headers={"X-Request-ID": request_id})


async def test_json_lines_parse_and_carry_the_request_id_and_access_fields(
    app: FastAPI, json_output: io.StringIO
) -> None:
    """Every line is one JSON object; the route's own line and the access line name the
    request's id; the access line has its fields as keys; control characters stay escaped."""
    response = await _get_logged(app, "/log-something", "json-trace-1")
    assert response.status_code == 200
    lines = json_output.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]
    inside = next(e for e in entries if e["logger"] == "app.something")
    access = next(e for e in entries if e["logger"] == "app.access")
    assert inside["message"] == "inside\nthe request \u2028\x85"
    assert inside["request_id"] == "json-trace-1"
    assert inside["level"] == "WARNING"
    assert RFC3339_UTC.fullmatch(inside["time"])
    assert access["request_id"] == "json-trace-1"
    assert {
        key: access[key] for key in ("method", "path", "route", "status", "cache", "client")
    } == {
        "method": "GET",
        "path": "/log-something",
        "route": "/log-something",
        "status": 200,
        "cache": None,
        "client": CLIENT_IP,
    }
    assert isinstance(access["duration_ms"], float)
    text = json_output.getvalue()
    assert not set(text) & {"\u2028", "\x85", "\r"}
    assert len(lines) == len(entries) == text.count("\n")


async def test_a_cached_read_logs_its_route_template_and_cache_outcome_in_json(
    make_settings: Callable[..., Settings], redis: Redis, json_output: io.StringIO
) -> None:
    """GET /movies/07 is logged with the raw path and the route template."""
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/movies/07")
    access = [json.loads(line) for line in json_output.getvalue().splitlines()]
    access = [entry for entry in access if entry["logger"] == "app.access"]
    assert len(access) == 1
    assert (access[0]["path"], access[0]["route"], access[0]["status"]) == (
        "/movies/07",
        "/movies/{movie_id}",
        404,
    )
    assert re.fullmatch(r"[0-9a-f]{32}", access[0]["request_id"])


async def test_text_lines_end_with_the_request_id_once(
    app: FastAPI, text_output: io.StringIO
) -> None:
    """Text keeps today's shape plus `` rid=<id>``; the access line names it once."""
    await _get_logged(app, "/log-something", "text-trace-1")
    lines = text_output.getvalue().splitlines()
    inside = next(line for line in lines if " app.something " in line)
    access = next(line for line in lines if " app.access " in line)
    assert inside.endswith(
        "WARNING app.something inside\\nthe request \\u2028\\x85 rid=text-trace-1"
    )
    assert access.endswith(f"client={CLIENT_IP} rid=text-trace-1")
    assert access.count("rid=") == 1


def test_lines_outside_a_request_have_no_id(
    text_output: io.StringIO, json_output: io.StringIO
) -> None:
    """Start-up and background lines look as before: no rid, no request_id key."""
    logging.getLogger("app").info("started")
    with bound_request_id("job-7"):
        logging.getLogger("app").info("in a job")
    text_first, text_second = text_output.getvalue().splitlines()
    assert text_first.endswith("INFO app started")
    assert text_second.endswith("INFO app in a job rid=job-7")
    json_first, json_second = map(json.loads, json_output.getvalue().splitlines())
    assert "request_id" not in json_first
    assert json_second["request_id"] == "job-7"


def test_a_traceback_in_json_stays_on_one_line() -> None:
    """An exception's traceback is the ``exception`` key, its line breaks escaped by JSON."""
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: boom")


@pytest.mark.parametrize(
    ("log_format", "formatter"), [("json", JsonFormatter), ("text", EscapingFormatter)]
)
def test_configure_logging_picks_the_format(
    log_format: str, formatter: type[logging.Formatter]
) -> None:
    """configure_logging(level, format): one stderr handler with that formatter and the filter."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", log_format)
        (handler,) = root.handlers
        assert type(handler.formatter) is formatter
        assert any(isinstance(f, RequestIdFilter) for f in handler.filters)
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
