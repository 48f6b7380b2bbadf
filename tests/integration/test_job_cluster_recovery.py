"""The risk job on the standalone cluster at parallelism 2; killed, then restored from a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import PROJECT_ROOT, Settings
from tests.integration.support import Job, S, ev, new_job, start_job, wait_rules

pytestmark = pytest.mark.integration


def _brute_force_and_velocity(job: Job) -> None:
    users = [job.user("c-bf") for _ in range(4)]  # several users, so keys land on both subtasks
    events: list[dict[str, Any]] = []
    for u in users:
        events += [ev(f"{u}-{i}", u, "login", 2 * i * S, success=i == 3, device_id="d") for i in range(4)]
        events += [
            ev(f"{u}-t{i}", u, "transfer", (10 + i) * S, amount=a) for i, a in enumerate((30_000, 25_000))
        ]
    job.send(events)
    d = job.decisions_for([e["event_id"] for e in events], timeout=120)
    for u in users:
        assert d[f"{u}-3"]["action"] == "REJECT"
        assert [r["id"] for r in d[f"{u}-3"]["rules"]][0] == "brute_force_login"
        assert d[f"{u}-t0"]["action"] == "PASS" and d[f"{u}-t1"]["action"] == "REVIEW"


@pytest.mark.cluster
def test_job_on_standalone_cluster_parallelism_2(stack: Settings, flink_cluster: Any, tmp_path: Path) -> None:
    job = new_job(stack, tmp_path)
    env = {**os.environ, **job.env, "FLINK_CONF_DIR": str(flink_cluster.home / "conf")}
    res = subprocess.run(
        [sys.executable, "-m", "riskctl.cli.main", "submit", "-p", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=PROJECT_ROOT,
    )
    out = res.stdout + res.stderr
    ids = [w for line in out.splitlines() if "JobID" in line for w in line.split() if len(w) == 32]
    assert res.returncode == 0 and ids, out[-3000:]
    job_id = ids[-1]
    try:
        wait_rules(job)
        _brute_force_and_velocity(job)
        with urllib.request.urlopen(f"{flink_cluster.rest_url}/jobs/{job_id}", timeout=10) as resp:  # noqa: S310
            info = json.load(resp)
        assert info["state"] == "RUNNING"
        decide = next(v for v in info["vertices"] if v["name"].startswith("decide"))
        assert decide["parallelism"] == 2
        # its RocksDB is in the TaskManagers' own folders: the folder riskctl gives a MiniCluster is not in
        # the job's configuration, else the TaskManagers would use it and the next run remove it under them
        instances = f"job_{job_id}_op_*"
        assert len(list(flink_cluster.work_dir.glob(f"tm_*/tmp/{instances}"))) == 2, flink_cluster.work_dir
        assert not list(Path(stack.stack.dir).glob(f"minicluster/*/rocksdb/{instances}"))
    finally:
        req = urllib.request.Request(f"{flink_cluster.rest_url}/jobs/{job_id}?mode=cancel", method="PATCH")
        urllib.request.urlopen(req, timeout=10).close()  # noqa: S310


def _latest_checkpoint(root: Path) -> Path | None:
    done = [p for p in root.glob("*/chk-*") if (p / "_metadata").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def test_kill_and_restore_from_checkpoint_keeps_features_and_decisions(
    stack: Settings, tmp_path: Path
) -> None:
    job = new_job(stack, tmp_path)
    log = tmp_path / "job.log"
    start_job(job, log)
    u = job.user("rec")
    try:
        wait_rules(job)
        before = [
            ev(f"{u}-1", u, "transfer", 0, amount=30_000),
            ev(f"{u}-2", u, "transfer", S, amount=15_000),
        ]
        job.send(before)
        d = job.decisions_for([e["event_id"] for e in before])
        assert [d[e["event_id"]]["action"] for e in before] == ["PASS", "PASS"]
        time.sleep(3)  # checkpoints every second: the sum of 45,000 is in a completed checkpoint
        os.killpg(job.proc.proc.pid, signal.SIGKILL)
        job.proc.proc.wait(timeout=30)
    except BaseException:
        job.proc.stop()
        raise
    # events produced while the job is down are decided after the restore, none is lost
    while_down = [
        ev(f"{u}-3", u, "transfer", 2 * S, amount=6_000),
        ev(f"{u}-4", u, "login", 3 * S, success=True),
    ]
    job.send(while_down)
    chk = _latest_checkpoint(Path(job.env["RISKCTL_JOB_CHECKPOINT_DIR"].removeprefix("file://")))
    assert chk is not None, "no completed checkpoint was retained"
    start_job(job, log, {"RISKCTL_JOB_RESTORE_FROM": chk.as_uri()})
    try:
        d = job.decisions_for([e["event_id"] for e in while_down], timeout=240)
        crossing = d[f"{u}-3"]
        assert crossing["action"] == "REVIEW"  # 30,000 + 15,000 + 6,000: the sum survived the crash
        (fired,) = [r for r in crossing["rules"] if r["id"] == "transfer_velocity"]
        assert fired["evidence"]["features"]["transfer_sum_5m"] == 51_000
    finally:
        job.proc.stop()
