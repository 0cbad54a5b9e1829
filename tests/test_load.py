"""movieops.load and `movieops load`: the request mix, rate-limit pacing, statistics and
thresholds (pure), then whole runs against the real API over real HTTP (its Redis, its rate
limiter, its cache) through the CLI."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from app.config import Settings
from app.main import create_app
from movieops import load
from movieops.errors import UsageError
from movieops.load import LIST, ONE, RATINGS, Planned, Profile, RateLimitPacer, Tally
from tests.clihelp import Cli
from tests.support import ThreadedServer, ValkeyProcess, free_port

# --- bounds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "duration", "requests", "concurrency", "message"),
    [
        (0, None, None, 4, "--rate"),
        (1001, None, None, 4, "--rate"),
        (10, 3601, None, 4, "--duration"),
        (10, 0, None, 4, "--duration"),
        (10, None, 0, 4, "--requests"),
        (10, None, 1_000_001, 4, "--requests"),
        (10, None, None, 0, "--concurrency"),
        (10, None, None, 257, "--concurrency"),
        (10, 5, 5, 4, "not both"),
    ],
)
def test_out_of_bounds_arguments_are_usage_errors(
    rate: float, duration: float | None, requests: int | None, concurrency: int, message: str
) -> None:
    """Every input is bounded; a bad one names itself."""
    with pytest.raises(UsageError, match=message):
        load.validate(rate, duration, requests, concurrency)


def test_without_duration_or_requests_a_run_lasts_10_seconds() -> None:
    """The default bound; --requests replaces it."""
    assert load.validate(10, None, None, 4) == (10.0, None)
    assert load.validate(10, None, 50, 4) == (None, 50)


# --- the profile -----------------------------------------------------------------------------


def _answer_list(profile: Profile, planned: Planned, ids: list[int]) -> None:
    profile.learn(planned, 200, {"etag": '"e1"'}, {"items": [{"id": i} for i in ids]})


def test_the_first_requests_are_lists_until_an_answer_names_films() -> None:
    """No film id is guessed: until a page has been read only lists are asked for."""
    profile = Profile(seed=1)
    first = [profile.next() for _ in range(20)]
    assert {p.template for p in first if p} == {LIST}
    assert first[0] is not None
    _answer_list(profile, first[0], [3, 5, 8])
    later = [profile.next() for _ in range(200)]
    assert {p.kind for p in later if p} == {"page", "filter", "movie", "conditional", "rate"}
    movies = {p.path for p in later if p and p.kind == "movie"}
    assert movies <= {"/movies/3", "/movies/5", "/movies/8"}


def test_conditional_gets_send_the_etag_that_was_answered() -> None:
    """If-None-Match carries the ETag of an earlier 200 on the same path."""
    profile = Profile(seed=2)
    page = profile.next()
    assert page is not None
    _answer_list(profile, page, [1])
    conditional = next(p for p in iter(profile.next, None) if p.kind == "conditional")
    assert conditional.path == page.path
    assert conditional.headers == {"If-None-Match": '"e1"'}


def test_ratings_carry_fresh_keys_and_some_repeat_one_with_its_body() -> None:
    """Each new rating has its own Idempotency-Key, a user of the load range and a half-step
    score; a repeat sends an answered key again with the same path and body (a replay)."""
    profile = Profile(seed=3)
    page = profile.next()
    assert page is not None
    _answer_list(profile, page, [1, 2])
    ratings = [p for p in (profile.next() for _ in range(400)) if p and p.kind == "rate"]
    first = ratings[0]
    assert first.body is not None
    assert load.LOAD_USER_FIRST <= first.body["user_id"] < load.LOAD_USER_FIRST + load.LOAD_USERS
    assert first.body["score"] in load.SCORES
    keys = [p.headers["Idempotency-Key"] for p in ratings]
    assert len(set(keys)) == len(keys)  # nothing was answered: no repeats yet
    profile.learn(first, 201, {}, None)
    repeats = [
        p
        for p in (profile.next() for _ in range(400))
        if p and p.headers.get("Idempotency-Key") == first.headers["Idempotency-Key"]
    ]
    assert repeats
    assert all((p.path, p.body) == (first.path, first.body) for p in repeats)


def test_a_route_without_budget_is_never_chosen() -> None:
    """The profile asks only for routes the pacer allows; none allowed: nothing."""
    profile = Profile(seed=4)
    page = profile.next()
    assert page is not None
    _answer_list(profile, page, [1])
    chosen = {p.template for p in (profile.next(lambda t: t != RATINGS) for _ in range(300)) if p}
    assert RATINGS not in chosen
    assert profile.next(lambda t: False) is None


def test_the_same_seed_gives_the_same_requests() -> None:
    """--seed repeats a run's mix."""

    def paths(seed: int) -> list[str]:
        profile = Profile(seed=seed, run_id="r")
        return [p.path for p in (profile.next() for _ in range(30)) if p]

    assert paths(7) == paths(7)


