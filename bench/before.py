"""The product as it was before issue 12: a throw-away ``git worktree`` of ``BEFORE_REV`` with a
virtualenv of its own, so the same run can measure "before" next to "after".

Everything here degrades to a reason instead of an error: without git history or uv the report
says why the before variants were skipped, and the run goes on. The worktree is removed on the
way out (``git worktree remove --force``), on success, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import ROOT
from bench.procs import run_command

#: The last commit before the issue 12 work (main when it started).
BEFORE_REV = "27deb58"
SYNC_TIMEOUT_S = 600


@dataclass(frozen=True)
class BeforeTree:
    """A checked-out ``BEFORE_REV`` with its own venv."""

    rev: str  # the full commit hash
    root: Path

    @property
    def python(self) -> Path:
        """The worktree venv's interpreter."""
        return self.root / ".venv" / "bin" / "python"

    @property
    def movieops(self) -> Path:
        """The worktree venv's ``movieops`` entry point."""
        return self.root / ".venv" / "bin" / "movieops"


@dataclass(frozen=True)
class BeforeStatus:
    """The tree when it could be prepared, else why not (``rev`` is known as soon as git is)."""

    tree: BeforeTree | None
    rev: str
    reason: str = ""


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return lines[-1][:200] if lines else f"exit status {done.returncode}"


def _full_rev(rev: str) -> tuple[str, str]:
    """(full hash, "") or ("", reason)."""
    if shutil.which("git") is None:
        return "", "git is not installed"
    try:
        done = run_command(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "", "git rev-parse took over 30 s"
    if done.returncode != 0 or not done.stdout.strip():
        return "", f"commit {rev} is not in this clone's history (a shallow clone?)"
    return done.stdout.strip(), ""


@contextlib.contextmanager
def before_tree(rev: str = BEFORE_REV, *, enabled: bool = True) -> Iterator[BeforeStatus]:
    """Check ``rev`` out in a temporary worktree and ``uv sync`` a venv there; always clean up."""
    full, reason = _full_rev(rev)
    if not enabled:
        yield BeforeStatus(None, full, "skipped (not asked for)")
        return
    if reason:
        yield BeforeStatus(None, full, reason)
        return
    uv = shutil.which("uv")
    if uv is None:
        yield BeforeStatus(None, full, "uv is not installed (the before tree needs its own venv)")
        return
    parent = Path(tempfile.mkdtemp(prefix="movieops-bench-before-"))
    root = parent / "tree"
    added = False
    try:
        print(f"before: checking out {full[:12]} and syncing its venv", flush=True)
        try:
            done = run_command(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(root), full],
                timeout=120,
            )
            added = done.returncode == 0
            if not added:
                yield BeforeStatus(None, full, f"git worktree add failed: {_last_line(done)}")
                return
            env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(root / ".venv")}
            env.pop("VIRTUAL_ENV", None)  # uv warns when it does not match the project's
            done = run_command(
                [uv, "sync", "--frozen", "--quiet", "--group", "bench"],
                env=env,
                cwd=root,
                timeout=SYNC_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            yield BeforeStatus(None, full, "preparing the before tree timed out")
            return
        if done.returncode != 0:
            yield BeforeStatus(None, full, f"uv sync in the before tree failed: {_last_line(done)}")
            return
        yield BeforeStatus(BeforeTree(full, root), full)
    finally:
        if added:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run_command(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(root)],
                    timeout=60,
                )
        shutil.rmtree(parent, ignore_errors=True)
