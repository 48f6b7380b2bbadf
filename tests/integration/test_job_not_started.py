"""``riskctl run`` when Flink refuses the job before it runs: one ``error:`` line naming what Flink said,
never py4j's traceback of a Java one (60-120 lines; found in review).

- a ``job.restore_from`` that passes riskctl's own checks (it holds a ``_metadata`` that names the job's
  events topic) but that Flink cannot restore: a ``_metadata`` cut short after the source's state ended the
  command with ``Py4JJavaError ... java.io.EOFException``; now exit 1, as a job that fails;
- a ``flink.options`` value Flink cannot parse (``execution.checkpointing.interval=abc``): a refused setting,
  exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from riskctl.config import Settings
from riskctl.flink.checkpoints import split_marker
from tests.helpers import run_riskctl
from tests.integration.support import file_rules_env, job_topics

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, topics: dict[str, str], **settings: str) -> tuple[int, str, list[str]]:
    """``riskctl run`` with the job's own topics and ``settings`` (RISKCTL_* variables): exit code, stderr and
    its ``error:`` lines."""
    res = run_riskctl("run", env={**file_rules_env(tmp_path, topics), **settings}, timeout=180)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    return res.returncode, res.stderr, errors


def test_a_checkpoint_flink_cannot_restore_ends_run_with_one_line(stack: Settings, tmp_path: Path) -> None:
    topics = job_topics("not-started")
    chk = tmp_path / "old" / ("f" * 32) / "chk-3"
    chk.mkdir(parents=True)
    # not Flink's metadata (no magic number), but the events topic as the Kafka source's state holds it
    (chk / "_metadata").write_bytes(b"\x00\x01cut short" + split_marker(topics["events"]) + bytes(20))
    code, stderr, errors = _run(tmp_path, topics, RISKCTL_JOB_RESTORE_FROM=chk.as_uri())
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "Py4JJavaError" not in stderr, stderr[-3000:]
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(
        f"error: the job could not start (restoring job.restore_from '{chk.as_uri()}'): "
    )
    assert "magic number" in errors[0].lower() or "Exception" in errors[0], errors[0]


def test_a_flink_option_flink_cannot_parse_is_a_refused_setting(stack: Settings, tmp_path: Path) -> None:
    code, stderr, errors = _run(
        tmp_path,
        job_topics("not-started"),
        RISKCTL_FLINK_OPTIONS="rest.port=0;execution.checkpointing.interval=abc",
    )
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr and "Py4JJavaError" not in stderr, stderr[-3000:]
    assert errors == [
        "error: Flink refused the job's configuration (flink.options included): "
        "java.lang.IllegalArgumentException: Could not parse value 'abc' for key "
        "'execution.checkpointing.interval'."
    ], stderr[-3000:]
