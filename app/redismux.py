"""One shared Redis connection for the request path's hottest call, with automatic pipelining.

Every request runs one script call (the rate limiter's counter and the cache lookup). Through
redis-py that call costs a pooled connection, its health check, a command packer in Python and a
write and a read per request: about 50-70 microseconds of CPU, more than the rest of a cached
GET. Here every call made during one turn of the event loop is packed by hiredis, written to one
connection in one write, and the replies (which Redis sends in order) resolve the callers' futures
in order: about 10 microseconds per call, and one write and one read for a whole burst.

Failure model, as the guard (``app.redisguard``) expects:

- connection refused, reset or closed: every waiting call fails with ``ConnectionError`` and the
  next call reconnects (AUTH and SELECT first, as redis-py does);
- Redis slow: the caller's timeout cancels its own wait; the reply, when it comes, is dropped
  and the stream stays in step. A connection that has answered nothing for ``stall_seconds``
  while calls wait is closed, so a peer that vanished without a reset is not waited on forever;
- an error reply raises ``ResponseError`` for that call only.

Nothing read is ever evaluated or unpickled: replies are RESP values (bytes, ints, lists).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import hiredis
from redis.asyncio.connection import Connection, ConnectionPool, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

log = logging.getLogger("app.redis")

READ_CHUNK = 65_536


class MultiplexedRedis:
    """A pipelining client over one connection, opened on first use; ``call`` sends a command."""

    def __init__(
        self,
        connection_kwargs: Mapping[str, Any],
        *,
        connect_timeout: float = 1.0,
        stall_seconds: float = 2.0,
    ) -> None:
        self._kwargs = dict(connection_kwargs)
        self._connect_timeout = connect_timeout
        self._stall_seconds = stall_seconds
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._connecting: asyncio.Lock | None = None
        self._last_reply = time.monotonic()

    @classmethod
    def for_pool(cls, pool: ConnectionPool, *, stall_seconds: float) -> MultiplexedRedis | None:
        """One for the server a redis-py pool talks to: TCP or a Unix socket, with or without a
        password. None for anything else (TLS, credential providers), which stays on redis-py."""
        kwargs = pool.connection_kwargs
        if pool.connection_class not in (Connection, UnixDomainSocketConnection):
            return None
        if kwargs.get("credential_provider") is not None:
            return None
        wanted = {
            k: kwargs[k]
            for k in ("host", "port", "path", "db", "password", "username")
            if kwargs.get(k) is not None
        }
        return cls(
            wanted,
            connect_timeout=float(kwargs.get("socket_connect_timeout") or 1.0),
            stall_seconds=stall_seconds,
        )

    async def call(self, *args: str | bytes | int) -> Any:
        """Send one command; its reply (ResponseError for an error reply)."""
        if self._writer is None:
            await self._connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._waiting:
            self._last_reply = time.monotonic()  # the stall clock starts with the first wait
        self._outgoing.append(hiredis.pack_command(args))  # type: ignore[arg-type]  # its stub says a 1-tuple
        self._waiting.append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            return await future
        except asyncio.CancelledError:
            self._close_if_stalled()
            raise

    async def evalsha(
        self, script: bytes | str | memoryview, sha: str, keys: list[str], args: list[Any]
    ) -> Any:
        """EVALSHA, loading the script first when the server does not know it (NOSCRIPT)."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return await self.call(*command)
        except NoScriptError:
            await self.call(
                "SCRIPT", "LOAD", bytes(script) if isinstance(script, memoryview) else script
            )
            return await self.call(*command)

    async def aclose(self) -> None:
        """Close the connection; waiting calls fail."""
        writer = self._writer
        self._drop(RedisConnectionError("client closed"))
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
            self._reader_task = None
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # --- the connection --------------------------------------------------------------------

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None:
                return self._writer
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(self._connect_timeout):
                    reader, writer = await self._open()
                    parser = hiredis.Reader(replyError=ResponseError)
                    await self._hello(reader, writer, parser)
            except BaseException as exc:
                if writer is not None:
                    writer.close()  # half-open (refused, timed out, cancelled): never shared
                if isinstance(exc, TimeoutError):
                    raise RedisConnectionError("timed out connecting to redis") from None
                if isinstance(exc, OSError):
                    raise RedisConnectionError(f"cannot connect to redis: {exc}") from exc
                raise
            self._writer = writer
            self._last_reply = time.monotonic()
            self._reader_task = asyncio.get_running_loop().create_task(
                self._read_replies(reader, parser, writer)
            )
            return writer

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if "path" in self._kwargs:
            return await asyncio.open_unix_connection(self._kwargs["path"])
        return await asyncio.open_connection(self._kwargs["host"], self._kwargs.get("port", 6379))

    async def _hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: hiredis.Reader
    ) -> None:
        """AUTH and SELECT, answered before the connection is shared."""
        commands: list[tuple[Any, ...]] = []
        password, username = self._kwargs.get("password"), self._kwargs.get("username")
        if password is not None:
            commands.append(("AUTH", username, password) if username else ("AUTH", password))
        if self._kwargs.get("db"):
            commands.append(("SELECT", int(self._kwargs["db"])))
        if not commands:
            return
        writer.write(b"".join(hiredis.pack_command(command) for command in commands))
        for _ in commands:
            reply = parser.gets()
            while reply is False:
                data = await reader.read(READ_CHUNK)
                if not data:
                    raise OSError("connection closed during authentication")
                parser.feed(data)
                reply = parser.gets()
            if isinstance(reply, ResponseError):
                raise RedisConnectionError(f"redis refused the connection: {reply}")

    def _flush(self) -> None:
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, []
        writer = self._writer
        if writer is None or not outgoing:
            return  # the connection died meanwhile: its waiters were failed already
        writer.write(b"".join(outgoing))

    async def _read_replies(
        self, reader: asyncio.StreamReader, parser: hiredis.Reader, writer: asyncio.StreamWriter
    ) -> None:
        error: Exception = RedisConnectionError("redis closed the connection")
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                parser.feed(data)
                self._last_reply = time.monotonic()
                while (reply := parser.gets()) is not False:
                    if not self._waiting:
                        raise RedisConnectionError("redis sent a reply nobody asked for")
                    future = self._waiting.popleft()
                    if future.done():
                        continue  # its caller gave up (timeout): the reply is dropped
                    if isinstance(reply, ResponseError):
                        future.set_exception(_error(reply))
                    else:
                        future.set_result(reply)
        except (OSError, hiredis.ProtocolError, RedisConnectionError) as exc:
            error = RedisConnectionError(f"redis connection lost: {exc}")
        finally:
            if self._writer is writer:
                self._drop(error)

    def _close_if_stalled(self) -> None:
        """A caller gave up; when the connection has been silent for too long, drop it."""
        silent = time.monotonic() - self._last_reply
        if self._writer is not None and self._waiting and silent >= self._stall_seconds:
            log.warning("redis answered nothing for %.1f s; reconnecting", silent)
            self._drop(RedisConnectionError(f"no reply from redis for {silent:.1f} s"))

    def _drop(self, error: Exception) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        waiting, self._waiting = self._waiting, collections.deque()
        self._outgoing = []
        for future in waiting:
            if not future.done():
                future.set_exception(error)


def _error(reply: ResponseError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return reply
