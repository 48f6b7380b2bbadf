"""Does the JobManager leak class loaders? Submit and cancel N jobs in a row, read Metaspace before/after.

Each submission gets a fresh user-code class loader in the JobManager (and the TaskManagers); a thread or a
static registry that keeps one of its classes alive (Connector/J's ``mysql-cj-abandoned-connection-cleanup``
thread, a JDBC driver registered in ``DriverManager``) keeps the whole class loader and its classes in
Metaspace after the job ends. The JobManager of the local cluster died of ``OutOfMemoryError: Metaspace``
at the 10th submission of the risk job before the fix (issue 11).

Two workloads:

- ``cdc`` (default, cheap): a Flink SQL job, MySQL CDC source on a rules table -> blackhole sink, submitted
  from this one Python process (a remote environment) with the job's connector jars; its split enumerator
  runs in the JobManager and connects to MySQL with Connector/J, which is what leaked.
- ``risk``: the risk job itself (``riskctl submit``; one Python client per submission, slower).

Between the rounds the JobManager runs a full GC (``jcmd <pid> GC.run``, the JobManager of the local stack
only: its pid file must be ours), so what Metaspace holds afterwards is what cannot be unloaded.

    export PYTHONPATH=$PWD
    .venv/bin/python bench/metaspace.py --jobs 50            # cheap CDC job
    .venv/bin/python bench/metaspace.py --workload risk --jobs 10

Prints one JSON line per sample and a summary; ``--out`` writes the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from riskctl.config import PROJECT_ROOT, Settings, load_settings
from riskctl.stack.process import read_pid
from riskctl.stack.services import FlinkCluster

METRICS = (
    "Status.JVM.Memory.Metaspace.Used",
    "Status.JVM.ClassLoader.ClassesLoaded",
    "Status.JVM.ClassLoader.ClassesUnloaded",
)


def _get(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - our own cluster's REST address
        body = resp.read()
    return json.loads(body) if body else None


def jm_metrics(rest: str) -> dict[str, float]:
    rows = _get(f"{rest}/jobmanager/metrics?get={','.join(METRICS)}")
    return {r["id"]: float(r["value"]) for r in rows}


def full_gc(pid: int, settle_s: float) -> None:
    """A full GC once the last job's class loader can go: Flink releases it a few seconds after the cancel,
    and a sample taken at once still counts the last one or two jobs' classes, noise that hides a leak."""
    time.sleep(settle_s)
    for _ in range(2):
        subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, check=True, timeout=60)  # noqa: S607
        time.sleep(1.0)


