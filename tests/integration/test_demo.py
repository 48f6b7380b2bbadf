"""``riskctl demo`` end to end as a user runs it, and Ctrl-C: nothing it started is left running.

Each run applies the rules to its own uuid-named rules table (``RISKCTL_JOB_RULES_TABLE``) and the demo
creates its own uuid-named topics. The stack is the session's (already running, so the demo leaves it up).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from riskctl.config import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def demo_env(stack: Settings) -> Iterator[dict[str, str]]:
    from riskctl.store.connection import connect
    from riskctl.store.migrations import drop_store

    table = f"t{uuid.uuid4().hex[:8]}_rules"
    yield {**os.environ, "RISKCTL_JOB_RULES_TABLE": table, "PYTHONUNBUFFERED": "1"}
    conn = connect(stack)
    try:
        drop_store(conn, table)
    finally:
        conn.close()


def _processes_with(marker: str) -> list[int]:
    """Pids whose environment names one of the demo's topics (the job, its JVM, any helper)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _assert_nothing_left(job_pid: int, marker: str) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(job_pid, 0)
    assert _processes_with(marker) == []


def test_demo_end_to_end_json_summary(demo_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "riskctl.cli.main", "demo",
         "--duration", "20", "--rate", "100", "--users", "300", "--seed", "5", "--json"],
        capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT, env=demo_env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    report = summary["report"]
    assert set(summary) >= {"sent", "latency_ms", "report", "topics", "job_startup_s", "seed"}
    assert summary["seed"] == 5 and summary["sent"] > 1500
    assert report["coverage"] >= 0.99, report
    assert report["attacks"] >= 5 and report["catch_rate"] >= 0.9, report["scenarios"]
    for s in report["scenarios"].values():
        assert set(s) >= {"attacks", "caught", "missed", "by_rule", "expected_rule"}
    assert report["false_positive_user_rate"] < 0.05, report["false_positives_by_rule"]
    lat = summary["latency_ms"]
    assert lat["count"] > 1500 and 0 <= lat["p50"] <= lat["p99"]
    assert "rules accepted" in proc.stderr and "decided" in proc.stderr  # live progress went to stderr
    job_pid = int(re.search(r"job starting on the MiniCluster \(pid (\d+)", proc.stderr).group(1))  # type: ignore[union-attr]
    _assert_nothing_left(job_pid, summary["topics"]["events"])


def test_ctrl_c_stops_the_job_and_leaves_no_process(demo_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "riskctl.cli.main", "demo", "--duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT, env=demo_env,
    )  # fmt: skip
    assert proc.stdout is not None
    job_pid = None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        m = re.search(r"job starting on the MiniCluster \(pid (\d+)", line)
        if m:
            job_pid = int(m.group(1))
            break
    assert job_pid is not None, "".join(lines)
    marker = _events_topic_of(job_pid)
    time.sleep(3)  # the job is starting: its JVM is being launched
    proc.send_signal(signal.SIGINT)
    try:
        # the demo's stop is bounded at about 40 s (10 s for SIGTERM, 10 s more after SIGKILL, 15 s for the
        # topics), and says how long each step took
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        for pid in (proc.pid, job_pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        pytest.fail(f"the demo was still stopping 120 s after Ctrl-C; its output:\n{''.join(lines)}{out}")
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out
    assert re.search(r"job stopped in \d+\.\d s", out), out
    _assert_nothing_left(job_pid, marker)


def _events_topic_of(pid: int) -> str:
    """The job's events topic, from its environment (read again for a moment: on a loaded machine the
    process's environ was once read empty right after the demo reported the pid)."""
    deadline = time.monotonic() + 10
    while True:
        found = [e.split("=", 1)[1] for e in _job_env(pid) if e.startswith("RISKCTL_JOB_EVENTS_TOPIC=")]
        if found or time.monotonic() > deadline:
            assert found, f"no RISKCTL_JOB_EVENTS_TOPIC in the environment of pid {pid}"
            return found[0]
        time.sleep(0.2)


def _job_env(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
