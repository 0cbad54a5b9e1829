"""`movieops load`: a traffic generator to watch the stack work (and a CI gate).

A mixed read/write profile (pages and genre filters of ``GET /movies``, repeated so the cache
hits; ``GET /movies/{id}``; conditional GETs with ``If-None-Match``; ``POST
/movies/{id}/ratings`` with an ``Idempotency-Key``, some keys sent twice to see replays) at a
target rate, bounded in rate, time, requests and concurrency.

Identity: the API knows a client by its socket peer (``X-Forwarded-For`` only from a trusted
proxy), so every request here is one client, this host; nothing forges a header. By default it
respects the rate limit: it reads ``X-RateLimit-Remaining``/``-Reset`` (and ``Retry-After``) per
route template and holds a route's requests back until its window resets. With the stack's
exemption secret (``--exempt``; ``X-RateLimit-Exempt``) it sends at the full rate.

Writes: ratings only, by users LOAD_USER_FIRST … (a range the demo data never uses); rating a
film again replaces that user's score, so the rows stay bounded (users x films). Nothing is
deleted. The pieces are pure (profile, pacer, statistics, thresholds); ``run_load`` does the I/O.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from movieops.errors import NotRunning, UsageError

EXEMPT_HEADER = "X-RateLimit-Exempt"
LOAD_USER_FIRST = 2_000_000_001
LOAD_USERS = 100
MAX_RATE = 1_000.0
MAX_DURATION_SECONDS = 3_600.0
MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 256
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_KNOWN_IDS = 200
MAX_ETAGS = 100
MAX_REPLAYABLE = 50
DEFAULT_WINDOW_SECONDS = 60
MAX_PACING_SLEEP_SECONDS = 0.25
GENRES = ("Drama", "Comedy", "Action", "Crime", "Thriller", "Romance")
SCORES = tuple(x / 2 for x in range(1, 11))

LIST = "/movies"
ONE = "/movies/{movie_id}"
RATINGS = "/movies/{movie_id}/ratings"
ROUTES = (LIST, ONE, RATINGS)  # every route template the profile uses
# kind -> weight (per cent of requests when every route has budget)
WEIGHTS = {"page": 30, "filter": 10, "movie": 25, "conditional": 15, "rate": 20}
REPLAY_ONE_IN = 5

_POLICY_WINDOW = re.compile(r"\bw=(\d+)")


@dataclass(frozen=True)
class Planned:
    """One request to send."""

    kind: str  # page, filter, movie, conditional, rate
    method: str
    path: str  # with its query string
    template: str  # the route template the API counts it on
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


def validate(
    rate: float, duration: float | None, requests: int | None, concurrency: int
) -> tuple[float | None, int | None]:
    """The run's bounds, checked: (duration, requests). Exactly one of them limits the run
    (duration 10 s when neither is given). Raises UsageError with one line."""
    if not 0 < rate <= MAX_RATE:
        raise UsageError(f"--rate must be more than 0 and at most {MAX_RATE:g} requests/second")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be 1 to {MAX_CONCURRENCY}")
    if duration is not None and requests is not None:
        raise UsageError("give --duration or --requests, not both")
    if requests is not None:
        if not 1 <= requests <= MAX_REQUESTS:
            raise UsageError(f"--requests must be 1 to {MAX_REQUESTS}")
        return None, requests
    duration = 10.0 if duration is None else duration
    if not 0 < duration <= MAX_DURATION_SECONDS:
        raise UsageError(f"--duration must be more than 0 and at most {MAX_DURATION_SECONDS:g} s")
    return duration, None


def validate_thresholds(max_error_rate: float | None, max_p99_ms: float | None) -> None:
    """--max-error-rate is a ratio (0-1), --max-p99 a positive number of milliseconds."""
    if max_error_rate is not None and not 0 <= max_error_rate <= 1:
        raise UsageError("--max-error-rate is a ratio from 0 to 1 (0.01: 1 %)")
    if max_p99_ms is not None and not max_p99_ms > 0:
        raise UsageError("--max-p99 is a positive number of milliseconds")


# --- the profile -------------------------------------------------------------------------------


class Profile:
    """The mixed read/write workload: which request comes next (seeded, so reproducible)."""

    def __init__(self, seed: int | None = None, run_id: str | None = None) -> None:
        self.random = random.Random(seed)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.known_ids: list[int] = []
        self.etags: dict[str, tuple[str, str]] = {}  # path -> (etag, template)
        self.replayable: deque[tuple[str, str, dict[str, Any]]] = deque(maxlen=MAX_REPLAYABLE)
        self.sequence = 0

    def _kinds(self, allowed: Callable[[str], bool]) -> list[str]:
        kinds = []
        if allowed(LIST):
            kinds += ["page", "filter"]
        if self.known_ids and allowed(ONE):
            kinds.append("movie")
        if any(allowed(template) for _, template in self.etags.values()):
            kinds.append("conditional")
        if self.known_ids and allowed(RATINGS):
            kinds.append("rate")
        return kinds

    def next(self, allowed: Callable[[str], bool] = lambda _: True) -> Planned | None:
        """The next request among the routes ``allowed`` (None: no route has budget now).
        Until a list answer has named films, only lists are asked for."""
        kinds = self._kinds(allowed)
        if not kinds:
            return None
        kind = self.random.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        if kind == "page":
            offset = self.random.choice((0, 20, 40))
            return Planned(kind, "GET", f"{LIST}?limit=20&offset={offset}", LIST)
        if kind == "filter":
            genre = self.random.choice(GENRES)
            return Planned(kind, "GET", f"{LIST}?genre={genre}&limit=10", LIST)
        if kind == "movie":
            movie = self.random.choice(self.known_ids)
            return Planned(kind, "GET", f"{LIST}/{movie}", ONE)
        if kind == "conditional":
            choices = sorted(p for p, (_, t) in self.etags.items() if allowed(t))
            path = self.random.choice(choices)
            etag, template = self.etags[path]
            return Planned(kind, "GET", path, template, {"If-None-Match": etag})
        if self.replayable and self.random.randrange(REPLAY_ONE_IN) == 0:
            key, path, body = self.random.choice(list(self.replayable))
            return Planned(kind, "POST", path, RATINGS, {"Idempotency-Key": key}, body)
        self.sequence += 1
        movie = self.random.choice(self.known_ids)
        body = {
            "user_id": LOAD_USER_FIRST + self.random.randrange(LOAD_USERS),
            "score": self.random.choice(SCORES),
        }
        key = f"movieops-load-{self.run_id}-{self.sequence}"
        headers = {"Idempotency-Key": key}
        return Planned(kind, "POST", f"{LIST}/{movie}/ratings", RATINGS, headers, body)

    def learn(self, planned: Planned, status: int, headers: Mapping[str, str], body: Any) -> None:
        """Remember what answers teach: film ids from lists, ETags, keys that can be replayed."""
        etag = headers.get("etag")
        room = planned.path in self.etags or len(self.etags) < MAX_ETAGS
        if planned.method == "GET" and status == 200 and etag and room:
            self.etags[planned.path] = (etag, planned.template)
        if planned.template == LIST and status == 200 and isinstance(body, dict):
            for item in body.get("items") or []:
                movie = item.get("id") if isinstance(item, dict) else None
                room = len(self.known_ids) < MAX_KNOWN_IDS
                if isinstance(movie, int) and movie not in self.known_ids and room:
                    self.known_ids.append(movie)
        if planned.method == "POST" and status == 201 and planned.body is not None:
            key = planned.headers.get("Idempotency-Key", "")
            if key and not any(k == key for k, _, _ in self.replayable):
                self.replayable.append((key, planned.path, planned.body))

    def wants_body(self, planned: Planned) -> bool:
        """Whether the answer's JSON teaches anything (list pages while few ids are known)."""
        return planned.template == LIST and len(self.known_ids) < MAX_KNOWN_IDS


