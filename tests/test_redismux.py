"""The pipelining connection of the hot path: in-order replies, auth, errors, outages, stalls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.redismux import MultiplexedRedis
from tests.support import ValkeyProcess


def _mux(url: str, stall_seconds: float = 2.0) -> MultiplexedRedis:
    mux = MultiplexedRedis.for_pool(ConnectionPool.from_url(url), stall_seconds=stall_seconds)
    assert mux is not None
    return mux


@pytest.fixture
async def mux(valkey: ValkeyProcess, redis: Redis) -> AsyncIterator[MultiplexedRedis]:
    """A pipelining client of the session's (password-protected) server."""
    client = _mux(valkey.url)
    yield client
    await client.aclose()


@pytest.fixture
def stoppable() -> Iterator[ValkeyProcess]:
    """A server of this test's own, which it may pause, stop and restart."""
    server = ValkeyProcess()
    server.start()
    yield server
    server.stop()


async def test_concurrent_calls_each_get_their_own_reply(mux: MultiplexedRedis) -> None:
    """200 calls in flight at once: every caller gets the reply to its own command."""
    values = [f"value-{n}".encode() for n in range(200)]
    assert await asyncio.gather(*(mux.call("ECHO", v) for v in values)) == values


async def test_a_burst_of_calls_goes_out_in_few_writes(mux: MultiplexedRedis, redis: Redis) -> None:
    """Calls made in one turn of the event loop share one write (the server reads them at once)."""
    await mux.call("PING")
    before = int((await redis.info("stats"))["total_reads_processed"])
    await asyncio.gather(*(mux.call("INCR", "burst") for _ in range(100)))
    after = int((await redis.info("stats"))["total_reads_processed"])
    assert await redis.get("burst") == b"100"
    assert after - before <= 5  # one write (the kernel may split it) plus the INFO itself


async def test_an_error_reply_fails_only_its_own_call(mux: MultiplexedRedis) -> None:
    """A wrong-type error is that call's ResponseError; the calls around it are answered."""
    await mux.call("SET", "text", "x")
    results = await asyncio.gather(
        mux.call("ECHO", "a"), mux.call("INCR", "text"), mux.call("ECHO", "b"),
        return_exceptions=True,
    )  # fmt: skip
    assert results[0] == b"a"
    assert isinstance(results[1], ResponseError)
    assert results[2] == b"b"


async def test_evalsha_loads_a_script_the_server_forgot(mux: MultiplexedRedis) -> None:
    """After SCRIPT FLUSH (a restart, a failover) the script is loaded again and runs."""
    client = Redis()
    script = client.register_script("return ARGV[1] .. KEYS[1]")
    await mux.call("SCRIPT", "FLUSH")
    assert await mux.evalsha(script.script, script.sha, ["k"], ["v"]) == b"vk"
    assert await mux.evalsha(script.script, script.sha, ["k"], ["w"]) == b"wk"


async def test_the_url_password_and_database_are_used(valkey: ValkeyProcess, redis: Redis) -> None:
    """AUTH with the URL's password and SELECT of its database before anything else."""
    client = _mux(valkey.url.rsplit("/", 1)[0] + "/3")
    try:
        await client.call("SET", "in-three", "yes")
    finally:
        await client.aclose()
    assert await redis.get("in-three") is None
    async with Redis.from_url(valkey.url.rsplit("/", 1)[0] + "/3") as three:
        assert await three.get("in-three") == b"yes"


async def test_a_wrong_password_is_a_connection_error(valkey: ValkeyProcess) -> None:
    """Refused authentication: a ConnectionError naming it, never a hang."""
    client = _mux(valkey.url.replace("://:", "://:wrong", 1))
    with pytest.raises(RedisConnectionError, match="refused the connection"):
        await client.call("PING")
    await client.aclose()


async def test_a_server_that_goes_away_fails_the_waiting_calls_and_is_reconnected(
    stoppable: ValkeyProcess,
) -> None:
    """Stopped: calls fail with ConnectionError at once. Back: the next call reconnects."""
    client = _mux(stoppable.url)
    try:
        assert await client.call("PING") == b"PONG"
        stoppable.stop()
        with pytest.raises(RedisConnectionError):
            await client.call("PING")
        stoppable.start()
        assert await client.call("PING") == b"PONG"
    finally:
        await client.aclose()


async def test_a_reply_that_comes_too_late_is_dropped_and_the_stream_stays_in_step(
    stoppable: ValkeyProcess,
) -> None:
    """A caller times out while Redis is paused; once it resumes, later calls get their own
    replies, not the abandoned one's."""
    client = _mux(stoppable.url)
    process = stoppable.process
    assert process is not None
    try:
        await client.call("PING")
        process.send_signal(19)  # SIGSTOP
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.call("ECHO", "abandoned")
        finally:
            process.send_signal(18)  # SIGCONT
        assert await client.call("ECHO", "mine") == b"mine"
    finally:
        await client.aclose()


async def test_a_connection_silent_past_the_stall_limit_is_dropped(
    stoppable: ValkeyProcess,
) -> None:
    """Calls keep timing out on a connection that answers nothing: it is closed (a peer that
    vanished without a reset), and the next call opens a new one."""
    client = _mux(stoppable.url, stall_seconds=0.2)
    process = stoppable.process
    assert process is not None
    try:
        await client.call("PING")
        first_writer = client._writer
        process.send_signal(19)  # SIGSTOP
        try:
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await client.call("PING")
        finally:
            process.send_signal(18)  # SIGCONT
        assert client._writer is None
        assert await client.call("PING") == b"PONG"
        assert client._writer is not first_writer
    finally:
        await client.aclose()


def test_tls_and_credential_providers_stay_on_redis_py() -> None:
    """Only plain TCP or Unix-socket URLs get a pipelining connection."""
    assert (
        MultiplexedRedis.for_pool(ConnectionPool.from_url("rediss://h:1/0"), stall_seconds=1)
        is None
    )
    assert MultiplexedRedis.for_pool(ConnectionPool.from_url("redis://h:1/0"), stall_seconds=1)
    assert MultiplexedRedis.for_pool(ConnectionPool.from_url("unix:///tmp/r.sock"), stall_seconds=1)
