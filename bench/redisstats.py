"""Redis work per request, from the server's own counters taken around each measured run.

* Round trips: ``total_reads_processed`` (INFO stats) counts the read events the server handled:
  one per command a client sends and waits for (a pipeline is one), while commands run inside a
  Lua script add none. So EVALSHA counts as one however much its script does.
* Commands: ``INFO commandstats`` calls per command. Valkey also counts every ``redis.call()``
  made inside a script there, so this is the server-side work, not the number of round trips
  (the product's cached GET: 2 EVALSHA round trips, 6 commands executed).

Taking a snapshot is itself one INFO command (one read); both are subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

#: Commands the measurement itself sends (never sent by a benchmarked app).
OWN_COMMANDS = frozenset({"info"})


@dataclass(frozen=True)
class RedisSnapshot:
    """The server's counters at one instant."""

    reads: int
    calls: dict[str, int]


@dataclass(frozen=True)
class RedisUsage:
    """Redis work between two snapshots, per request served."""

    requests: int
    round_trips: int
    commands: int
    calls: dict[str, int]

    @property
    def round_trips_per_request(self) -> float:
        """Client round trips per request."""
        return self.round_trips / self.requests if self.requests else 0.0

    @property
    def commands_per_request(self) -> float:
        """Commands executed (scripts' inner calls included) per request."""
        return self.commands / self.requests if self.requests else 0.0


def snapshot_from_info(info: dict[str, Any]) -> RedisSnapshot:
    """A snapshot from a parsed ``INFO stats commandstats`` reply (redis-py's dict)."""
    calls = {
        key.removeprefix("cmdstat_"): int(value["calls"])
        for key, value in info.items()
        if key.startswith("cmdstat_")
    }
    return RedisSnapshot(reads=int(info["total_reads_processed"]), calls=calls)


def take_snapshot(client: Redis) -> RedisSnapshot:
    """Read the counters (one INFO command, one round trip)."""
    # redis-py's stubs type extra sections as lists; INFO takes several section names.
    info = cast(dict[str, Any], cast(Any, client).info("stats", "commandstats"))
    return snapshot_from_info(info)


def usage_between(before: RedisSnapshot, after: RedisSnapshot, requests: int) -> RedisUsage:
    """What happened between two snapshots, minus the second snapshot's own INFO."""
    calls = {
        name: after.calls[name] - before.calls.get(name, 0)
        for name in after.calls
        if name not in OWN_COMMANDS and after.calls[name] - before.calls.get(name, 0) > 0
    }
    return RedisUsage(
        requests=requests,
        round_trips=max(0, after.reads - before.reads - 1),
        commands=sum(calls.values()),
        calls=dict(sorted(calls.items())),
    )