# --- pacing ------------------------------------------------------------------------------------


@dataclass
class Budget:
    """What this client has left on one route in the current window, as the API said."""

    remaining: int | None = None  # None: not known (send one request to learn it)
    reset_at: float | None = None  # monotonic time the window ends
    limit: int | None = None
    window_seconds: int | None = None
    inflight: int = 0
    unlimited: bool = False  # answered without rate-limit headers (exempt, or failing open)


class RateLimitPacer:
    """Holds a route's requests back while the API says its budget is spent (pure: the caller
    passes the time in). ``respect=False`` never holds anything back."""

    def __init__(self, respect: bool = True) -> None:
        self.respect = respect
        self.budgets: dict[str, Budget] = {}

    def _budget(self, template: str) -> Budget:
        return self.budgets.setdefault(template, Budget())

    def allowed(self, template: str, now: float) -> bool:
        """Whether a request on ``template`` may go now."""
        if not self.respect:
            return True
        budget = self._budget(template)
        if budget.unlimited:
            return True
        if budget.reset_at is not None and now >= budget.reset_at:
            budget.remaining, budget.reset_at = None, None  # a new window: learn it again
        if budget.remaining is None:
            return budget.inflight == 0  # one request at a time until the API answers
        return budget.remaining > 0

    def sent(self, template: str) -> None:
        """A request on ``template`` went out."""
        budget = self._budget(template)
        budget.inflight += 1
        if budget.remaining is not None:
            budget.remaining -= 1

    def answered(
        self, template: str, status: int | None, headers: Mapping[str, str], now: float
    ) -> None:
        """A request on ``template`` ended (``status`` None: a transport error)."""
        budget = self._budget(template)
        budget.inflight = max(0, budget.inflight - 1)
        if status is None:
            return
        remaining = _int(headers.get("x-ratelimit-remaining"))
        reset = _int(headers.get("x-ratelimit-reset"))
        if status == 429:
            wait = _int(headers.get("retry-after")) or reset or 1
            budget.remaining, budget.reset_at, budget.unlimited = 0, now + wait, False
            return
        if remaining is None or reset is None:
            budget.unlimited = True
            return
        budget.unlimited = False
        budget.limit = _int(headers.get("x-ratelimit-limit")) or budget.limit
        window = _POLICY_WINDOW.search(headers.get("ratelimit-policy", ""))
        budget.window_seconds = int(window[1]) if window else budget.window_seconds
        reset_at = now + reset
        if budget.reset_at is None or reset_at > budget.reset_at + 1 or budget.remaining is None:
            budget.remaining = remaining - budget.inflight  # a new window
        else:
            budget.remaining = min(budget.remaining, remaining - budget.inflight)
        budget.reset_at = reset_at

    def next_opening(self, now: float) -> float:
        """Seconds until some held-back route's window ends (a short wait when none is known)."""
        ends = [b.reset_at - now for b in self.budgets.values() if b.reset_at is not None]
        future = [e for e in ends if e > 0]
        return min(future) if future else 0.05

    def ceiling(self, routes: int = len(ROUTES)) -> float | None:
        """Requests per second the limit allows over ``routes`` routes, each with the budget
        of the first limited one seen (None: no limit known)."""
        known = [b for b in self.budgets.values() if b.limit and not b.unlimited]
        if not known or known[0].limit is None:
            return None
        window = known[0].window_seconds or DEFAULT_WINDOW_SECONDS
        return round(known[0].limit / window * routes, 2)

    def policy(self) -> str | None:
        """The limit as the API states it, e.g. ``20 per 60 s per route``."""
        known = [b for b in self.budgets.values() if b.limit and not b.unlimited]
        if not known:
            return None
        window = known[0].window_seconds or DEFAULT_WINDOW_SECONDS
        return f"{known[0].limit} per {window} s per route"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --- statistics --------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The nearest-rank p-th quantile (0 < p ≤ 1) of ascending values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Tally:
    """What the answers were, accumulated as they arrive."""

    statuses: Counter[str] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests only
    replayed: int = 0
    ratings_written: int = 0

    def answered(
        self, planned: Planned, status: int, headers: Mapping[str, str], seconds: float
    ) -> None:
        """One answer."""
        self.statuses[str(status)] += 1
        self.latencies.append(seconds)
        outcome = headers.get("x-cache")
        if outcome:
            self.cache[outcome.upper()] += 1
        if headers.get("idempotent-replayed") == "true":
            self.replayed += 1
        elif planned.method == "POST" and status == 201:
            self.ratings_written += 1

    def failed(self, error: str) -> None:
        """A request that got no answer (connection refused, timeout …)."""
        self.transport_errors[error] += 1

    @property
    def done(self) -> int:
        """Requests finished, answered or not."""
        return sum(self.statuses.values()) + sum(self.transport_errors.values())


