"""``python -m bench``: run the benchmark, write bench/results/, print the table."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench import ROOT
from bench.procs import BenchError
from bench.summary import BASELINE, METRICS_PAIR, VARIANTS

DEFAULTS = {
    "rounds": 5, "duration": 4, "warmup": 1, "jobs": 30, "calibration": 200, "cli_runs": 10,
}  # fmt: skip
QUICK = {"rounds": 1, "duration": 3, "warmup": 1, "jobs": 10, "calibration": 50, "cli_runs": 1}
# Two variants a few per cent apart on a shared machine: more, shorter paired rounds.
METRICS_ONLY = {**DEFAULTS, "rounds": 10, "duration": 3}
COMMAND = "uv run --group bench python -m bench"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line."""
    keys = ", ".join(v.key for v in VARIANTS)
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmark GET /movies of the product (cached, un-cached, before this work) against an "
            "in-memory FastAPI route, slowapi, fastapi-limiter, a naive middleware and bare "
            "Starlette; a mixed workload before/after; CLI start-up, refresh jobs and stack "
            "start-up. Writes bench/results/ and prints the tables. "
            "`python -m bench soak --help`: the soak mode."
        ),
    )
    p.add_argument("--quick", action="store_true", help="a ~2-3 minute smoke run (no Compose)")
    p.add_argument("--rounds", type=_positive, help="alternating rounds (default 5; quick 1)")
    p.add_argument("--duration", type=_positive, help="seconds per measurement (default 4)")
    p.add_argument("--warmup", type=_non_negative, help="warm-up seconds before each (default 1)")
    p.add_argument("--connections", type=_positive, default=50, help="wrk connections (50)")
    p.add_argument("--jobs", type=_non_negative, help="refresh jobs to time (30; 0 skips)")
    p.add_argument(
        "--variants",
        help=f"comma-separated subset (the baseline is always included): {keys}",
    )
    p.add_argument(
        "--only",
        choices=["metrics"],
        help="metrics: only the cached GET with metrics on and off (and the baseline), side by "
        "side, 10 rounds x 3 s unless told; nothing else runs; results go to "
        "bench/results/metrics/ (~2.5 min)",
    )
    p.add_argument("--no-mixed", action="store_true", help="skip the mixed workload")
    p.add_argument(
        "--no-before", action="store_true", help="skip everything 'before' (no worktree)"
    )
    p.add_argument(
        "--cli-runs", type=_non_negative, help="timed runs per CLI command (10; quick 1; 0 skips)"
    )
    p.add_argument("--no-startup", action="store_true", help="skip the time-to-healthy runs")
    p.add_argument("--no-compose", action="store_true", help="skip the Docker Compose start-ups")
    p.add_argument(
        "--no-install", action="store_true", help="do not apt-get install wrk when missing"
    )
    p.add_argument("--out", type=Path, help="output directory (bench/results)")
    return p


def soak_parser() -> argparse.ArgumentParser:
    """The ``soak`` subcommand's command line."""
    p = argparse.ArgumentParser(
        prog="python -m bench soak",
        description=(
            "Run the mixed workload against the local stack (movieops up --runtime local) for "
            "--minutes, sampling the API's RSS every 5 s; write bench/results/soak.{md,json,png}."
        ),
    )
    p.add_argument("--minutes", type=_positive, default=10, help="minutes of load (10)")
    p.add_argument(
        "--no-install", action="store_true", help="do not apt-get install wrk when missing"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="output directory")
    return p


def _variants(text: str | None, p: argparse.ArgumentParser) -> tuple[str, ...]:
    known = [v.key for v in VARIANTS]
    if not text:
        return tuple(known)
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = wanted - set(known)
    if unknown:
        p.error(f"unknown variant(s): {', '.join(sorted(unknown))} (choose from {known})")
    wanted.add(BASELINE)
    return tuple(k for k in known if k in wanted)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 0 on success, 1 when the benchmark could not run, 130 on ^C."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["soak"]:
        from bench import soak

        options = soak_parser().parse_args(arguments[1:])
        command = f"{COMMAND} {shlex.join(arguments)}"
        return soak.main(options.minutes, options.out, command, not options.no_install)
    p = parser()
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    out_dir: Path = args.out or ROOT / "bench" / "results"
    if args.only == "metrics":
        # Just the pair: nothing else shares the machine or the run's minutes.
        preset = QUICK if args.quick else METRICS_ONLY
        args.variants = ",".join(METRICS_PAIR)
        args.no_mixed = args.no_before = args.no_startup = args.no_compose = True
        args.jobs = args.cli_runs = 0
        out_dir = args.out or ROOT / "bench" / "results" / "metrics"

    def pick(value: int | None, name: str) -> int:
        return preset[name] if value is None else value

    from bench import report, runner  # heavy imports after argument errors are reported

    skip_reason = ""
    if args.no_compose:
        skip_reason = "skipped (--no-compose)"
    elif args.quick:
        skip_reason = "skipped (--quick)"
    config = runner.Config(
        rounds=pick(args.rounds, "rounds"),
        duration=pick(args.duration, "duration"),
        warmup=pick(args.warmup, "warmup"),
        connections=args.connections,
        threads=1,
        jobs=pick(args.jobs, "jobs"),
        calibration_requests=preset["calibration"],
        startup=not args.no_startup,
        compose=not skip_reason,
        compose_skip_reason=skip_reason,
        install_wrk=not args.no_install,
        out_dir=out_dir,
        variants=_variants(args.variants, p),
        mixed=not args.no_mixed,
        cli_runs=pick(args.cli_runs, "cli_runs"),
        before=not args.no_before,
    )
    extra = shlex.join(sys.argv[1:] if argv is None else argv)
    command = f"{COMMAND} {extra}".strip()
    try:
        results = runner.run(config, command)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every process the benchmark started was stopped", file=sys.stderr)
        return 130
    paths = report.write(results, config.out_dir)
    print()
    print(report.throughput_table(results.summaries))
    print()
    if results.mixed:
        print(report.mixed_table(results.mixed))
        print()
    if results.cli:
        print(report.cli_table(results.cli))
        print()
    print(report.targets_table(results.targets))
    print()
    overhead = report.metrics_overhead(results.summaries, results.targets, results.measurements)
    if overhead:
        print(overhead)
        print()
    minutes, seconds = divmod(round(results.run_seconds), 60)
    print(f"ran {minutes} min {seconds} s; wrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
