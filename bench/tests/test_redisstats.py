"""Redis counters to per-request work."""

from __future__ import annotations

from bench.redisstats import RedisSnapshot, snapshot_from_info, usage_between


def test_snapshot_from_info_keeps_reads_and_calls() -> None:
    info = {
        "total_reads_processed": 120,
        "cmdstat_evalsha": {"calls": 10, "usec": 5},
        "cmdstat_info": {"calls": 3, "usec": 1},
        "keyspace_hits": 4,
    }
    snapshot = snapshot_from_info(info)
    assert snapshot == RedisSnapshot(reads=120, calls={"evalsha": 10, "info": 3})


def test_usage_between_subtracts_the_measurement_itself() -> None:
    before = RedisSnapshot(reads=100, calls={"evalsha": 10, "incr": 10, "info": 1})
    # 50 requests, 2 EVALSHA each (4 inner calls each), and the second INFO.
    after = RedisSnapshot(
        reads=100 + 100 + 1, calls={"evalsha": 110, "incr": 60, "get": 100, "info": 2}
    )
    usage = usage_between(before, after, requests=50)
    assert usage.round_trips == 100
    assert usage.round_trips_per_request == 2.0
    assert usage.calls == {"evalsha": 100, "get": 100, "incr": 50}
    assert usage.commands_per_request == 5.0


def test_usage_without_requests_is_zero_not_an_error() -> None:
    same = RedisSnapshot(reads=5, calls={})
    usage = usage_between(same, same, requests=0)
    assert usage.round_trips == 0
    assert usage.round_trips_per_request == 0.0
