"""movieops.top and `movieops top`: key counts from a bounded SCAN of a real Redis, processes
that cannot be scraped shown as down, and the command's exit codes and JSON envelope."""

from __future__ import annotations

import json
from pathlib import Path

from redis import Redis

from movieops import metrics, render, top
from movieops.runtime import MetricsTarget
from tests.clihelp import SCHEMA, Cli
from tests.support import ValkeyProcess, free_port
from tests.test_cli_metrics import api_text

TARGET = MetricsTarget("api", "api-2", "http://10.0.0.2:8000/metrics")


def test_keys_group_by_known_prefix_and_everything_else_is_other() -> None:
    """Bounded cardinality: every key counts in one of six groups, all of them present."""
    counts = top.count_prefixes(
        [
            "rate:127.0.0.1:/movies",
            "cache:movies:gen",
            "idem:1.2.3.4:POST:/movies:k",
            "arq:job:refresh:1",
            "movies:queue",
            "somebody-elses-key",
        ]
    )
    assert counts == {
        "rate:": 1,
        "cache:": 1,
        "idem:": 1,
        "arq:": 1,
        "movies:": 1,
        "other": 1,
    }


def test_a_target_that_failed_its_scrape_is_down_with_the_reason() -> None:
    """Down, with why; no rates."""
    view = top.view_of(TARGET, None, "ConnectError", 1.0, 0.0)
    assert (view.state, view.detail, view.api) == ("down", "ConnectError", None)


def test_a_target_seen_once_is_up_without_rates_yet() -> None:
    """Rates need two scrapes: counters since the process started are not a rate."""
    scrape = metrics.parse(api_text(1, 0, 0, 0, 0, (1,) * 7))
    view = top.view_of(TARGET, "ConnectError", scrape, 1.0, 0.0)
    assert view.state == "up"
    assert view.api is None
    assert view.detail is not None
    assert "first scrape" in view.detail


def test_two_scrapes_give_the_api_rates_of_the_interval() -> None:
    """An API target's view carries its ApiRates; a worker's, WorkerRates."""
    before = metrics.parse(api_text(0, 0, 0, 0, 0, (0,) * 7))
    after = metrics.parse(api_text(10, 0, 0, 0, 0, (10,) * 7))
    view = top.view_of(TARGET, before, after, 2.0, 0.0)
    assert view.api is not None
    assert view.api.requests_per_second == 5.0
    assert view.worker is None


def test_redis_key_counts_stop_at_the_scan_bound(valkey: ValkeyProcess) -> None:
    """SCAN stops after max_keys: the counts are a lower bound, marked incomplete, and the
    view says ≥N; DBSIZE still gives the exact total."""
    with Redis.from_url(valkey.url) as client:
        client.flushall()
        client.mset({f"rate:10.0.0.{n}:/movies": 1 for n in range(30)})
        client.set("cache:movies:gen", 1)
    bounded = top.read_redis(valkey.url, max_keys=10)
    assert bounded.state == "up"
    assert bounded.complete is False
    assert bounded.keys_scanned == 10
    assert bounded.total_keys == 31
    assert sum(bounded.keys.values()) == 10
    assert "≥" in render.redis_line(bounded)
    whole = top.read_redis(valkey.url)
    assert whole.complete is True
    assert (whole.keys["rate:"], whole.keys["cache:"]) == (30, 1)
    assert whole.maxmemory_human is not None
    assert whole.used_memory_human is not None
    assert "≥" not in render.redis_line(whole)


def test_an_unreachable_redis_is_down_with_its_url_redacted() -> None:
    """No crash, the reason, and never the password."""
    view = top.read_redis(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert view.state == "down"
    assert view.detail is not None
    assert "hunter2" not in view.detail


def test_scraping_a_port_nobody_listens_on_is_a_reason_not_an_exception() -> None:
    """Each target's outcome is its scrape or why there is none."""
    url = f"http://127.0.0.1:{free_port()}/metrics"
    assert top.scrape([MetricsTarget("api", "api", url)]) == {url: "ConnectError"}


# --- the command ---------------------------------------------------------------------------------


def test_top_once_shows_an_unscrapable_api_as_down_and_still_exits_0(
    tmp_path: Path, valkey: ValkeyProcess
) -> None:
    """Attach mode with Redis answering and nothing at --api-url: one snapshot, the api down
    with why, Redis up; exit 0 and a valid envelope."""
    api = f"http://127.0.0.1:{free_port()}"
    document = Cli(tmp_path, {}).json(
        "--api-url", api, "--redis-url", valkey.url, "top", "--once", "--interval", "0.2"
    )
    data = document["data"]
    assert [(t["instance"], t["state"], t["detail"]) for t in data["targets"]] == [
        ("api", "down", "ConnectError")
    ]
    assert data["targets"][0]["url"] == f"{api}/metrics"
    assert data["redis"]["state"] == "up"
    assert valkey.url.split("@")[0] not in json.dumps(document)  # the password never shows


def test_top_with_nothing_answering_exits_9(tmp_path: Path) -> None:
    """No process and no Redis answer: not running, exit 9, like every command."""
    document = Cli(tmp_path, {}).json(
        "--api-url", f"http://127.0.0.1:{free_port()}",
        "--redis-url", f"redis://127.0.0.1:{free_port()}/0",
        "top", "--once", "--interval", "0.2",
        code=9,
    )  # fmt: skip
    assert document["error"]["code"] == "not_running"
    assert "movieops up" in document["error"]["hint"]


def test_top_count_prints_one_envelope_per_snapshot(tmp_path: Path, valkey: ValkeyProcess) -> None:
    """--count 2 --json: two JSON lines, each a whole envelope (no live view in a pipe)."""
    import jsonschema

    result = Cli(tmp_path, {})(
        "--api-url", f"http://127.0.0.1:{free_port()}", "--redis-url", valkey.url,
        "top", "--count", "2", "--interval", "0.2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        document = json.loads(line)
        jsonschema.validate(document, SCHEMA)
        assert document["command"] == "top"


def test_top_without_a_terminal_prints_one_table_without_escape_codes(
    tmp_path: Path, valkey: ValkeyProcess
) -> None:
    """No TTY: behaves as --once, a plain table and exit 0, nothing of a live display."""
    result = Cli(tmp_path, {})(
        "--api-url", f"http://127.0.0.1:{free_port()}", "--redis-url", valkey.url,
        "top", "--interval", "0.2",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "down" in result.stdout
    assert "redis: memory" in result.stdout
    assert "\x1b[" not in result.stdout


def test_worker_metrics_url_is_checked(tmp_path: Path) -> None:
    """Not a URL, or without attach mode: exit 2 with one line."""
    run = Cli(tmp_path, {})
    assert run("top", "--worker-metrics-url", "localhost:9101").exit_code == 2
    document = run.json("top", "--worker-metrics-url", "http://127.0.0.1:9101/metrics", code=2)
    assert "attach mode" in document["error"]["message"]
