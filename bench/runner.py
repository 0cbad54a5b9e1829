"""The benchmark run, start to finish: scratch database and valkey-server, one uvicorn server
per variant, alternating wrk rounds, exact Redis counts, refresh jobs, stack start-up times.

Every process started here is stopped on the way out, on success, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
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
from bench.jobs import run_refresh_benchmark
from bench.load import find_wrk, run_wrk, wrk_version
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
    VARIANTS,
    Measurement,
    RefreshSummary,
    evaluate_targets,
    summarize,
)
from bench.variants import PAGE_SIZE, load_page
from movieops.embedded import ValkeyServer, redis_answers

SERVER_CPU = 0
LOAD_CPU = 1  # wrk and valkey-server
SETTLE_S = 0.3  # lets requests still in flight when wrk stops finish before Redis is read
SERVER_START_TIMEOUT_S = 120


#: What reading the libraries' code (and running them) showed; printed with the results.
NOTES = (
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

    def estimate_seconds(self) -> float:
        """A rough duration of the whole run, to print before starting."""
        per_measurement = self.warmup + self.duration + 1.2
        load = len(self.variants) * (self.rounds * per_measurement + 2)
        startup = (12 if self.startup else 0) + (30 if self.startup and self.compose else 0)
        return 25 + load + (10 + self.jobs * 0.1 if self.jobs else 0) + startup


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


def start_servers(
    procs: Processes, keys: tuple[str, ...], work: Path, env: dict[str, str]
) -> dict[str, Server]:
    """Start one uvicorn server (one worker process, pinned) per variant; wait for all."""
    servers = {}
    for key in keys:
        port = free_port()
        log = work / f"server-{key}.log"
        argv = [
            sys.executable, "-m", "uvicorn", f"bench.variants:{key}", "--factory",
            "--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--no-proxy-headers", "--log-level", "warning",
            "--lifespan", "on", "--backlog", "2048",
        ]  # fmt: skip
        process = procs.start(key, argv, env=env, cwd=work, log=log, cpu=SERVER_CPU)
        servers[key] = Server(key, f"http://127.0.0.1:{port}", process, log)
    for server in servers.values():
        wait_http(
            f"{server.url}/movies?limit={PAGE_SIZE}",
            timeout=SERVER_START_TIMEOUT_S,
            process=server.process,
            log=server.log,
        )
    return servers


def verify_servers(servers: dict[str, Server], expected: bytes) -> list[str]:
    """Every variant serves the same bytes; the product's features are really on (or off)."""
    notes = []
    with httpx.Client(timeout=10) as client:
        for key, server in servers.items():
            url = f"{server.url}/movies?limit={PAGE_SIZE}"
            client.get(url)  # the full path's first read is its cache miss
            response = client.get(url)
            if response.status_code != 200 or response.content != expected:
                raise BenchError(f"{key} does not serve the expected page ({response.status_code})")
            headers = response.headers
            if key == "full" and headers.get("x-cache") != "HIT":
                raise BenchError(
                    f"full: expected a cache hit, got X-Cache {headers.get('x-cache')}"
                )
            if key in {"limiter", "full", "slowapi"} and "x-ratelimit-limit" not in headers:
                raise BenchError(f"{key}: no X-RateLimit-Limit header, so its limiter is not on")
            if key in {"baseline", "limiter"} and headers.get("x-cache") != "BYPASS":
                raise BenchError(f"{key}: expected the cache to be off (X-Cache BYPASS)")
    limited = [k for k in ("limiter", "full", "slowapi") if k in servers]
    notes.append(
        f"All {len(servers)} variants served byte-identical bodies ({len(expected):,} bytes, "
        f"{PAGE_SIZE} films). Checked before the rounds: the product variants answer X-Cache: "
        "HIT (`full`) or BYPASS (baseline, `limiter`)"
        + (f"; {', '.join(limited)} send X-RateLimit-* headers." if limited else ".")
    )
    return notes


def run_rounds(
    config: Config, wrk: str, servers: dict[str, Server], redis: Redis
) -> list[Measurement]:
    """Round-robin: every variant once per round, each after its own warm-up."""
    measurements = []
    cpu = LOAD_CPU if can_pin() else None
    for round_ in range(1, config.rounds + 1):
        for key in config.variants:
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
                f"round {round_}/{config.rounds}  {key:<16} {result.rps:>8,.0f} req/s  "
                f"p50 {result.latency_p50_ms:6.2f} ms  p99 {result.latency_p99_ms:6.2f} ms  "
                f"{usage.round_trips_per_request:4.2f} RT/req{errors}",
                flush=True,
            )
    return measurements


def calibrate(servers: dict[str, Server], redis: Redis, requests: int) -> dict[str, RedisUsage]:
    """Exact Redis work per request: ``requests`` sequential GETs per variant, so nothing is in
    flight when the counters are read."""
    exact = {}
    with httpx.Client(timeout=10) as client:
        for key, server in servers.items():
            url = f"{server.url}/movies?limit={PAGE_SIZE}"
            client.get(url)
            before = take_snapshot(redis)
            for _ in range(requests):
                if client.get(url).status_code != 200:
                    raise BenchError(f"{key}: a calibration request failed")
            exact[key] = usage_between(before, take_snapshot(redis), requests)
    return exact


def measure_http(
    config: Config, wrk: str, procs: Processes, work: Path, database_url: str, redis_url: str
) -> tuple[list[Measurement], dict[str, RedisUsage], list[str]]:
    """Start every variant, check it, run the rounds and the exact count, stop the servers."""
    body = asyncio.run(load_page(database_url))
    env = clean_env({"BENCH_DATABASE_URL": database_url, "BENCH_REDIS_URL": redis_url})
    print(f"starting {len(config.variants)} servers", flush=True)
    servers = start_servers(procs, config.variants, work, env)
    with Redis.from_url(redis_url) as redis:
        checks = [*verify_servers(servers, body), *NOTES]
        measurements = run_rounds(config, wrk, servers, redis)
        exact = calibrate(servers, redis, config.calibration_requests)
    for server in servers.values():
        procs.stop(server.process)
    return measurements, exact, checks


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
        Processes() as procs,  # stopped before the directory is removed
    ):
        work = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{work / 'movies.db'}"
        films = asyncio.run(prepare_database(database_url))
        body_bytes = len(asyncio.run(load_page(database_url)))
        valkey = start_valkey(procs, work / "valkey")
        results.machine["versions"]["valkey-server"] = valkey_version(valkey)
        results.measurements, results.exact_redis, results.checks = measure_http(
            config, wrk, procs, work, database_url, valkey
        )
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
        if config.startup:
            print("timing stack start-up (time to healthy)", flush=True)
            results.startups = measure_startups(
                work, compose=config.compose, skip_reason=config.compose_skip_reason
            )
    measured = {m.variant for m in results.measurements}
    results.summaries = summarize(results.measurements, [v for v in VARIANTS if v.key in measured])
    results.targets = evaluate_targets(
        results.measurements,
        {k: u.round_trips_per_request for k, u in results.exact_redis.items()},
        results.refresh,
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
    }
    results.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.run_seconds = time.monotonic() - started
    return results
