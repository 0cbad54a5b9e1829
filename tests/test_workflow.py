"""The GitHub workflow: actions pinned by commit, dependencies audited, images pinned."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML, via schemathesis

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
PINNED_USES = re.compile(
    r"^\s*(?:-\s+)?uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s+v\d+\.\d+\.\d+\s*$"
)


def _steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_version() -> None:
    """Every `uses:` names a 40-hex commit and says which release it is (`# vX.Y.Z`)."""
    assert WORKFLOWS
    for workflow in WORKFLOWS:
        lines = [line for line in workflow.read_text().splitlines() if "uses:" in line]
        steps = _steps(yaml.safe_load(workflow.read_text()))
        uses = [step["uses"] for step in steps if "uses" in step]
        assert len(lines) == len(uses) > 0, workflow.name
        for line in lines:
            assert PINNED_USES.match(line), f"{workflow.name}: not pinned by SHA: {line.strip()}"


def test_the_workflow_audits_the_locked_dependencies() -> None:
    """A step runs pip-audit over the locked requirements (uv export) and fails on findings."""
    document = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yaml").read_text())
    runs = [str(step.get("run", "")) for step in _steps(document)]
    audit = [run for run in runs if "pip-audit" in run]
    assert audit, "no pip-audit step"
    assert "uv export --locked" in audit[0]
    assert "--strict" in audit[0]


def test_service_and_compose_images_are_pinned_to_exact_versions() -> None:
    """Container images carry an exact x.y.z tag: any workflow service, compose.yaml, Dockerfile."""
    document = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yaml").read_text())
    images = [
        service["image"]
        for job in document["jobs"].values()
        for service in job.get("services", {}).values()
    ]
    compose = (ROOT / "compose.yaml").read_text()
    # (the app's own image is built from this repository, never pulled: no version to pin)
    images += [
        image
        for image in re.findall(r"image: \$\{\w+:-([^}]+)\}", compose)
        if not image.startswith("movieops-app:")
    ]
    images += re.findall(r"PYTHON_IMAGE: \$\{PYTHON_IMAGE:-([^}]+)\}", compose)
    images += re.findall(r"^ARG PYTHON_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert len(images) >= 4, images
    for image in images:
        # PostgreSQL's releases have two parts since version 10 (15.18 is one exact release);
        # Prometheus and redis_exporter tag theirs with a leading v (v2.42.0)
        exact = r"\d+\.\d+" if image.startswith("postgres:") else r"v?\d+\.\d+\.\d+"
        assert re.fullmatch(rf"[\w./-]+:{exact}(-[\w.-]+)?", image), image
    assert "postgres:15.18-bookworm" in images
    assert "prom/prometheus:v2.42.0" in images
