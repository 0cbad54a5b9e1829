"""The benchmark's unit tests follow the suite's rule: with MOVIEOPS_REQUIRE_ALL=1 (CI) a skip
fails, so CI must install the bench group the chart test needs."""

from __future__ import annotations

from tests.conftest import pytest_runtest_makereport

__all__ = ["pytest_runtest_makereport"]