# --- pacing ----------------------------------------------------------------------------------


def _limit_headers(remaining: int, reset: int, limit: int = 3) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(reset),
        "ratelimit-policy": f'"default";q={limit};w=10',
    }


def test_an_unknown_budget_lets_one_request_go_to_learn_it() -> None:
    """Before the API has said anything about a route, one request at a time."""
    pacer = RateLimitPacer()
    assert pacer.allowed(LIST, 0.0)
    pacer.sent(LIST)
    assert not pacer.allowed(LIST, 0.0)
    assert pacer.allowed(ONE, 0.0)  # another route: its own budget


def test_a_spent_budget_holds_the_route_until_its_window_ends() -> None:
    """remaining 2 → two more go, then none until Reset seconds have passed."""
    pacer = RateLimitPacer()
    pacer.sent(LIST)
    pacer.answered(LIST, 200, _limit_headers(remaining=2, reset=10), now=0.0)
    for _ in range(2):
        assert pacer.allowed(LIST, 1.0)
        pacer.sent(LIST)
    assert not pacer.allowed(LIST, 1.0)
    assert pacer.next_opening(1.0) == pytest.approx(9.0)
    for remaining in (1, 0):
        pacer.answered(LIST, 200, _limit_headers(remaining=remaining, reset=9), now=1.0)
    assert not pacer.allowed(LIST, 9.9)
    assert pacer.allowed(LIST, 10.0)  # a new window: learn it again, one request first
    pacer.sent(LIST)
    assert not pacer.allowed(LIST, 10.0)


def test_requests_in_flight_count_against_the_budget() -> None:
    """An answer's Remaining does not know about requests sent after it: they are subtracted."""
    pacer = RateLimitPacer()
    pacer.sent(LIST)
    pacer.sent(LIST)  # (after a first answer said remaining 5, say)
    pacer.answered(LIST, 200, _limit_headers(remaining=1, reset=10), now=0.0)
    assert not pacer.allowed(LIST, 0.5)  # 1 left, 1 still in flight


def test_a_429_holds_the_route_for_retry_after() -> None:
    """Limited anyway (another client of the same address): wait Retry-After seconds."""
    pacer = RateLimitPacer()
    pacer.sent(ONE)
    pacer.answered(ONE, 429, {**_limit_headers(0, 5), "retry-after": "5"}, now=100.0)
    assert not pacer.allowed(ONE, 104.0)
    assert pacer.allowed(ONE, 105.0)


def test_answers_without_rate_limit_headers_are_not_paced() -> None:
    """Exempt, or the limiter failing open: nothing to respect."""
    pacer = RateLimitPacer()
    pacer.sent(LIST)
    pacer.answered(LIST, 200, {}, now=0.0)
    for _ in range(50):
        assert pacer.allowed(LIST, 0.0)
        pacer.sent(LIST)


def test_not_respecting_never_holds_back() -> None:
    """--exempt: the pacer lets everything through."""
    pacer = RateLimitPacer(respect=False)
    pacer.answered(LIST, 429, {"retry-after": "60"}, now=0.0)
    assert pacer.allowed(LIST, 0.0)


def test_the_stated_policy_and_the_rate_it_leaves() -> None:
    """3 per 10 s per route, over the profile's 3 routes: at most 0.9 req/s."""
    pacer = RateLimitPacer()
    assert pacer.policy() is None
    assert pacer.ceiling() is None
    pacer.sent(LIST)
    pacer.answered(LIST, 200, _limit_headers(2, 10), now=0.0)
    assert pacer.policy() == "3 per 10 s per route"
    assert pacer.ceiling() == 0.9


