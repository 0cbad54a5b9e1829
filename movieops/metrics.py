"""Reading the stack's Prometheus metrics (docs/service-contract.md, "Metrics"): parse a scrape,
and from two scrapes of one process compute what `movieops top` shows (rates, ratios, latency
quantiles from histogram bucket deltas). Pure functions, no I/O: movieops.top scrapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# The contract's metric names (docs/service-contract.md, "Metrics").
HTTP_REQUESTS = "movie_http_requests_total"
HTTP_DURATION = "movie_http_request_duration_seconds"
HTTP_IN_PROGRESS = "movie_http_requests_in_progress"
RATE_LIMIT_DECISIONS = "movie_rate_limit_decisions_total"
CACHE_REQUESTS = "movie_cache_requests_total"
REDIS_ERRORS = "movie_redis_errors_total"
BREAKER_OPEN = "movie_redis_breaker_open"
JOBS = "movie_jobs_total"
JOB_DURATION = "movie_job_duration_seconds"
JOB_QUEUE_LATENCY = "movie_job_queue_latency_seconds"
JOBS_IN_PROGRESS = "movie_jobs_in_progress"
QUEUE_DEPTH = "movie_job_queue_depth"
HEARTBEAT = "movie_worker_heartbeat_timestamp_seconds"

# Requests `top` itself causes: scraping must not show up as the stack's traffic.
SELF_ROUTES = frozenset({"/metrics"})
CACHE_SERVED = frozenset({"hit", "not_modified"})

Labels = frozenset[tuple[str, str]]
Scrape = Mapping[tuple[str, Labels], float]
"""One scrape: (sample name, labels) -> value."""


class MetricsParseError(ValueError):
    """The text is not Prometheus' text format."""


def parse(text: str) -> dict[tuple[str, Labels], float]:
    """A scrape in Prometheus text format as (sample name, labels) -> value.

    Sample names are as exposed (``movie_http_requests_total``, ``…_bucket`` with ``le``).
    """
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, Labels], float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsParseError(f"not Prometheus text format: {exc}") from None
    return samples


def _select(
    scrape: Scrape, name: str, where: Callable[[dict[str, str]], bool] | None
) -> dict[Labels, float]:
    return {
        labels: value
        for (sample, labels), value in scrape.items()
        if sample == name and (where is None or where(dict(labels)))
    }


def total(
    scrape: Scrape, name: str, where: Callable[[dict[str, str]], bool] | None = None
) -> float:
    """The sum of a metric's samples (optionally only those whose labels pass ``where``)."""
    return sum(_select(scrape, name, where).values())


def present(scrape: Scrape, name: str) -> bool:
    """Whether the scrape has the metric at all."""
    return any(sample == name for sample, _ in scrape)


def increase(
    before: Scrape,
    after: Scrape,
    name: str,
    where: Callable[[dict[str, str]], bool] | None = None,
) -> float:
    """How much a counter grew between two scrapes, summed over its label sets.

    A series that went down was reset (the process restarted): its whole value after counts,
    as Prometheus' ``increase()`` does; a series new in ``after`` counts from 0.
    """
    old = _select(before, name, where)
    grown = 0.0
    for labels, value in _select(after, name, where).items():
        previous = old.get(labels, 0.0)
        grown += value if value < previous else value - previous
    return grown


