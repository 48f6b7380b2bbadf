"""Suite-wide rules. Under CI=true a skipped test is a failed test: the suite never quietly skips."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {report.longrepr}"


@pytest.fixture
def changes_environ() -> None:
    """Declares that the test (or a fixture it uses) changes ``os.environ`` on purpose, as building a Flink
    environment does (``PYTHONPATH``, ``FLINK_ENV_JAVA_OPTS`` for the JVM it starts): restored after it."""


@pytest.fixture(autouse=True)
def _environment_left_as_found(request: pytest.FixtureRequest) -> Generator[None, None, None]:
    """A test leaves ``os.environ`` as it found it: a variable it set and did not restore reaches every later
    test and the commands they run (a compiled core's path once made a replay print a warning on stderr, so a
    test comparing stderr failed or not depending on the order the tests ran in). What changed is put back;
    a test that did not declare it (:func:`changes_environ`) fails."""
    before = dict(os.environ)
    before.pop("PYTEST_CURRENT_TEST", None)  # pytest's own, set per phase
    yield
    after = dict(os.environ)
    after.pop("PYTEST_CURRENT_TEST", None)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        for key in changed:
            if key in before:
                os.environ[key] = before[key]
            else:
                del os.environ[key]
        if "changes_environ" not in request.fixturenames:
            pytest.fail(f"the test left os.environ changed: {', '.join(changed)}", pytrace=False)
