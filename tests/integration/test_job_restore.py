"""``riskctl run`` with a ``job.restore_from`` that passes riskctl's own checks (it holds a ``_metadata`` that
names the job's events topic) but that Flink cannot restore: one ``error:`` line naming the checkpoint and
Flink's reason, exit 1, never py4j's Java trace of 80-120 lines (found in review: a ``_metadata`` cut short
after the source's state ended the command with ``Py4JJavaError ... java.io.EOFException``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from riskctl.config import PROJECT_ROOT, Settings
from riskctl.flink.checkpoints import split_marker

pytestmark = pytest.mark.integration


def test_a_checkpoint_flink_cannot_restore_ends_run_with_one_line(stack: Settings, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = {k: f"test-restore-{k}-{suffix}" for k in ("events", "decisions", "alerts", "dead", "status")}
    chk = tmp_path / "old" / ("f" * 32) / "chk-3"
    chk.mkdir(parents=True)
    # not Flink's metadata (no magic number), but the events topic as the Kafka source's state holds it
    (chk / "_metadata").write_bytes(b"\x00\x01cut short" + split_marker(topics["events"]) + bytes(20))
    env = {
        **os.environ,
        "RISKCTL_JOB_RULES_SOURCE": "file",
        "RISKCTL_JOB_RULES_DIR": str(PROJECT_ROOT / "rules"),
        "RISKCTL_JOB_EVENTS_TOPIC": topics["events"],
        "RISKCTL_JOB_DECISIONS_TOPIC": topics["decisions"],
        "RISKCTL_JOB_ALERTS_TOPIC": topics["alerts"],
        "RISKCTL_JOB_DEAD_LETTER_TOPIC": topics["dead"],
        "RISKCTL_JOB_RULE_STATUS_TOPIC": topics["status"],
        "RISKCTL_JOB_GROUP_ID": f"g-{suffix}",
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp_path / "chk").as_uri(),
        "RISKCTL_JOB_RESTORE_FROM": chk.as_uri(),
    }
    res = subprocess.run(
        [sys.executable, "-m", "riskctl.cli.main", "run"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "Py4JJavaError" not in res.stderr, res.stderr[-3000:]
    assert len(errors) == 1, res.stderr[-3000:]
    assert errors[0].startswith(
        f"error: the job could not start (restoring job.restore_from '{chk.as_uri()}'): "
    )
    assert "magic number" in errors[0].lower() or "Exception" in errors[0], errors[0]