# --- statistics and thresholds ---------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    """p50 of 1..10 is 5, p90 9, p99 and max 10; nothing measured: None."""
    values = [float(v) for v in range(1, 11)]
    assert [load.percentile(values, p) for p in (0.5, 0.9, 0.99, 1.0)] == [5.0, 9.0, 10.0, 10.0]
    assert load.percentile([], 0.5) is None


def _summary(tally: Tally, seconds: float = 2.0) -> load.LoadSummary:
    return load.summarize(
        tally,
        api_url="http://api",
        seconds=seconds,
        target_rate=10,
        exempt=False,
        pacer=RateLimitPacer(),
        paced_seconds=0.0,
    )


def test_the_summary_counts_statuses_errors_cache_and_writes() -> None:
    """Status counts, (5xx + no answer) / requests, 429s, HIT / every X-Cache, throughput."""
    tally = Tally()
    get = Planned("page", "GET", "/movies", LIST)
    post = Planned("rate", "POST", "/movies/1/ratings", RATINGS, body={})
    for _ in range(6):
        tally.answered(get, 200, {"x-cache": "HIT"}, 0.01)
    tally.answered(get, 200, {"x-cache": "MISS"}, 0.02)
    tally.answered(get, 429, {}, 0.001)
    tally.answered(post, 201, {}, 0.05)
    tally.answered(post, 201, {"idempotent-replayed": "true"}, 0.01)
    tally.answered(get, 503, {"x-cache": "BYPASS"}, 0.2)
    tally.failed("ConnectError")
    summary = _summary(tally, seconds=4.0)
    assert summary.requests == 12
    assert summary.statuses == {"200": 7, "201": 2, "429": 1, "503": 1}
    assert summary.transport_errors == {"ConnectError": 1}
    assert summary.error_rate == round(2 / 12, 4)
    assert summary.limited == 1
    assert summary.cache_hit_ratio == 0.75
    assert (summary.ratings_written, summary.replayed) == (1, 1)
    assert summary.throughput_per_second == 3.0
    assert summary.latency_ms.max == 200.0


def test_thresholds_name_what_failed() -> None:
    """Each broken threshold is one sentence; none given or none broken: nothing."""
    tally = Tally()
    for seconds in (0.01, 0.02, 0.5):
        tally.answered(Planned("page", "GET", "/movies", LIST), 200, {}, seconds)
    tally.answered(Planned("page", "GET", "/movies", LIST), 500, {}, 0.01)
    summary = _summary(tally)
    assert load.threshold_failures(summary, None, None) == []
    assert load.threshold_failures(summary, 0.25, 500) == []
    failures = load.threshold_failures(summary, 0.1, 100)
    assert failures == [
        "error rate 25.00% is above --max-error-rate 0.1",
        "p99 latency 500 ms is above --max-p99 100 ms",
    ]


# --- whole runs against the real API ---------------------------------------------------------

TOKEN = secrets.token_hex(24)


@pytest.fixture
def api(make_settings: Callable[..., Settings], valkey: ValkeyProcess) -> Iterator[str]:
    """The real API over HTTP with the demo catalog, a limit of 5 per route per 2 s window and
    an exemption secret, on the session's Redis (emptied first)."""
    with Redis.from_url(valkey.url) as client:
        client.flushall()
    settings = make_settings(
        rate_limit_per_minute=5,
        rate_limit_window_seconds=2,
        seed_demo_data=True,
        rate_limit_exempt_tokens=[TOKEN],
    )
    with ThreadedServer(create_app(settings)).running() as server:
        yield server.url


def _rate_keys(valkey: ValkeyProcess) -> list[bytes]:
    with Redis.from_url(valkey.url) as client:
        return list(client.scan_iter("rate:*"))


