"""The benchmark run, start to finish: scratch database and valkey-server, one uvicorn server
per variant, alternating wrk rounds, exact Redis counts, refresh jobs, stack start-up times.

Every process started here is stopped on the way out, on success, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen

import httpx
from redis import Redis

from app.db import create_engine, create_schema, session_factory
from app.repository import count_movies
from app.seed import seed_demo_catalog
from bench import ROOT, machine
from bench.before import BEFORE_REV, BeforeTree, before_tree
from bench.clitime import CliTiming, time_cli
from bench.jobs import run_refresh_benchmark
from bench.load import find_wrk, run_wrk, wrk_version
from bench.mixed import SEED, WRITE_PERCENT, MixedResult, catalog_ids, product_env, run_mixed
from bench.procs import (
    BenchError,
    Processes,
    can_pin,
    clean_env,
    free_port,
    log_tail,
    sigterm_as_interrupt,
    wait_http,
)
from bench.redisstats import RedisUsage, take_snapshot, usage_between
from bench.report import Results
from bench.stack import measure_startups
from bench.summary import (
    VARIANT_BY_KEY,
    VARIANTS,
    Measurement,
    MixedMeasurement,
    RefreshSummary,
    evaluate_targets,
    summarize,
    summarize_mixed,
)
from bench.variants import PAGE_SIZE, load_page
from movieops.embedded import ValkeyServer, redis_answers

SERVER_CPU = 0
LOAD_CPU = 1  # wrk and valkey-server
SETTLE_S = 0.3  # lets requests still in flight when wrk stops finish before Redis is read
SERVER_START_TIMEOUT_S = 120
#: Variants whose limiter must announce itself with X-RateLimit-* headers.
HEADER_LIMITERS = ("limiter", "full", "full_nometrics", "slowapi", "memory_slowapi")
#: Product variants whose cache must be off (X-Cache: BYPASS).
UNCACHED = frozenset({"baseline", "limiter", "before_uncached"})
CACHED = frozenset({"full", "full_nometrics"})


#: What reading the libraries' code (and running them) showed; printed with the results.
NOTES = (
    "The product variants run as the product ships, which includes `gc.freeze()` once the API "
    "has started (`MOVIE_GC_FREEZE`): without it, full garbage collections of the framework's "
    "start-up objects stalled the cached path for 50-100 ms (p99) and cost it about a third of "
    "its throughput. The in-memory FastAPI and bare Starlette variants run as their frameworks "
    "ship (no freeze).",
    "fastapi-limiter 0.2.0 reads `route.path` of every app route on every request; FastAPI "
    "0.165 keeps `include_router()` results as `_IncludedRouter` entries without `path`, so on "
    "the product's app every limited request fails with AttributeError (HTTP 500). The "
    "benchmark flattens the included routers into plain routes for that variant "
    "(`bench.variants.flatten_routes`; the routes are the same objects).",
    "fastapi-limiter 0.2.0's documented Redis set-up (`Limiter(await RedisBucket.init(rates, "
    "redis, key))`) keeps one sorted set for every client and route (its identifier only names "
    "the members), and pyrate-limiter serialises every acquire behind one asyncio.Lock.",
    "slowapi calls Redis with the synchronous client of `limits` from inside the async "
    "endpoint: its 3 round trips per request (EVALSHA, TTL and GET for the headers) block the "
    "event loop.",
    "The naive middleware's INCR goes out as `INCRBY key 1` (redis-py); EXPIRE is sent only "
    "when the count is 1, so it costs one round trip per request - and a crash between the two "
    "leaves a counter that never expires.",
)


@dataclass(frozen=True)
class Config:
    """What to run (see ``python -m bench --help``)."""

    rounds: int
    duration: int
    warmup: int
    connections: int
    threads: int
    jobs: int
    calibration_requests: int
    startup: bool
    compose: bool
    compose_skip_reason: str
    install_wrk: bool
    out_dir: Path
    variants: tuple[str, ...]
    mixed: bool = True
    cli_runs: int = 10
    before: bool = True

    def estimate_seconds(self) -> float:
        """A rough duration of the whole run, to print before starting."""
        per_measurement = self.warmup + self.duration + 1.2
        loads = len(self.variants) + (2 if self.mixed else 0)
        load = loads * (self.rounds * per_measurement + 2)
        startup = (12 if self.startup else 0) + (30 if self.startup and self.compose else 0)
        # CLI: 3 commands x (runs + 1) x ~3 s today (both trees), far less once it is fast.
        cli = 3 * (self.cli_runs + 1) * 3 * (2 if self.before else 1) if self.cli_runs else 0
        calibration = len(self.variants) * self.calibration_requests * 0.004
        before = 40 if self.before else 0
        jobs = 10 + self.jobs * 0.1 if self.jobs else 0
        return 25 + before + load + calibration + jobs + startup + cli


@dataclass(frozen=True)
class Server:
    """One running variant."""

    key: str
    url: str
    process: Popen[bytes]
    log: Path


async def prepare_database(url: str) -> int:
    """Create the schema and seed the demo catalog; return the number of films."""
    engine = create_engine(url)
    try:
        await create_schema(engine)
        await seed_demo_catalog(engine, with_ratings=False)  # bench/jobs.py adds its own
        async with session_factory(engine)() as session:
            return await count_movies(session)
    finally:
        await engine.dispose()


def start_valkey(procs: Processes, data_dir: Path) -> str:
    """A throw-away embedded valkey-server (the product's own argv, no persistence) on a free
    port, pinned to the load CPU; returns its URL once it answers PING."""
    server = ValkeyServer(free_port(), data_dir, persistent=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "valkey.log"
    process = procs.start(
        "valkey", server.command(), env=dict(os.environ), cwd=data_dir, log=log, cpu=LOAD_CPU
    )
    deadline = time.monotonic() + 10
    while not redis_answers(server.url, timeout=0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"valkey-server did not start{log_tail(log)}")
        time.sleep(0.02)
    return server.url


def valkey_version(url: str) -> str:
    """The server's version, as INFO reports it."""
    with Redis.from_url(url) as client:
        info = client.info("server")
    return str(info.get("valkey_version") or info.get("redis_version") or "?")


def _uvicorn(
    procs: Processes,
    key: str,
    app: str,
    *,
    python: Path | str,
    app_dir: Path,
    work: Path,
    env: dict[str, str],
    factory: bool,
) -> Server:
    """One uvicorn server, one worker process, pinned to the server CPU (not yet waited for)."""
    port = free_port()
    log = work / f"server-{key}.log"
    argv = [
        str(python), "-m", "uvicorn", app, *(["--factory"] if factory else []),
        "--app-dir", str(app_dir), "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--no-proxy-headers", "--log-level", "warning",
        "--lifespan", "on", "--backlog", "2048",
    ]  # fmt: skip
    process = procs.start(key, argv, env=env, cwd=work, log=log, cpu=SERVER_CPU)
    return Server(key, f"http://127.0.0.1:{port}", process, log)


def start_servers(
    procs: Processes,
    keys: tuple[str, ...],
    work: Path,
    env: dict[str, str],
    before: BeforeTree | None = None,
) -> dict[str, Server]:
    """Start one uvicorn server per variant (the ``before`` ones from the before tree, with its
    own interpreter); wait for all."""
    servers = {}
    for key in keys:
        variant = VARIANT_BY_KEY[key]
        if variant.tree == "before":
            if before is None:
                continue
            python, app_dir = before.python, before.root
        else:
            python, app_dir = Path(sys.executable), ROOT
        servers[key] = _uvicorn(
            procs, key, f"bench.variants:{variant.factory_name}", python=python,
            app_dir=app_dir, work=work, env=env, factory=True,
        )  # fmt: skip
    return _serving(servers)


def _serving(servers: dict[str, Server]) -> dict[str, Server]:
    """``servers`` once every one answers the page (or a BenchError naming the one that died)."""
    for server in servers.values():
        wait_http(
            f"{server.url}/movies?limit={PAGE_SIZE}",
            timeout=SERVER_START_TIMEOUT_S,
            process=server.process,
            log=server.log,
        )
    return servers


def start_mixed_servers(
    procs: Processes, work: Path, valkey_url: str, before: BeforeTree | None
) -> dict[str, Server]:
    """The product as it ships (``uvicorn app.main:app``) for ``after`` and, when there is a
    before tree, ``before``: each with its own seeded SQLite file and Redis database index."""
    trees: list[tuple[str, Path, Path | str, int]] = [("after", ROOT, sys.executable, 1)]
    if before is not None:
        trees.append(("before", before.root, before.python, 2))
    base = valkey_url.rsplit("/", 1)[0]
    servers = {}
    for target, root, python, db in trees:
        database_url = f"sqlite+aiosqlite:///{work / f'mixed-{target}.db'}"
        env = clean_env(product_env(database_url, f"{base}/{db}"))
        servers[target] = _uvicorn(
            procs, f"mixed-{target}", "app.main:app", python=python, app_dir=root, work=work,
            env=env, factory=False,
        )  # fmt: skip
    return _serving(servers)


def verify_servers(servers: dict[str, Server], expected: bytes) -> list[str]:
    """Every variant serves the same bytes; the product's features are really on (or off)."""
    notes = []
    differing: list[str] = []
    with httpx.Client(timeout=10) as client:
        for key, server in servers.items():
            url = f"{server.url}/movies?limit={PAGE_SIZE}"
            client.get(url)  # the full path's first read is its cache miss
            response = client.get(url)
            if response.status_code != 200:
                raise BenchError(f"{key} does not serve the page ({response.status_code})")
            if response.content != expected:
                # FastAPI's response_model serialisation may differ in bytes, never in data.
                if response.json() != json.loads(expected):
                    raise BenchError(f"{key} does not serve the expected page")
                differing.append(key)
            headers = response.headers
            if key in CACHED and headers.get("x-cache") != "HIT":
                raise BenchError(
                    f"{key}: expected a cache hit, got X-Cache {headers.get('x-cache')}"
                )
            if key in HEADER_LIMITERS and "x-ratelimit-limit" not in headers:
                raise BenchError(f"{key}: no X-RateLimit-Limit header, so its limiter is not on")
            if key in UNCACHED and headers.get("x-cache") != "BYPASS":
                raise BenchError(f"{key}: expected the cache to be off (X-Cache BYPASS)")
    limited = [k for k in HEADER_LIMITERS if k in servers]
    same = [k for k in servers if k not in differing]
    notes.append(
        f"{len(same)} of {len(servers)} variants served byte-identical bodies "
        f"({len(expected):,} bytes, {PAGE_SIZE} films)"
        + (f"; {', '.join(differing)} the same JSON in other bytes" if differing else "")
        + ". Checked before the rounds: the product variants answer X-Cache: HIT (`full`) or "
        "BYPASS (un-cached ones)"
        + (f"; {', '.join(limited)} send X-RateLimit-* headers." if limited else ".")
    )
    return notes


def run_rounds(
    config: Config,
    wrk: str,
    servers: dict[str, Server],
    redis: Redis,
    mixed: dict[str, Server] | None = None,
    ids: list[int] | None = None,
) -> tuple[list[Measurement], list[MixedMeasurement]]:
    """Round-robin: every variant once per round, each after its own warm-up, then the mixed
    workload against each tree."""
    measurements = []
    mixed_measurements = []
    cpu = LOAD_CPU if can_pin() else None
    for round_ in range(1, config.rounds + 1):
        for key in config.variants:
            if key not in servers:
                continue
            server = servers[key]
            url = f"{server.url}/movies?limit={PAGE_SIZE}"
            if config.warmup:
                run_wrk(wrk, url, duration=config.warmup, connections=config.connections, cpu=cpu)
            time.sleep(SETTLE_S)
            before = take_snapshot(redis)
            result, _raw = run_wrk(
                wrk,
                url,
                duration=config.duration,
                connections=config.connections,
                threads=config.threads,
                cpu=cpu,
            )
            time.sleep(SETTLE_S)
            after = take_snapshot(redis)
            if server.process.poll() is not None:
                raise BenchError(f"{key}: the server died during the round{log_tail(server.log)}")
            # wrk keeps one request in flight per connection; the server still serves those
            # after wrk stops counting, and their Redis calls are in the counters.
            usage = usage_between(before, after, result.requests + config.connections)
            measurements.append(Measurement(key, round_, result, usage, os.getloadavg()[0]))
            errors = (
                ""
                if result.clean
                else (f"  ERRORS: {result.non_2xx_3xx} non-2xx, {result.socket_errors} socket")
            )
            print(
                f"round {round_}/{config.rounds}  {key:<22} {result.rps:>8,.0f} req/s  "
                f"p50 {result.latency_p50_ms:6.2f} ms  p99 {result.latency_p99_ms:6.2f} ms  "
                f"{usage.round_trips_per_request:4.2f} RT/req{errors}",
                flush=True,
            )
        for target, server in (mixed or {}).items():
            mixed_measurements.append(
                MixedMeasurement(
                    target,
                    round_,
                    _mixed_round(config, wrk, server, ids or [], cpu),
                    os.getloadavg()[0],
                )
            )
            mix = mixed_measurements[-1].result
            print(
                f"round {round_}/{config.rounds}  mixed {target:<10} {mix.rps:>8,.0f} req/s  "
                f"p50 {mix.latency_p50_ms:6.2f} ms  p99 {mix.latency_p99_ms:6.2f} ms  "
                f"hit {mix.hit_ratio:4.0%}  errors {mix.errors}",
                flush=True,
            )
    return measurements, mixed_measurements


def _mixed_round(
    config: Config, wrk: str, server: Server, ids: list[int], cpu: int | None
) -> MixedResult:
    """One warmed-up mixed-workload measurement of one tree."""
    if config.warmup:
        run_mixed(
            wrk, server.url, ids, duration=config.warmup, connections=config.connections,
            seed=SEED + 1000, cpu=cpu,
        )  # fmt: skip
    time.sleep(SETTLE_S)
    result = run_mixed(
        wrk, server.url, ids, duration=config.duration, connections=config.connections, cpu=cpu
    )
    if server.process.poll() is not None:
        raise BenchError(f"{server.key}: the server died during the round{log_tail(server.log)}")
    return result


def wait_quiet(redis: Redis, timeout: float = 10.0) -> None:
    """Until nothing but our own INFO reaches Redis for 0.2 s: a loaded server still works off
    requests wrk had in flight when it stopped, and their Redis calls must not be counted."""
    deadline = time.monotonic() + timeout
    previous = take_snapshot(redis)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = take_snapshot(redis)
        if current.reads - previous.reads <= 1:
            return
        previous = current


def calibrate(servers: dict[str, Server], redis: Redis, requests: int) -> dict[str, RedisUsage]:
    """Exact Redis work per request: ``requests`` sequential GETs per variant, so nothing is in
    flight when the counters are read."""
    exact = {}
    with httpx.Client(timeout=10) as client:
        for key, server in servers.items():
            if not VARIANT_BY_KEY[key].uses_redis:
                continue
            url = f"{server.url}/movies?limit={PAGE_SIZE}"
            client.get(url)
            wait_quiet(redis)
            before = take_snapshot(redis)
            for _ in range(requests):
                if client.get(url).status_code != 200:
                    raise BenchError(f"{key}: a calibration request failed")
            exact[key] = usage_between(before, take_snapshot(redis), requests)
    return exact


def verify_mixed(servers: dict[str, Server], ids: list[int]) -> list[str]:
    """The shipped product answers a list page from its cache on the second read, announces the
    raised limit, and stores a rating (so the workload's three kinds all succeed)."""
    with httpx.Client(timeout=10) as client:
        for target, server in servers.items():
            url = f"{server.url}/movies?limit={PAGE_SIZE}"
            client.get(url)
            response = client.get(url)
            if response.status_code != 200 or response.headers.get("x-cache") != "HIT":
                raise BenchError(
                    f"mixed {target}: expected a cache hit ({response.status_code}, "
                    f"X-Cache {response.headers.get('x-cache')})"
                )
            limit = response.headers.get("x-ratelimit-limit")
            if limit != "1000000":
                raise BenchError(f"mixed {target}: X-RateLimit-Limit is {limit}, not 1000000")
            rated = client.post(
                f"{server.url}/movies/{ids[0]}/ratings", json={"user_id": 1, "score": 4.5}
            )
            if rated.status_code != 201:
                raise BenchError(f"mixed {target}: a rating was refused ({rated.status_code})")
    return [
        f"Mixed workload: {', '.join(servers)} served `uvicorn app.main:app` (seeded demo "
        f"catalog of {len(ids)} films with ratings, rate limit 1,000,000/min); checked before the "
        "rounds: a repeated list page is a cache hit, X-RateLimit-Limit is 1000000, a rating is "
        "stored (201)."
    ]


@dataclass
class HttpResults:
    """What the load part of the run produced."""

    measurements: list[Measurement]
    mixed: list[MixedMeasurement]
    exact: dict[str, RedisUsage]
    checks: list[str]


def measure_http(
    config: Config,
    wrk: str,
    procs: Processes,
    work: Path,
    database_url: str,
    redis_url: str,
    before: BeforeTree | None,
) -> HttpResults:
    """Start every variant (and the mixed-workload products), check them, run the rounds and
    the exact count, stop the servers."""
    body = asyncio.run(load_page(database_url))
    env = clean_env({"BENCH_DATABASE_URL": database_url, "BENCH_REDIS_URL": redis_url})
    print(f"starting {len(config.variants)} servers", flush=True)
    servers = start_servers(procs, config.variants, work, env, before)
    mixed: dict[str, Server] = {}
    ids: list[int] = []
    checks: list[str] = []
    if config.mixed:
        mixed = start_mixed_servers(procs, work, redis_url, before)
        ids = catalog_ids(mixed["after"].url)
        checks += verify_mixed(mixed, ids)
    with Redis.from_url(redis_url) as redis:
        checks = [*verify_servers(servers, body), *checks, *NOTES]
        measurements, mixed_measurements = run_rounds(config, wrk, servers, redis, mixed, ids)
        exact = calibrate(servers, redis, config.calibration_requests)
    for server in [*servers.values(), *mixed.values()]:
        procs.stop(server.process)
    return HttpResults(measurements, mixed_measurements, exact, checks)


def measure_cli(config: Config, work: Path, before: BeforeTree | None) -> list[CliTiming]:
    """``movieops --help`` / ``status`` / ``status --json`` start-up for both trees."""
    scratch = work / "cli-scratch"
    scratch.mkdir(exist_ok=True)
    env = clean_env({})
    print(f"timing the CLI: 1 warm-up + {config.cli_runs} runs per command", flush=True)
    timings = time_cli(
        Path(sys.executable).with_name("movieops"),
        "after",
        cwd=scratch,
        env=env,
        runs=config.cli_runs,
    )
    if before is not None:
        timings += time_cli(before.movieops, "before", cwd=scratch, env=env, runs=config.cli_runs)
    return timings


def run(config: Config, command: str) -> Results:
    """Run everything ``config`` asks for and return the results (not yet written)."""
    started = time.monotonic()
    results = Results(
        command=command,
        config={},
        machine={},
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    wrk = find_wrk(config.install_wrk)
    results.machine = machine.describe({"wrk": wrk_version(wrk)})
    pinning = (
        f"uvicorn servers on CPU {SERVER_CPU}; wrk and valkey-server on CPU {LOAD_CPU}"
        if can_pin()
        else "none (fewer than 2 usable CPUs)"
    )
    print(
        f"benchmark: {len(config.variants)} variants x {config.rounds} rounds x "
        f"{config.duration} s (+{config.warmup} s warm-up); about "
        f"{config.estimate_seconds() / 60:.1f} min. Pinning: {pinning}.",
        flush=True,
    )
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="movieops-bench-") as tmp,
        before_tree(BEFORE_REV, enabled=config.before) as before,
        Processes() as procs,  # stopped before the directory and the worktree are removed
    ):
        results.before = before
        if before.tree is None:
            print(f"before: skipped ({before.reason})", flush=True)
        work = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{work / 'movies.db'}"
        films = asyncio.run(prepare_database(database_url))
        body_bytes = len(asyncio.run(load_page(database_url)))
        valkey = start_valkey(procs, work / "valkey")
        results.machine["versions"]["valkey-server"] = valkey_version(valkey)
        http = measure_http(config, wrk, procs, work, database_url, valkey, before.tree)
        results.measurements, results.mixed_measurements = http.measurements, http.mixed
        results.exact_redis, results.checks = http.exact, http.checks
        if config.jobs:
            try:
                samples = run_refresh_benchmark(procs, work, database_url, valkey, config.jobs)
                results.refresh_samples = samples
                results.refresh = RefreshSummary.of(samples)
            except BenchError as exc:
                results.refresh_error = str(exc)
                print(f"jobs: failed: {exc}", file=sys.stderr, flush=True)
        else:
            results.refresh_error = "skipped (--jobs 0)"
        procs.stop_all()  # valkey: the start-up runs bring their own Redis
        if config.cli_runs:
            results.cli = measure_cli(config, work, before.tree)
        if config.startup:
            print("timing stack start-up (time to healthy)", flush=True)
            results.startups = measure_startups(
                work, compose=config.compose, skip_reason=config.compose_skip_reason
            )
    measured = {m.variant for m in results.measurements}
    results.summaries = summarize(
        results.measurements, [v for v in VARIANTS if v.key in measured], results.exact_redis
    )
    results.mixed = summarize_mixed(results.mixed_measurements)
    results.targets = evaluate_targets(
        results.measurements,
        {k: u.round_trips_per_request for k, u in results.exact_redis.items()},
        results.refresh,
        results.mixed,
        results.cli,
        results.startups,
    )
    results.config = {
        "rounds": config.rounds,
        "duration": config.duration,
        "warmup": config.warmup,
        "connections": config.connections,
        "threads": config.threads,
        "jobs": config.jobs,
        "calibration_requests": config.calibration_requests,
        "page_size": PAGE_SIZE,
        "body_bytes": body_bytes,
        "films": films,
        "pinning": pinning,
        "cli_runs": config.cli_runs,
        "mixed_write_percent": WRITE_PERCENT,
        "before_rev": results.before.rev if results.before else "",
    }
    results.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.run_seconds = time.monotonic() - started
    return results