def job_class_loaders(pid: int) -> int:
    """How many user-code (job) class loaders the JobManager holds now (``jcmd VM.classloader_stats``).

    A finished job's loader can outlive a full GC for a while when only soft references (Java serialization's
    class caches) still reach it; those go when Metaspace runs short. A leak shows as a count that grows
    with every job.
    """
    out = subprocess.run(
        ["jcmd", str(pid), "VM.classloader_stats"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return sum(1 for line in out.splitlines() if line.rstrip().endswith("util.ChildFirstClassLoader"))


def sample(rest: str, jm_pid: int, label: str, settle_s: float) -> dict[str, Any]:
    full_gc(jm_pid, settle_s)
    m = jm_metrics(rest)
    row = {"sample": label, "metaspace_mb": round(m[METRICS[0]] / 2**20, 2)}
    row["job_class_loaders"] = job_class_loaders(jm_pid)
    row["classes_loaded"] = int(m[METRICS[1]])
    row["classes_unloaded"] = int(m[METRICS[2]])
    print(json.dumps(row), flush=True)
    return row


def wait_state(rest: str, job_id: str, states: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = _get(f"{rest}/jobs/{job_id}")["state"]
        if state in states:
            return state
        if state in {"FAILED"}:
            break
        time.sleep(0.3)
    msg = f"job {job_id} is {state}, wanted {sorted(states)}"
    raise RuntimeError(msg)


def cancel(rest: str, job_id: str) -> None:
    _get(f"{rest}/jobs/{job_id}?mode=cancel", method="PATCH")
    wait_state(rest, job_id, {"CANCELED"})


class CdcJobs:
    """The cheap workload: one PyFlink client process submitting a CDC -> blackhole SQL job each time."""

    def __init__(self, settings: Settings) -> None:
        from riskctl.flink.main import prepare

        self.settings = settings
        prepare(settings)  # the rules table exists

    def submit(self, i: int) -> str:
        from pyflink.common import Configuration
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.java_gateway import get_gateway
        from pyflink.table import StreamTableEnvironment

        from riskctl.flink.env import jar_urls
        from riskctl.flink.job import MysqlConn, _with

        s = self.settings
        # a remote environment: get_execution_environment() outside 'flink run' is always a local one
        gateway = get_gateway()
        config = Configuration()
        config.set_string("pipeline.name", f"metaspace-cdc-{i}")
        jars = [str(Path(u.removeprefix("file://"))) for u in jar_urls(s.flink.jars_dir)]
        j_jars = gateway.new_array(gateway.jvm.String, len(jars))
        for k, jar in enumerate(jars):
            j_jars[k] = jar
        j_env = gateway.jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment
        env = StreamExecutionEnvironment(
            j_env.createRemoteEnvironment(
                s.stack.host, s.stack.flink_rest_port, config._j_configuration, j_jars
            )
        )
        env.add_jars(*jar_urls(s.flink.jars_dir))  # the client's class path, for the planner
        t_env = StreamTableEnvironment.create(env)
        c = MysqlConn.of(s)
        server_id = 7000 + uuid.uuid4().int % 2000
        options = {
            "connector": "mysql-cdc",
            "hostname": c.host,
            "port": c.port,
            "username": c.user,
            "password": c.password,
            "database-name": c.database,
            "table-name": s.job.rules_table,
            "server-id": str(server_id),
            "server-time-zone": "UTC",
        }
        t_env.execute_sql(
            "CREATE TEMPORARY TABLE r (rule_id STRING, version INT, PRIMARY KEY (rule_id) NOT ENFORCED) "
            f"WITH ({_with(options)})"
        )
        t_env.execute_sql(
            "CREATE TEMPORARY TABLE b (rule_id STRING, version INT) WITH ('connector' = 'blackhole')"
        )
        client = t_env.execute_sql("INSERT INTO b SELECT rule_id, version FROM r").get_job_client()
        return str(client.get_job_id())


class RiskJobs:
    """The risk job itself, submitted with ``riskctl submit`` (a client process per submission)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def submit(self, i: int) -> str:
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "riskctl.cli.main",
                "submit",
                "--from-empty",
                "--name",
                f"metaspace-risk-{i}",
                "--set",
                f"job.group_id=metaspace-{uuid.uuid4().hex[:8]}",
                "--set",
                f"job.cdc_server_id={7000 + i * 4}-{7003 + i * 4}",
            ],
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
            timeout=300,
            check=False,
        )
        out = res.stdout + res.stderr
        ids = [w for line in out.splitlines() if "JobID" in line for w in line.split() if len(w) == 32]
        if res.returncode != 0 or not ids:
            msg = f"riskctl submit failed ({res.returncode}):\n{out[-3000:]}"
            raise RuntimeError(msg)
        return ids[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=50)
    p.add_argument("--workload", choices=("cdc", "risk"), default="cdc")
    p.add_argument("--run-seconds", type=float, default=2.0, help="how long each job runs before its cancel")
    p.add_argument("--settle-seconds", type=float, default=10.0, help="wait before a sample")
    p.add_argument("--every", type=int, default=10, help="sample Metaspace every N jobs")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    settings = load_settings()
    cluster = FlinkCluster(settings)
    jm_pid = read_pid(cluster.pid_files[0])
    if jm_pid is None or not cluster.healthy():
        print("the local Flink cluster is not running: riskctl stack up --flink", file=sys.stderr)
        return 2
    rest = cluster.rest_url
    jobs = CdcJobs(settings) if args.workload == "cdc" else RiskJobs(settings)
    # one job before the first sample: the classes every job loads into the parent class loader (Flink's
    # own, those in lib/) are loaded once; what grows after that is per job
    t0 = time.monotonic()
    first = jobs.submit(0)
    wait_state(rest, first, {"RUNNING"})
    time.sleep(args.run_seconds)
    cancel(rest, first)
    samples = [sample(rest, jm_pid, "after 1 job", args.settle_seconds)]
    for i in range(1, args.jobs):
        job_id = jobs.submit(i)
        wait_state(rest, job_id, {"RUNNING"})
        time.sleep(args.run_seconds)
        cancel(rest, job_id)
        if (i + 1) % args.every == 0 or i == args.jobs - 1:
            samples.append(sample(rest, jm_pid, f"after {i + 1} jobs", args.settle_seconds))
    alive = read_pid(cluster.pid_files[0]) == jm_pid and cluster.overview() is not None
    summary = {
        "workload": args.workload,
        "jobs": args.jobs,
        "seconds": round(time.monotonic() - t0, 1),
        "jobmanager_alive": alive,
        "metaspace_mb_first": samples[0]["metaspace_mb"],
        "metaspace_mb_last": samples[-1]["metaspace_mb"],
        "growth_mb": round(samples[-1]["metaspace_mb"] - samples[0]["metaspace_mb"], 2),
        "samples": samples,
        "cluster_lib_has_connector_j": any((cluster.home / "lib").glob("mysql-connector-j-*.jar")),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