def test_a_run_that_respects_the_limit_gets_no_429(
    api: str, tmp_path: Path, valkey: ValkeyProcess
) -> None:
    """30 requests asked at 100/s against 5 per 2 s per route: the run holds routes back
    instead of being limited, says so, and still gets every kind of answer it asks for."""
    result = Cli(tmp_path, {})(
        "--api-url", api, "--redis-url", valkey.url,
        "load", "--requests", "30", "--rate", "100", "--seed", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["requests"] == 30
    assert data["limited"] == 0
    assert data["respected_rate_limit"] is True
    assert data["rate_limit"] == "5 per 2 s per route"
    assert data["paced_seconds"] > 0
    assert data["error_rate"] == 0
    assert {"200", "201"} <= set(data["statuses"])
    assert "respecting the rate limit" in result.stderr
    assert _rate_keys(valkey)  # it was counted like any client


def test_exempt_sends_the_stacks_secret_and_is_never_limited(
    api: str, tmp_path: Path, valkey: ValkeyProcess
) -> None:
    """--exempt on a stack movieops runs (its secret in .movieops/contract.token): 40 requests
    through a limit of 5 per route, no 429, no counter written, the secret never printed."""
    state = tmp_path / ".movieops"
    state.mkdir(mode=0o700)
    (state / "contract.token").write_text(TOKEN)
    port = api.rsplit(":", 1)[1]
    run = Cli(tmp_path, {"MOVIE_PORT": port, "MOVIE_REDIS_URL": valkey.url})
    result = run("load", "--requests", "40", "--rate", "200", "--exempt", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["requests"] == 40
    assert data["limited"] == 0
    assert data["exempt"] is True
    assert data["cache_hit_ratio"] > 0  # repeated pages come from the cache
    assert _rate_keys(valkey) == []
    assert TOKEN not in result.stdout + result.stderr


def test_a_broken_threshold_exits_11_with_one_line_and_the_summary(
    api: str, tmp_path: Path, valkey: ValkeyProcess
) -> None:
    """--max-p99 no real request can meet: exit 11, the line names the threshold, the summary
    is still printed (as data with --json)."""
    run = Cli(tmp_path, {})
    argv = ("--api-url", api, "--redis-url", valkey.url, "load", "--requests", "3")
    document = run.json(*argv, "--max-p99", "0.0001", code=11)
    assert document["error"]["code"] == "threshold_exceeded"
    assert "--max-p99" in document["error"]["message"]
    assert document["data"]["requests"] == 3
    human = run(*argv, "--max-p99", "0.0001", "--max-error-rate", "0")
    assert human.exit_code == 11
    assert human.stderr.count("error:") == 1
    assert "p99 latency" in human.stderr
    assert "statuses" in human.stdout


def test_a_passing_gate_exits_0(api: str, tmp_path: Path, valkey: ValkeyProcess) -> None:
    """Thresholds that hold: exit 0 and the summary table."""
    result = Cli(tmp_path, {})(
        "--api-url", api, "--redis-url", valkey.url,
        "load", "--requests", "5", "--max-error-rate", "0", "--max-p99", "60000",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "latency" in result.stdout
    assert "2000000001-2000000100" in result.stdout


def test_ctrl_c_prints_the_summary_of_what_was_sent_and_exits_130(
    api: str, tmp_path: Path, valkey: ValkeyProcess
) -> None:
    """SIGINT in the middle of a long run: what was answered so far is summarised (marked
    interrupted), then exit 130, with no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOVIE_", "MOVIEOPS_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "movieops.cli", "--project-dir", str(tmp_path),
         "--api-url", api, "--redis-url", valkey.url,
         "load", "--duration", "120", "--rate", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _rate_keys(valkey):  # requests are flowing (the API counts them)
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no request was sent"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "(interrupted)" in stdout
    assert "statuses" in stdout
    assert stderr.rstrip().endswith("interrupted")
    assert "Traceback" not in stderr


def test_an_api_that_does_not_answer_exits_9(tmp_path: Path) -> None:
    """Nothing listens at --api-url: not running."""
    document = Cli(tmp_path, {}).json(
        "--api-url", f"http://127.0.0.1:{free_port()}", "load", "--requests", "1", code=9
    )
    assert document["error"]["code"] == "not_running"


def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, valkey: ValkeyProcess) -> None:
    """Out-of-range rate, both bounds, --exempt on an attached stack or without a secret."""
    run = Cli(tmp_path, {})
    for argv in (
        ["load", "--rate", "0"],
        ["load", "--rate", "5000"],
        ["load", "--duration", "5", "--requests", "5"],
        ["load", "--concurrency", "1000"],
        ["load", "--max-error-rate", "5"],
        ["load", "--max-p99", "0"],
        ["load", "--exempt"],  # no `movieops up` here: no secret
        ["--api-url", "http://127.0.0.1:1", "load", "--exempt"],
    ):
        result = run(*argv)
        assert result.exit_code == 2, (argv, result.stderr)
        assert result.stderr.startswith("error: "), argv
        assert "Traceback" not in result.stderr
    assert "exemption secret" in run.json("load", "--exempt", code=2)["error"]["message"]
