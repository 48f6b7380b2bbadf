"""``riskctl warm`` on the standalone cluster: a TaskManager that just joined imports the job's Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

from riskctl.config import PROJECT_ROOT
from riskctl.flink.warm import JOB_NAME, MARKER, idle_taskmanagers, taskmanagers
from riskctl.stack.process import terminate
from riskctl.stack.services import FlinkCluster


def _out_file(cluster: FlinkCluster, pid: int) -> str:
    """The stdout file of the TaskManager ``pid`` (its pid file's number names it)."""
    pid_file = next(f for f, p in cluster.taskmanager_pids().items() if p == pid)
    n = pid_file.stem.split("-")[1] if "-" in pid_file.stem else ""
    return str(cluster.dir / "log" / (f"taskmanager-{n}.out" if n else "taskmanager.out"))


def test_a_new_taskmanager_is_warmed_and_the_cli_reports_it(flink_cluster: FlinkCluster) -> None:
    cluster = flink_cluster
    pid = cluster.start_taskmanager()
    try:
        # a subtask on the new TaskManager: at once if no slot is free elsewhere, else once it registered
        res = cluster.warm(new_pid=pid, timeout=120)
        assert res.state == "FINISHED", res
        new_id = next(
            str(t["id"]) for t in taskmanagers(cluster.rest_url) if cluster.taskmanager_pid(t["id"]) == pid
        )
        # one subtask on each idle TaskManager and on the new one, and it ran the imports there
        assert new_id in res.warmed, res
        assert set(res.idle) <= set(res.warmed), res
        with open(_out_file(cluster, pid), encoding="utf-8", errors="replace") as out:
            assert f"{MARKER} {pid}" in out.read()
        with urllib.request.urlopen(f"{cluster.rest_url}/jobs/{res.job_id}", timeout=10) as resp:
            jobs = json.load(resp)
        assert jobs["name"] == JOB_NAME
        assert jobs["state"] == "FINISHED"

        # the command: every TaskManager is idle again, so it warms them all and says so as JSON
        idle = idle_taskmanagers(cluster.rest_url)
        done = subprocess.run(
            [sys.executable, "-m", "riskctl.cli.main", "warm", "--json", "--timeout", "120"],
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        doc = json.loads(done.stdout)
        assert doc["state"] == "FINISHED", doc
        assert sorted(doc["warmed"]) == sorted(idle) == sorted(doc["idle"]), doc
    finally:
        terminate(pid)
        for pid_file, p in list(cluster.taskmanager_pids().items()):
            if p == pid:
                pid_file.unlink(missing_ok=True)
