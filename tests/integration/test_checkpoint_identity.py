"""The job records its identity beside its checkpoints, and a restore compares it (riskctl.flink.checkpoints).

A real job on the MiniCluster: its checkpoint folder holds riskctl-job.json with the identity of the settings
it ran with; a restore of its checkpoint is accepted under those settings and refused (exit 2 from the
check, before any submission) under another decisions topic, unless --restore-foreign.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from riskctl.config import Settings, load_settings
from riskctl.errors import ConfigError
from riskctl.flink.checkpoints import check_start, completed_checkpoints, job_identity, recorded_identity
from tests.integration.support import ev, new_job, start_job, wait_rules

pytestmark = pytest.mark.integration


def test_a_real_job_records_its_identity_and_a_restore_checks_it(stack: Settings, tmp_path: Path) -> None:
    job = new_job(stack, tmp_path)
    start_job(
        job, tmp_path / "job.log", {"RISKCTL_JOB_PARALLELISM": "1", "FLINK_LOG_DIR": str(tmp_path / "fl")}
    )
    assert job.proc is not None
    try:
        wait_rules(job)
        u = job.user("id")
        job.send([ev(f"{u}-1", u, "login", 0)])
        job.decisions_for([f"{u}-1"], timeout=60)
        time.sleep(3)  # checkpoints every second
    finally:
        job.proc.stop()
    settings = load_settings(env={**os.environ, **job.env})
    identity = job_identity(settings)
    chk_dir = job.env["RISKCTL_JOB_CHECKPOINT_DIR"]
    found = completed_checkpoints(chk_dir, job.topics["events"], identity)
    assert found, f"no completed checkpoint of the job in {chk_dir}"
    recorded = recorded_identity(found[-1].path)
    assert isinstance(recorded, dict), f"no identity recorded beside {found[-1].path}"
    assert {k: recorded[k] for k in identity} == identity
    latest = found[-1].path.as_uri()
    assert check_start(chk_dir, job.topics["events"], latest, from_empty=False, identity=identity) is None
    other = {**identity, "decisions_topic": "another.decisions"}
    with pytest.raises(ConfigError, match="decisions_topic"):
        check_start(chk_dir, job.topics["events"], latest, from_empty=False, identity=other)
    assert (
        check_start(
            chk_dir, job.topics["events"], latest, from_empty=False, identity=other, restore_foreign=True
        )
        is None
    )