def bucket_increase(
    before: Scrape,
    after: Scrape,
    histogram: str,
    where: Callable[[dict[str, str]], bool] | None = None,
) -> list[tuple[float, float]]:
    """A histogram's bucket counts gained between two scrapes: (upper bound, cumulative count),
    summed over every label set but ``le``, sorted by bound (the last one ``+Inf``)."""

    def rest(labels: dict[str, str]) -> bool:
        return where is None or where({k: v for k, v in labels.items() if k != "le"})

    by_bound: dict[float, float] = {}
    name = f"{histogram}_bucket"
    old = _select(before, name, rest)
    for labels, value in _select(after, name, rest).items():
        bound = float(dict(labels).get("le", "nan"))
        if math.isnan(bound):
            continue
        previous = old.get(labels, 0.0)
        by_bound[bound] = by_bound.get(bound, 0.0) + (
            value if value < previous else value - previous
        )
    return sorted(by_bound.items())


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile (0 < q < 1) of cumulative buckets, by linear interpolation inside the
    bucket it falls in, as Prometheus' ``histogram_quantile()``; None without observations.

    A quantile in the ``+Inf`` bucket is the highest finite bound (all that is known).
    """
    if not buckets or not 0 < q < 1:
        return None
    count = buckets[-1][1]
    if count <= 0:
        return None
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                finite = [b for b, _ in buckets if not math.isinf(b)]
                return finite[-1] if finite else None
            in_bucket = cumulative - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, cumulative
    return None


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@dataclass(frozen=True)
class ApiRates:
    """One API process over an interval (None: nothing to compute it from)."""

    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None
    error_ratio: float | None  # 5xx / all requests
    limited_ratio: float | None  # 429 / all requests
    cache_hit_ratio: float | None  # (hit + not_modified) / every cache outcome
    in_progress: float | None
    redis_errors: float  # Redis calls that failed in the interval
    breaker_open: bool | None


@dataclass(frozen=True)
class WorkerRates:
    """One worker process over an interval."""

    jobs_per_second: float
    failed_ratio: float | None
    queue_depth: float | None
    running_jobs: float | None
    job_p50_ms: float | None
    job_p99_ms: float | None
    queue_latency_p99_ms: float | None
    heartbeat_age_seconds: float | None


def _not_self(labels: dict[str, str]) -> bool:
    return labels.get("route") not in SELF_ROUTES


def api_rates(before: Scrape, after: Scrape, seconds: float) -> ApiRates:
    """What an API process did between two scrapes ``seconds`` apart (its own scrapes of
    ``/metrics`` left out)."""
    requests = increase(before, after, HTTP_REQUESTS, _not_self)
    errors = increase(
        before, after, HTTP_REQUESTS, lambda lb: _not_self(lb) and lb.get("status", "")[:1] == "5"
    )
    limited = increase(
        before, after, HTTP_REQUESTS, lambda lb: _not_self(lb) and lb.get("status") == "429"
    )
    cache_all = increase(before, after, CACHE_REQUESTS)
    cache_served = increase(
        before, after, CACHE_REQUESTS, lambda lb: lb.get("outcome") in CACHE_SERVED
    )
    buckets = bucket_increase(before, after, HTTP_DURATION, _not_self)
    return ApiRates(
        requests_per_second=round(requests / seconds, 2) if seconds > 0 else 0.0,
        p50_ms=_ms(quantile(0.5, buckets)),
        p99_ms=_ms(quantile(0.99, buckets)),
        error_ratio=_ratio(errors, requests),
        limited_ratio=_ratio(limited, requests),
        cache_hit_ratio=_ratio(cache_served, cache_all),
        in_progress=total(after, HTTP_IN_PROGRESS) if present(after, HTTP_IN_PROGRESS) else None,
        redis_errors=increase(before, after, REDIS_ERRORS),
        breaker_open=total(after, BREAKER_OPEN) > 0 if present(after, BREAKER_OPEN) else None,
    )


def worker_rates(before: Scrape, after: Scrape, seconds: float, now: float) -> WorkerRates:
    """What a worker did between two scrapes ``seconds`` apart; ``now`` is the Unix time of the
    second one (for the heartbeat's age)."""
    jobs = increase(before, after, JOBS)
    failed = increase(before, after, JOBS, lambda lb: lb.get("outcome") == "failed")
    durations = bucket_increase(before, after, JOB_DURATION)
    waits = bucket_increase(before, after, JOB_QUEUE_LATENCY)
    heartbeat = total(after, HEARTBEAT) if present(after, HEARTBEAT) else None

    def gauge(name: str) -> float | None:
        return total(after, name) if present(after, name) else None

    return WorkerRates(
        jobs_per_second=round(jobs / seconds, 2) if seconds > 0 else 0.0,
        failed_ratio=_ratio(failed, jobs),
        queue_depth=gauge(QUEUE_DEPTH),
        running_jobs=gauge(JOBS_IN_PROGRESS),
        job_p50_ms=_ms(quantile(0.5, durations)),
        job_p99_ms=_ms(quantile(0.99, durations)),
        queue_latency_p99_ms=_ms(quantile(0.99, waits)),
        heartbeat_age_seconds=(
            round(max(0.0, now - heartbeat), 1) if heartbeat is not None and heartbeat > 0 else None
        ),
    )
