"""One access-log line per request with method, path, status, latency, cache, client and request
id; no log line carries a control character."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.logs import LOG_FORMAT, EscapingFormatter, escape_controls
from app.main import create_app
from tests.conftest import CLIENT_IP
from tests.support import captured_logs


async def test_each_request_logs_one_line_with_all_fields(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A MISS and a HIT show up as two lines naming the outcome, the client and the request id
    the response carried."""
    with caplog.at_level(logging.INFO, logger="app.access"):
        miss = await client.get("/movies?limit=5", headers={"X-Request-ID": "first-one"})
        hit = await client.get("/movies?limit=5")
        await client.get("/movies/77")
    lines = [record.getMessage() for record in caplog.records if record.name == "app.access"]
    assert len(lines) == 3
    pattern = r"^GET /movies 200 \d+\.\d\dms cache={} client=" + re.escape(CLIENT_IP) + " rid={}$"
    assert miss.headers["x-request-id"] == "first-one"
    assert re.match(pattern.format("MISS", "first-one"), lines[0])
    assert re.match(pattern.format("HIT", hit.headers["x-request-id"]), lines[1])
    assert re.match(r"^GET /movies/77 404 .* cache=- client=\S+ rid=[0-9a-f]{32}$", lines[2])


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the processes' own log handler (EscapingFormatter on the root logger) writes."""
    yield from captured_logs(EscapingFormatter(LOG_FORMAT))


async def test_a_newline_or_escape_in_a_request_never_forges_a_log_line(
    make_settings: Callable[..., Settings],
    redis: Redis,
    log_output: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A %0a in the path and ESC in a forwarded header: one line per request, no raw ESC."""
    app = create_app(make_settings(trusted_proxies=[CLIENT_IP]))
    with caplog.at_level(logging.INFO, logger="app.access"):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await client.get(
                    "/movies/%0a2026-01-01 FAKE LINE",
                    headers={"X-Forwarded-For": "\x1b[31m203.0.113.99\x1b[0m"},
                )
    lines = [line for line in log_output.getvalue().splitlines() if " app.access " in line]
    assert len(lines) == 1
    assert "\\n2026-01-01 FAKE LINE" in lines[0]
    assert "\x1b" not in log_output.getvalue()
    assert re.search(f"client={re.escape(CLIENT_IP)} rid=[0-9a-f]{{32}}$", lines[0])
    # The access log escapes its own fields too, whatever handler formats them.
    messages = [r.getMessage() for r in caplog.records if r.name == "app.access"]
    assert len(messages) == 1
    assert "\n" not in messages[0]


def test_every_logger_writes_one_line_without_control_characters(
    log_output: io.StringIO,
) -> None:
    """C0, DEL and C1 characters in any logger's message are escaped; tracebacks keep their
    line breaks but lose escapes."""
    logging.getLogger("uvicorn.error").warning("bad %s", "a\nb\rc\x1b[2J\x7f\x85\x9b\t")
    try:
        raise ValueError("boom\x1b[31m")
    except ValueError:
        logging.getLogger("app").exception("failed on %s", "/x\ny")
    text = log_output.getvalue()
    first, second, *traceback = text.splitlines()
    assert first.endswith("bad a\\nb\\rc\\x1b[2J\\x7f\\x85\\x9b\\t")
    assert second.endswith("failed on /x\\ny")
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: boom\\x1b[31m"
    assert not set(text) & {chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]} - {"\n"}


def test_escape_controls_leaves_printable_text_alone() -> None:
    """Printable ASCII and non-control Unicode pass through unchanged."""
    text = "GET /films/Amélie 200 — ok {movie_id} \\ %0a"
    assert escape_controls(text) == text
