"""movieops.metrics: the contract's Prometheus text parsed, and two scrapes turned into rates,
ratios and latency quantiles (pure: text in, numbers out)."""

from __future__ import annotations

import pytest

from movieops import metrics

BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "+Inf")


def _histogram(name: str, labels: str, counts: tuple[int, ...], total_seconds: float) -> str:
    """A histogram's lines in text format: cumulative ``counts`` per bound of BOUNDS."""
    lines = [
        f'{name}_bucket{{le="{bound}",{labels}}} {count}'
        for bound, count in zip(BOUNDS, counts, strict=True)
    ]
    lines.append(f"{name}_count{{{labels}}} {counts[-1]}")
    lines.append(f"{name}_sum{{{labels}}} {total_seconds}")
    return "\n".join(lines)


def api_text(
    ok: int,
    errors: int,
    limited: int,
    hits: int,
    misses: int,
    buckets: tuple[int, ...],
    scrapes: int = 0,
    in_progress: int = 1,
) -> str:
    """An API scrape as docs/service-contract.md names its metrics."""
    return f"""# HELP movie_http_requests_total Requests answered.
# TYPE movie_http_requests_total counter
movie_http_requests_total{{method="GET",route="/movies",status="200"}} {ok}
movie_http_requests_total{{method="POST",route="/movies",status="503"}} {errors}
movie_http_requests_total{{method="GET",route="/movies/{{movie_id}}",status="429"}} {limited}
movie_http_requests_total{{method="GET",route="/metrics",status="200"}} {scrapes}
# HELP movie_http_request_duration_seconds Time to answer.
# TYPE movie_http_request_duration_seconds histogram
{_histogram("movie_http_request_duration_seconds", 'method="GET",route="/movies"', buckets, 1.0)}
# HELP movie_http_requests_in_progress Requests being handled now.
# TYPE movie_http_requests_in_progress gauge
movie_http_requests_in_progress {in_progress}
# HELP movie_cache_requests_total Cache outcomes.
# TYPE movie_cache_requests_total counter
movie_cache_requests_total{{outcome="hit"}} {hits}
movie_cache_requests_total{{outcome="miss"}} {misses}
movie_cache_requests_total{{outcome="not_modified"}} 0
# HELP movie_redis_errors_total Redis calls that failed.
# TYPE movie_redis_errors_total counter
movie_redis_errors_total 0
# HELP movie_redis_breaker_open 1 while the breaker is open.
# TYPE movie_redis_breaker_open gauge
movie_redis_breaker_open 0
"""


def worker_text(
    succeeded: int, failed: int, depth: int, running: int, buckets: tuple[int, ...]
) -> str:
    """A worker scrape as docs/service-contract.md names its metrics."""
    labels = 'function="refresh_recommendations"'
    return f"""# HELP movie_jobs_total Job runs that ended.
# TYPE movie_jobs_total counter
movie_jobs_total{{{labels},outcome="succeeded"}} {succeeded}
movie_jobs_total{{{labels},outcome="failed"}} {failed}
# HELP movie_job_duration_seconds Run time of a job.
# TYPE movie_job_duration_seconds histogram
{_histogram("movie_job_duration_seconds", labels, buckets, 2.0)}
# HELP movie_job_queue_depth Jobs waiting.
# TYPE movie_job_queue_depth gauge
movie_job_queue_depth {depth}
# HELP movie_jobs_in_progress Jobs running.
# TYPE movie_jobs_in_progress gauge
movie_jobs_in_progress {running}
# HELP movie_worker_heartbeat_timestamp_seconds Last heartbeat.
# TYPE movie_worker_heartbeat_timestamp_seconds gauge
movie_worker_heartbeat_timestamp_seconds 1000.0
"""


def test_parse_keys_samples_by_name_and_labels() -> None:
    """Counters keep their _total name; histogram buckets carry le."""
    scrape = metrics.parse(api_text(3, 0, 0, 0, 0, (1, 1, 1, 1, 1, 1, 1)))
    key = (
        "movie_http_requests_total",
        frozenset({"method": "GET", "route": "/movies", "status": "200"}.items()),
    )
    assert scrape[key] == 3.0
    assert metrics.total(scrape, "movie_http_request_duration_seconds_bucket") == 7.0


