"""One access-log line per request with method, path, status, latency, cache and client."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from tests.conftest import CLIENT_IP


async def test_each_request_logs_one_line_with_all_fields(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A MISS and a HIT show up as two lines naming the outcome and the client."""
    with caplog.at_level(logging.INFO, logger="app.access"):
        await client.get("/movies?limit=5")
        await client.get("/movies?limit=5")
        await client.get("/movies/77")
    lines = [record.getMessage() for record in caplog.records if record.name == "app.access"]
    assert len(lines) == 3
    pattern = r"^GET /movies 200 \d+\.\d\dms cache={} client=" + re.escape(CLIENT_IP) + "$"
    assert re.match(pattern.format("MISS"), lines[0])
    assert re.match(pattern.format("HIT"), lines[1])
    assert re.match(r"^GET /movies/77 404 .* cache=- client=", lines[2])