@dataclass(frozen=True)
class LatencyMs:
    """Latency percentiles of answered requests, in milliseconds."""

    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True)
class LoadSummary:
    """What a load run did."""

    api_url: str
    requests: int  # finished (answered or transport error)
    seconds: float
    throughput_per_second: float
    target_rate: float
    statuses: dict[str, int]
    transport_errors: dict[str, int]
    error_rate: float  # (5xx + transport errors) / requests
    limited: int  # 429s
    latency_ms: LatencyMs
    cache: dict[str, int]  # X-Cache: HIT / MISS / BYPASS counts
    cache_hit_ratio: float | None  # HIT / every answer with X-Cache
    ratings_written: int
    replayed: int
    exempt: bool
    respected_rate_limit: bool
    rate_limit: str | None  # as the API stated it, e.g. "20 per 60 s per route"
    rate_limit_ceiling_per_second: float | None
    paced_seconds: float  # time spent holding requests back for the rate limit
    users: str  # the user ids ratings were written as
    interrupted: bool = False  # stopped by Ctrl-C: the summary of what was sent until then


def summarize(
    tally: Tally,
    *,
    api_url: str,
    seconds: float,
    target_rate: float,
    exempt: bool,
    pacer: RateLimitPacer,
    paced_seconds: float,
    interrupted: bool = False,
) -> LoadSummary:
    """The run's summary from its tally (pure)."""
    latencies = sorted(tally.latencies)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    server_errors = sum(n for status, n in tally.statuses.items() if status.startswith("5"))
    failures = server_errors + sum(tally.transport_errors.values())
    cached = sum(tally.cache.values())
    return LoadSummary(
        api_url=api_url,
        requests=tally.done,
        seconds=round(seconds, 3),
        throughput_per_second=round(tally.done / seconds, 2) if seconds > 0 else 0.0,
        target_rate=target_rate,
        statuses=dict(sorted(tally.statuses.items())),
        transport_errors=dict(sorted(tally.transport_errors.items())),
        error_rate=round(failures / tally.done, 4) if tally.done else 0.0,
        limited=tally.statuses.get("429", 0),
        latency_ms=LatencyMs(
            ms(percentile(latencies, 0.5)),
            ms(percentile(latencies, 0.9)),
            ms(percentile(latencies, 0.99)),
            ms(latencies[-1] if latencies else None),
        ),
        cache=dict(sorted(tally.cache.items())),
        cache_hit_ratio=round(tally.cache.get("HIT", 0) / cached, 4) if cached else None,
        ratings_written=tally.ratings_written,
        replayed=tally.replayed,
        exempt=exempt,
        respected_rate_limit=pacer.respect,
        rate_limit=pacer.policy(),
        rate_limit_ceiling_per_second=pacer.ceiling(),
        paced_seconds=round(paced_seconds, 2),
        users=f"{LOAD_USER_FIRST}-{LOAD_USER_FIRST + LOAD_USERS - 1}",
        interrupted=interrupted,
    )