def test_text_that_is_not_prometheus_is_a_parse_error() -> None:
    """An HTML page where metrics were expected is refused, not half-read."""
    with pytest.raises(metrics.MetricsParseError):
        metrics.parse("<html><body>Not Found</body></html>")


def test_increase_counts_a_reset_series_from_zero() -> None:
    """A counter that went down belongs to a restarted process: its new value is the increase."""
    before = metrics.parse(api_text(100, 0, 0, 0, 0, (0,) * 7))
    after = metrics.parse(api_text(5, 0, 0, 0, 0, (0,) * 7))
    assert metrics.increase(before, after, metrics.HTTP_REQUESTS) == 5.0


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    """10 observations: 5 up to 5 ms, 5 more up to 10 ms; the median is 5 ms, p90 9 ms."""
    buckets = [(0.005, 5.0), (0.01, 10.0), (float("inf"), 10.0)]
    assert metrics.quantile(0.5, buckets) == pytest.approx(0.005)
    assert metrics.quantile(0.9, buckets) == pytest.approx(0.009)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    """All that is known of a slow observation is that it exceeded the last bound."""
    assert metrics.quantile(0.99, [(0.25, 0.0), (float("inf"), 4.0)]) == 0.25


def test_quantile_without_observations_is_none() -> None:
    """Nothing happened in the interval: no latency, rather than 0 ms."""
    assert metrics.quantile(0.5, [(0.005, 0.0), (float("inf"), 0.0)]) is None
    assert metrics.quantile(0.5, []) is None


def test_api_rates_over_an_interval() -> None:
    """Between two scrapes 2 s apart: 20 requests (10 req/s), 2 of them 5xx and 4 429s; the
    cache served 6 of 8; latency from the bucket deltas only; /metrics itself left out."""
    before = metrics.parse(api_text(10, 0, 0, 2, 0, (5, 10, 10, 10, 10, 10, 10), scrapes=4))
    after = metrics.parse(
        api_text(24, 2, 4, 8, 2, (5, 15, 20, 30, 30, 30, 30), scrapes=6, in_progress=3)
    )
    rates = metrics.api_rates(before, after, 2.0)
    assert rates.requests_per_second == 10.0
    assert rates.error_ratio == 0.1
    assert rates.limited_ratio == 0.2
    assert rates.cache_hit_ratio == 0.75
    assert rates.in_progress == 3.0
    assert rates.breaker_open is False
    # 20 new observations: 5 in (5, 10] ms, 5 in (10, 25] ms, 10 in (25, 50] ms.
    assert rates.p50_ms == pytest.approx(25.0)
    assert rates.p99_ms == pytest.approx(49.5)


def test_api_rates_of_an_idle_interval_have_no_ratios() -> None:
    """No requests: 0 req/s and no ratio or latency (not 0 %, which would read as measured)."""
    scrape = metrics.parse(api_text(10, 1, 1, 1, 1, (1,) * 7))
    rates = metrics.api_rates(scrape, scrape, 1.0)
    assert rates.requests_per_second == 0.0
    assert (rates.error_ratio, rates.limited_ratio, rates.cache_hit_ratio) == (None, None, None)
    assert (rates.p50_ms, rates.p99_ms) == (None, None)


def test_worker_rates_over_an_interval() -> None:
    """Jobs per second, failed ratio, queue depth, running jobs, job latency and heartbeat age."""
    before = metrics.parse(worker_text(10, 0, 0, 0, (0, 0, 0, 0, 0, 10, 10)))
    after = metrics.parse(worker_text(13, 1, 5, 2, (0, 0, 0, 0, 0, 14, 14)))
    rates = metrics.worker_rates(before, after, 4.0, now=1002.5)
    assert rates.jobs_per_second == 1.0
    assert rates.failed_ratio == 0.25
    assert (rates.queue_depth, rates.running_jobs) == (5.0, 2.0)
    assert rates.job_p50_ms == pytest.approx(175.0)  # half of (0.1, 0.25] s
    assert rates.heartbeat_age_seconds == 2.5


def test_a_process_without_the_metrics_shows_none_not_zero() -> None:
    """An API scrape read as a worker (or an older build): gauges it lacks are None."""
    scrape = metrics.parse(api_text(1, 0, 0, 0, 0, (1,) * 7))
    rates = metrics.worker_rates(scrape, scrape, 1.0, now=0.0)
    assert (rates.queue_depth, rates.running_jobs, rates.heartbeat_age_seconds) == (None,) * 3
