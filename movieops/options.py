"""The options of movieops' commands that need more than one line to declare: each declared once,
with the help text people read, so ``cli.py`` stays a list of commands."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class Database(StrEnum):
    """The stack's database (compose runtime)."""

    sqlite = "sqlite"
    postgres = "postgres"


# --- up / down -------------------------------------------------------------------------------
Replicas = Annotated[int, typer.Option(min=1, max=10, help="API replicas (behind the proxy).")]
DatabaseOption = Annotated[
    Database | None,
    typer.Option(
        "--database",
        help="sqlite (a file on a volume) or postgres (the compose postgres profile; compose "
        "runtime only). Default: what the last `up` used, else sqlite.",
        show_default=False,
    ),
]
HealthBudget = Annotated[
    float | None, typer.Option(min=1, help="Per-service health budget in seconds.")
]
Volumes = Annotated[
    bool, typer.Option("--volumes", "-v", help="Also delete the database and Redis data.")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting data.")]
Image = Annotated[
    str | None,
    typer.Option(
        help="Swarm: deploy this app image (a registry reference on multi-node swarms) "
        "instead of building one; a new image is a rolling update.",
    ),
]

# --- logs ------------------------------------------------------------------------------------
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")]
Since = Annotated[str | None, typer.Option(help="Only lines newer than 10m, 2h … or an ISO time.")]

# --- rate-limits -----------------------------------------------------------------------------
Client = Annotated[
    str | None, typer.Option(help="Only this client (IP; an IPv6 one means its /64).")
]
RoutePath = Annotated[
    str | None,
    typer.Option(help="Only this route: a template (/movies/{movie_id}) or a path on it."),
]
Limit = Annotated[
    int | None, typer.Option(min=1, help="The limit to compare with (default: settings).")
]
Count = Annotated[
    int | None, typer.Option(min=1, help="With --watch: stop after this many refreshes.")
]
Reset = Annotated[
    bool, typer.Option(help="Delete every counter of --client (lifts its limit now).")
]

# --- contract --------------------------------------------------------------------------------
Live = Annotated[
    bool,
    typer.Option(
        "--live",
        help="Run against the stack's own API (creates and deletes films there) instead of "
        "a disposable instance.",
    ),
]
ReportDir = Annotated[
    Path | None,
    typer.Option(
        help="JUnit report directory (default .movieops/reports/contract; the last 10 kept)."
    ),
]
ExemptToken = Annotated[
    str | None,
    typer.Option(
        help="With --live: the rate-limit exemption secret (default: MOVIEOPS_CONTRACT_TOKEN, "
        "else the one `movieops up` made; prefer the variable, argv shows in `ps`)."
    ),
]
SchemaTimeout = Annotated[
    float, typer.Option(min=1, help="Seconds to wait for the API and its schema.")
]
RunTimeout = Annotated[
    float, typer.Option(min=1, help="Stop the run (exit 6) after this many seconds.")
]

# --- top -------------------------------------------------------------------------------------
TopInterval = Annotated[
    float, typer.Option(min=0.2, max=60, help="Seconds between the two scrapes of each refresh.")
]
Once = Annotated[
    bool,
    typer.Option(
        "--once",
        help="One snapshot (two scrapes --interval apart), then exit; what happens anyway "
        "without a terminal.",
    ),
]
TopCount = Annotated[
    int | None,
    typer.Option(
        min=1, max=10_000, help="Stop after this many snapshots (printed one by one in a pipe)."
    ),
]
WorkerMetricsUrl = Annotated[
    str | None,
    typer.Option(help="Attach mode: the worker's metrics URL too (http://HOST:PORT/metrics)."),
]

# --- load ------------------------------------------------------------------------------------
Rate = Annotated[float, typer.Option(help="Target requests per second (at most 1000).")]
Duration = Annotated[
    float | None,
    typer.Option(
        help="Seconds to run (at most 3600; default 10 unless --requests).", show_default=False
    ),
]
Requests = Annotated[
    int | None, typer.Option(help="Stop after this many requests instead (at most 1000000).")
]
Concurrency = Annotated[int, typer.Option(help="Requests in flight at most (1-256).")]
Exempt = Annotated[
    bool,
    typer.Option(
        "--exempt",
        help="Send the stack's rate-limit exemption secret (a stack movieops runs) so the full "
        "rate goes through; without it the run respects the limit.",
    ),
]
MaxErrorRate = Annotated[
    float | None,
    typer.Option(help="Exit 11 if (5xx + no answer) / requests is above this (0-1)."),
]
MaxP99 = Annotated[
    float | None, typer.Option(help="Exit 11 if the p99 latency is above this (ms).")
]
Seed = Annotated[int | None, typer.Option(help="Seed of the request mix, to repeat a run.")]