def threshold_failures(
    summary: LoadSummary, max_error_rate: float | None, max_p99_ms: float | None
) -> list[str]:
    """Which thresholds the run broke, one sentence each (empty: it passed)."""
    failures = []
    if max_error_rate is not None and summary.error_rate > max_error_rate:
        failures.append(
            f"error rate {summary.error_rate:.2%} is above --max-error-rate {max_error_rate:g}"
        )
    p99 = summary.latency_ms.p99
    if max_p99_ms is not None and p99 is not None and p99 > max_p99_ms:
        failures.append(f"p99 latency {p99:g} ms is above --max-p99 {max_p99_ms:g} ms")
    return failures


# --- I/O ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadOptions:
    """How hard and for how long."""

    rate: float
    duration: float | None
    requests: int | None
    concurrency: int
    exempt_token: str | None = None
    seed: int | None = None


async def _run(
    api_url: str,
    options: LoadOptions,
    on_progress: Callable[[int, float], None],
    on_message: Callable[[str], None],
) -> LoadSummary:
    import httpx

    profile = Profile(options.seed)
    pacer = RateLimitPacer(respect=options.exempt_token is None)
    tally = Tally()
    headers = {EXEMPT_HEADER: options.exempt_token} if options.exempt_token else {}
    slots = asyncio.Semaphore(options.concurrency)
    pending: set[asyncio.Task[None]] = set()
    said_ceiling = False
    clock = time.monotonic
    limits = httpx.Limits(max_connections=options.concurrency)
    async with httpx.AsyncClient(
        base_url=api_url, timeout=REQUEST_TIMEOUT_SECONDS, limits=limits, headers=headers
    ) as client:
        try:
            await client.get("/health")
        except httpx.HTTPError as exc:
            raise NotRunning(
                f"cannot reach the API at {api_url}: {type(exc).__name__}",
                hint="start the stack with `movieops up`, or pass --api-url",
            ) from None

        async def send(planned: Planned) -> None:
            started = clock()
            try:
                response = await client.request(
                    planned.method, planned.path, headers=planned.headers, json=planned.body
                )
            except httpx.HTTPError as exc:
                pacer.answered(planned.template, None, {}, clock())
                tally.failed(type(exc).__name__)
            else:
                seconds = clock() - started
                answer = response.headers
                pacer.answered(planned.template, response.status_code, answer, clock())
                tally.answered(planned, response.status_code, answer, seconds)
                body: Any = None
                if profile.wants_body(planned) and response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                profile.learn(planned, response.status_code, answer, body)
            finally:
                slots.release()
                on_progress(tally.done, clock() - start)

        start = clock()
        deadline = start + options.duration if options.duration is not None else math.inf
        interval = 1.0 / options.rate
        due = start
        sent = 0
        paced = 0.0
        interrupted = False
        try:
            while (options.requests is None or sent < options.requests) and clock() < deadline:
                delay = due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                planned = profile.next(lambda t: pacer.allowed(t, clock()))
                while planned is None and clock() < deadline:
                    wait = min(pacer.next_opening(clock()), MAX_PACING_SLEEP_SECONDS)
                    await asyncio.sleep(wait)
                    paced += wait
                    planned = profile.next(lambda t: pacer.allowed(t, clock()))
                if planned is None:
                    slots.release()
                    break
                pacer.sent(planned.template)
                task = asyncio.create_task(send(planned))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
                # Behind schedule (held back, or every slot busy): go on at the rate, no burst.
                due = max(due + interval, clock() - interval)
                if not said_ceiling and pacer.respect and pacer.ceiling() is not None:
                    said_ceiling = True
                    on_message(
                        f"respecting the rate limit ({pacer.policy()} for this client): at most "
                        f"~{pacer.ceiling():g} req/s over the {len(ROUTES)} routes it uses"
                    )
            if pending:
                await asyncio.gather(*pending)
        except asyncio.CancelledError:
            # Ctrl-C (asyncio.run cancels this task): stop sending, drop what is in flight,
            # and summarise what was answered; the CLI prints it and exits 130.
            interrupted = True
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        seconds = clock() - start
    return summarize(
        tally,
        api_url=api_url,
        seconds=seconds,
        target_rate=options.rate,
        exempt=options.exempt_token is not None,
        pacer=pacer,
        paced_seconds=paced,
        interrupted=interrupted,
    )


def run_load(
    api_url: str,
    options: LoadOptions,
    on_progress: Callable[[int, float], None] = lambda done, seconds: None,
    on_message: Callable[[str], None] = lambda message: None,
) -> LoadSummary:
    """Send the profile at ``options.rate`` until the duration or request count is reached;
    raises NotRunning when the API does not answer at all."""
    return asyncio.run(_run(api_url.rstrip("/"), options, on_progress, on_message))
