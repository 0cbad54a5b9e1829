"""Requests that would cost the server more than the client: body size, slow bodies and headers,
too many connections, and validation errors that echo their input. Against a real uvicorn."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Message

from app.bodylimit import BodyLimitMiddleware, declared_length
from app.config import Settings
from app.httpbounds import MAX_HEADER_BYTES
from app.main import create_app
from app.responses import ECHO_LIMIT, MAX_REPORTED_ERRORS, bounded_errors, errors
from app.server import uvicorn_limits
from tests.support import ThreadedServer

MOVIE = {"title": "Heat", "year": 1995, "genres": ["Crime"]}


@contextlib.contextmanager
def api(settings: Settings) -> Iterator[ThreadedServer]:
    """The API under uvicorn with the limits ``python -m app`` uses."""
    with ThreadedServer(create_app(settings), **uvicorn_limits(settings)).running() as server:
        yield server


@contextlib.contextmanager
def connection(server: ThreadedServer, timeout: float = 5.0) -> Iterator[socket.socket]:
    """A raw TCP connection to ``server``."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        yield sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and Content-Length body of one response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, value in (line.split(":", 1) for line in lines)
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65_536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def is_closed(sock: socket.socket) -> bool:
    """The peer closed the connection (EOF or reset) within the socket's timeout."""
    try:
        while sock.recv(65_536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def post_head(path: str, extra: str) -> bytes:
    """A POST request line and headers (``extra``: more header lines, CRLF-terminated)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


# --- the body cap ---------------------------------------------------------------------------


def test_declared_body_over_the_cap_is_413_before_any_of_it_is_sent(
    make_settings: Callable[..., Settings],
) -> None:
    """Content-Length over the cap: 413 problem JSON at once, no body needed; connection closed."""
    with api(make_settings(max_body_bytes=1024)) as server, connection(server) as sock:
        sock.sendall(post_head("/movies", "Content-Length: 10000000\r\n"))
        status, headers, body = read_response(sock)
        assert status == 413
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {
            "detail": "Request body larger than 1024 bytes",
            "request_id": headers["x-request-id"],
        }
        assert headers["connection"] == "close"
        assert is_closed(sock)


def test_chunked_body_is_refused_once_it_passes_the_cap(
    make_settings: Callable[..., Settings],
) -> None:
    """A streamed body is counted as it arrives: 413 without waiting for its end."""
    with api(make_settings(max_body_bytes=1024)) as server, connection(server) as sock:
        sock.sendall(post_head("/movies", "Transfer-Encoding: chunked\r\n"))
        sock.sendall(chunk(b" " * 600) + chunk(b" " * 600))  # no last chunk: the body goes on
        status, headers, body = read_response(sock)
        assert status == 413
        assert json.loads(body) == {
            "detail": "Request body larger than 1024 bytes",
            "request_id": headers["x-request-id"],
        }
        assert is_closed(sock)


def test_chunked_body_under_the_cap_is_served(make_settings: Callable[..., Settings]) -> None:
    """The count is of bytes received, so a chunked body within the cap goes through."""
    document = json.dumps(MOVIE).encode()
    with api(make_settings(max_body_bytes=1024)) as server, connection(server) as sock:
        sock.sendall(post_head("/movies", "Transfer-Encoding: chunked\r\n"))
        sock.sendall(chunk(document[:10]) + chunk(document[10:]) + b"0\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 201, body


def test_megabyte_title_is_413_and_a_long_title_under_the_cap_is_not_echoed(
    make_settings: Callable[..., Settings],
) -> None:
    """1 MB title: 413 (default 64 KiB cap). 5 000 characters: 422 citing only the first 100."""
    with api(make_settings()) as server, httpx.Client(base_url=server.url) as client:
        huge = client.post("/movies", json={**MOVIE, "title": "x" * 1_000_000})
        assert huge.status_code == 413
        assert huge.json() == {
            "detail": "Request body larger than 65536 bytes",
            "request_id": huge.headers["x-request-id"],
        }

        long = client.post("/movies", json={**MOVIE, "title": "y" * 5_000})
        assert long.status_code == 422
        assert len(long.content) < 1_000
        [error] = long.json()["detail"]
        assert error["loc"] == ["body", "title"]
        assert error["type"] == "string_too_long"
        assert error["input"] == "y" * ECHO_LIMIT + "…"


async def test_invalid_content_length_is_400() -> None:
    """Not one number (letters, a sign, differing values): 400 problem JSON; the app never runs."""
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    async def receive() -> Message:
        raise AssertionError("nothing may be read")

    for values in ([b"abc"], [b"-1"], [b"12, 13"], [b"12", b"13"], [b""]):
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)  # noqa: B023 - called before the loop moves on

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/movies",
            "headers": [(b"content-length", v) for v in values],
        }
        await BodyLimitMiddleware(app, 1024, 1.0)(scope, receive, send)
        assert sent[0]["status"] == 400, values
        assert json.loads(sent[1]["body"])["detail"] == "Content-Length must be one number"
    assert not called


def test_declared_length_accepts_one_number_however_repeated() -> None:
    """Equal repeats (RFC 9110 8.6) count as one; no header is None."""

    def scope(*values: bytes) -> dict[str, Any]:
        return {"headers": [(b"content-length", value) for value in values]}

    assert declared_length(scope()) is None
    assert declared_length(scope(b"12")) == 12
    assert declared_length(scope(b"12, 12")) == 12
    assert declared_length(scope(b"12", b"012")) == 12
    with pytest.raises(ValueError, match="Content-Length"):
        declared_length(scope(b"0x10"))


def test_body_limit_rejects_bad_configuration() -> None:
    """Configuration is checked when the middleware is built, not per request."""
    with pytest.raises(ValueError, match="max_body_bytes"):
        BodyLimitMiddleware(lambda *_: None, -1, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="body_timeout_seconds"):
        BodyLimitMiddleware(lambda *_: None, 1024, 0)  # type: ignore[arg-type]


def test_routes_with_bodies_declare_413_and_408() -> None:
    """The OpenAPI responses of a route that declares 400 include the body limits' answers."""
    assert {408, 413} <= set(errors(400, 422))
    assert not {408, 413} & set(errors(404))


def test_validation_errors_are_cut_and_counted() -> None:
    """Long strings are cut, large objects left out, and at most MAX_REPORTED_ERRORS listed."""
    raw = [
        {"type": "missing", "loc": ("body", "year"), "msg": "Field required",
         "input": {"title": "t" * 10_000}},
        {"type": "extra_forbidden", "loc": ("body", "k" * 500), "msg": "Extra inputs",
         "input": 1, "ctx": {"pattern": "p" * 500, "error": ValueError("boom")}},
    ] * MAX_REPORTED_ERRORS  # fmt: skip
    bounded = bounded_errors(raw)
    assert len(bounded) == MAX_REPORTED_ERRORS
    assert bounded[0] == {"type": "missing", "loc": ["body", "year"], "msg": "Field required"}
    assert bounded[1]["loc"][1] == "k" * ECHO_LIMIT + "…"
    assert bounded[1]["input"] == 1
    assert bounded[1]["ctx"]["pattern"] == "p" * ECHO_LIMIT + "…"
    assert len(json.dumps(bounded)) < MAX_REPORTED_ERRORS * 600


# --- slow clients ---------------------------------------------------------------------------


def test_stalled_body_gets_408_within_the_body_timeout(
    make_settings: Callable[..., Settings],
) -> None:
    """Headers, part of the body, then silence: 408 problem JSON after ~0.5 s, then closed."""
    settings = make_settings(body_timeout_seconds=0.5)
    with api(settings) as server, connection(server) as sock:
        sock.sendall(post_head("/movies", "Content-Length: 100\r\n") + b'{"title": ')
        started = time.monotonic()
        status, headers, body = read_response(sock)
        assert 0.4 < time.monotonic() - started < 3
        assert status == 408
        assert json.loads(body) == {
            "detail": "Request body not received within 0.5 s",
            "request_id": headers["x-request-id"],
        }
        assert headers["connection"] == "close"
        assert is_closed(sock)


def test_stalled_body_with_an_idempotency_key_gets_408(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The idempotency layer reads the body itself: it too is cut off by the deadline, and the
    access log records the 408 it became, not a 500."""
    settings = make_settings(body_timeout_seconds=0.5)
    with (
        caplog.at_level(logging.INFO, logger="app.access"),
        api(settings) as server,
        connection(server) as sock,
    ):
        sock.sendall(post_head("/movies", "Content-Length: 100\r\nIdempotency-Key: slow\r\n"))
        status, _, _ = read_response(sock)
        assert status == 408
    lines = [r.getMessage() for r in caplog.records if r.name == "app.access"]
    assert len(lines) == 1
    assert lines[0].startswith("POST /movies 408 ")


def test_stalled_headers_close_the_connection(make_settings: Callable[..., Settings]) -> None:
    """Part of a request's headers, then silence: closed after the header timeout, on a new
    connection and on a kept-alive one (whose own idle timeout would be 5 s)."""
    settings = make_settings(header_timeout_seconds=0.5)
    with api(settings) as server:
        with connection(server) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
            started = time.monotonic()
            assert is_closed(sock)
            assert time.monotonic() - started < 3
        with connection(server) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            assert read_response(sock)[0] == 200
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            started = time.monotonic()
            assert is_closed(sock)
            assert time.monotonic() - started < 3


def test_headers_over_64_kib_get_431_and_the_connection_closes(
    make_settings: Callable[..., Settings],
) -> None:
    """httptools buffers a header of any size; past MAX_HEADER_BYTES the request is refused."""
    with api(make_settings()) as server, connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * MAX_HEADER_BYTES)
        status, _, body = read_response(sock)
        assert status == 431
        assert json.loads(body) == {
            "detail": f"Request headers larger than {MAX_HEADER_BYTES} bytes"
        }
        assert is_closed(sock)


def test_header_deadline_does_not_cut_a_request_whose_headers_arrived(
    make_settings: Callable[..., Settings],
) -> None:
    """A body sent in parts, each within the body timeout, may take longer than the header
    timeout: the header deadline ended with the headers."""
    settings = make_settings(header_timeout_seconds=0.5, body_timeout_seconds=2)
    document = json.dumps(MOVIE).encode()
    with api(settings) as server, connection(server) as sock:
        sock.sendall(post_head("/movies", f"Content-Length: {len(document)}\r\n"))
        for start in range(0, len(document), len(document) // 3 + 1):
            time.sleep(0.3)
            sock.sendall(document[start : start + len(document) // 3 + 1])
        assert read_response(sock)[0] == 201


def test_connections_beyond_max_connections_get_503(
    make_settings: Callable[..., Settings],
) -> None:
    """max_connections=2: a request on the second connection is served, on the third 503."""
    request = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    with (
        api(make_settings(max_connections=2)) as server,
        connection(server),  # idle, but it holds its place
        connection(server) as second,
    ):
        second.sendall(request)
        assert read_response(second)[0] == 200
        with connection(server) as third:
            third.sendall(request)
            assert read_response(third)[0] == 503
