"""deploy/prometheus: the Compose monitoring profile's config and rules are valid (promtool), and
every series the rules read is one the service contract documents."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

# PyYAML comes with the test tools (Schemathesis, uvicorn's extras); it ships no type stubs.
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONTRACT = ROOT / "docs" / "service-contract.md"
SERIES = re.compile(r"\bmovie_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found (apt-get install prometheus)")
    return found


@pytest.mark.parametrize(("check", "path"), [("config", "prometheus.yml"), ("rules", "rules.yml")])
def test_promtool_accepts_the_file(check: str, path: str) -> None:
    """`promtool check config|rules` passes (the config's rule file is checked with it)."""
    done = subprocess.run(
        [_promtool(), "check", check, path],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_read_only_series_the_contract_documents() -> None:
    """A renamed metric cannot leave a rule silently empty: every `movie_*` series a rule reads
    is in the contract's tables (histograms by their base name)."""
    contract = set(re.findall(r"`(movie_[a-z_]+)`", CONTRACT.read_text()))
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in SERIES.findall(rule["expr"])
    }
    undocumented = {
        name
        for name in used
        if name not in contract
        and not any(name.removesuffix(suffix) in contract for suffix in HISTOGRAM_SUFFIXES)
    }
    assert used
    assert not undocumented


def test_every_alert_says_what_is_wrong() -> None:
    """Each alert has a severity and a summary, and waits (`for`) before it fires."""
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    assert alerts
    for alert in alerts:
        assert alert["labels"]["severity"] in {"page", "ticket"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        assert alert["for"], alert["alert"]
