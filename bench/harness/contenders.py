"""The contenders: the processes that read the events topic and write decisions, started and stopped by
the bench, each on its own fresh topics.

Each class knows the command of its process; the scripts it starts live in ``bench/contenders/`` and read
their common options with :func:`contender_parser`. The riskctl job runs from ``jobs/risk_job.py`` (the
MiniCluster, thread or process mode) or is submitted to the local standalone cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ROOT, free_port, log, process_env
from harness.kafka_io import Topics
from harness.sampling import session_pids
from riskctl.config import Settings


def contender_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line of a contender script (``bench/contenders/*.py``): the options every one of them
    takes, as :meth:`Contender.script` passes them; the script adds its own. The description is the first
    paragraph of ``doc`` (the script's docstring)."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--events-topic", required=True)
    ap.add_argument("--group-id", required=True)
    return ap


@dataclass
class Contender:
    """Processes that read the events topic and write decisions; the bench starts and stops them."""

    name: str
    parallelism: int
    settings: Settings
    topics: Topics
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    rest_port: int | None = None
    rules_table: str | None = None
    flink_options: list[str] = field(default_factory=list)  # --flink-option, for the riskctl jobs

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        """(argument list, extra environment) of each process to start."""
        raise NotImplementedError

    def script(self, name: str, group: str, *options: str) -> list[str]:
        """The command of the contender script ``bench/contenders/<name>``: the options every script takes
        (:func:`contender_parser`; the consumer group is ``<events topic>-<group>``), then its own."""
        return [
            sys.executable,
            str(ROOT / "bench" / "contenders" / name),
            "--bootstrap", self.settings.kafka_bootstrap,
            "--events-topic", self.topics.events,
            "--group-id", f"{self.topics.events}-{group}",
            *options,
        ]  # fmt: skip

    def start(self) -> None:
        """Start every process in its own session (so that a stop reaches its children), output to a log
        file per process in ``tmp``."""
        for i, (cmd, env) in enumerate(self.commands()):
            out = (self.tmp / f"{self.name}-{i}.log").open("wb")
            self.procs.append(
                subprocess.Popen(  # noqa: S603 - our own scripts, argument lists
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=process_env(env),
                    cwd=ROOT,
                )
            )

    @property
    def session(self) -> int | None:
        return self.procs[0].pid if self.procs else None  # start_new_session: the session id is the pid

    def check_alive(self) -> None:
        """Raise with the tail of its log if a process has exited: a crash is not a slow contender."""
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                tail = (self.tmp / f"{self.name}-{i}.log").read_text(errors="replace")[-3000:]
                msg = f"{self.name} exited with {p.returncode}:\n{tail}"
                raise RuntimeError(msg)

    def stop(self) -> None:
        """SIGTERM each process group, SIGKILL after 20 s; then SIGKILL whatever is left in each process's
        session: PyFlink's gateway JVM (the MiniCluster) runs in another process group of that session, and
        outlived a job process that had to be killed (1.3 GB and a few % of CPU each, for the runs after)."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)
                except ProcessLookupError:
                    pass
            kill_session(p.pid)  # start_new_session: the session id is the pid
        self.procs.clear()


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process left in session ``sid``; the pids killed."""
    killed = []
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def checkpoint_failures(overview: dict[str, Any]) -> list[str]:
    """Why a job's failed checkpoints failed, from Flink's REST ``/jobs/<id>/checkpoints``: the messages of
    those it still describes (its history keeps the last ten checkpoints, and the latest failure apart), and
    how many it only counts: refused at their trigger (e.g. the first one, due before every task runs, never
    gets an entry) or older than the history."""
    failed = [c for c in overview.get("history", []) if c.get("status") == "FAILED"]
    latest = (overview.get("latest") or {}).get("failed")
    if latest and all(c.get("id") != latest.get("id") for c in failed):
        failed.append(latest)
    reasons = sorted({str(c.get("failure_message") or "no message")[:300] for c in failed})
    unrecorded = (overview.get("counts", {}).get("failed") or 0) - len(failed)
    if unrecorded > 0:
        reasons.append(f"{unrecorded} without details (refused at trigger, or older than the history)")
    return reasons


#: the completed checkpoints the bench's summary takes (the latest ones): what Flink's REST history keeps by
#: default, so that a run with ``--timeline`` (which keeps more) summarises the same checkpoints
SUMMARISED_CHECKPOINTS = 10


class RiskctlJob(Contender):
    """The risk job (``jobs/risk_job.py``) on its own MiniCluster, thread mode, rules by MySQL CDC from a
    fresh rules table; RocksDB state metrics on, read back by :meth:`rocksdb`."""

    mode = "thread"
    #: the run installs a fresh rules table for it (``rules_table``)
    reads_rules = True

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        self.rest_port = free_port()
        options = [
            f"rest.port={self.rest_port}",
            "state.backend.rocksdb.metrics.estimate-live-data-size=true",
            "state.backend.rocksdb.metrics.estimate-num-keys=true",
            "state.backend.rocksdb.metrics.total-sst-files-size=true",
        ]
        if self.mode == "process":
            # process mode sends records to the Python worker in bundles, flushed every second by default: a
            # one-second latency floor. 10 ms is what a user who wants decisions in milliseconds would set.
            options += ["python.execution-mode=process", "python.fn-execution.bundle.time=10"]
        options += self.flink_options
        t = self.topics
        env = {
            "RISKCTL_JOB_EVENTS_TOPIC": t.events,
            "RISKCTL_JOB_DECISIONS_TOPIC": t.decisions,
            "RISKCTL_JOB_ALERTS_TOPIC": t.alerts,
            "RISKCTL_JOB_DEAD_LETTER_TOPIC": t.dead,
            "RISKCTL_JOB_RULE_STATUS_TOPIC": t.status,
            "RISKCTL_JOB_GROUP_ID": f"{t.events}-job",
            "RISKCTL_JOB_RULES_SOURCE": "cdc",
            "RISKCTL_JOB_RULES_TABLE": self.rules_table or "rules",
            "RISKCTL_JOB_CDC_SERVER_ID": _server_ids(),
            "RISKCTL_JOB_PARALLELISM": str(self.parallelism),
            "RISKCTL_JOB_CHECKPOINT_DIR": (self.tmp / f"chk-{self.name}").as_uri(),
            "RISKCTL_FLINK_OPTIONS": ";".join(options),
        }
        return [([sys.executable, str(ROOT / "jobs" / "risk_job.py")], env)]

    rest_timeout_s = 5.0

    def _rest(self, path: str, method: str = "GET") -> Any:
        """The job's Flink REST API (its MiniCluster's port, or the local cluster's)."""
        url = f"http://127.0.0.1:{self.rest_port}{path}"
        req = urllib.request.Request(url, method=method)  # noqa: S310 - our local REST endpoint
        with urllib.request.urlopen(req, timeout=self.rest_timeout_s) as r:  # noqa: S310
            body = r.read()
        return json.loads(body) if body else None

    def _decide_vertex(self) -> tuple[str, str]:
        """(job id, decide vertex id) of the one running job."""
        (job,) = [j["id"] for j in self._rest("/jobs")["jobs"] if j["status"] == "RUNNING"]
        (decide,) = [
            v["id"] for v in self._rest(f"/jobs/{job}")["vertices"] if v["name"].startswith("decide")
        ]
        return job, decide

    def checkpoints(self) -> dict[str, Any]:
        """How long the decide task paused for each of the last ten completed checkpoints (what Flink's REST
        history keeps by default; ``--timeline`` keeps more, and the summary still takes ten): the synchronous
        phase (the task stops deciding) and the barrier alignment, the slowest subtask of each checkpoint;
        summarised as median and max over those checkpoints."""
        job, decide = self._decide_vertex()
        overview = self._rest(f"/jobs/{job}/checkpoints")
        done = self._completed(job, decide, overview)[-SUMMARISED_CHECKPOINTS:]

        def med_max(key: str) -> dict[str, float | None]:
            s = sorted(c[key] for c in done)
            return {"p50": s[len(s) // 2] if s else None, "max": s[-1] if s else None}

        counts = overview.get("counts", {})
        return {
            "completed": counts.get("completed"),
            "failed": counts.get("failed"),
            "failed_reasons": checkpoint_failures(overview),
            "sampled": len(done),
            "sync_ms": med_max("sync_ms"),
            "alignment_ms": med_max("alignment_ms"),
            "end_to_end_ms": med_max("end_to_end_ms"),
        }

    def checkpoint_timeline(self) -> list[dict[str, Any]]:
        """Every completed checkpoint in Flink's REST history, oldest first (``bench.py --timeline``, which
        raises the history's size): see :meth:`_completed`."""
        job, decide = self._decide_vertex()
        return self._completed(job, decide, self._rest(f"/jobs/{job}/checkpoints"))

    def _completed(self, job: str, decide: str, overview: dict[str, Any]) -> list[dict[str, Any]]:
        """The completed checkpoints of ``overview`` (Flink's checkpoint statistics), oldest first: id,
        trigger time (epoch ms), end-to-end duration, and the decide task's synchronous and asynchronous
        phases, barrier alignment and start delay (ms, slowest subtask)."""
        out = []
        for c in overview.get("history", []):
            if c.get("status") != "COMPLETED":
                continue
            summary = self._rest(f"/jobs/{job}/checkpoints/details/{c['id']}/subtasks/{decide}")["summary"]
            duration = summary["checkpoint_duration"]
            out.append(
                {
                    "id": c["id"],
                    "trigger_ms": c["trigger_timestamp"],
                    "end_to_end_ms": c["end_to_end_duration"],
                    "sync_ms": duration["sync"]["max"],
                    "async_ms": duration["async"]["max"],
                    "alignment_ms": summary["alignment"]["duration"]["max"],
                    "start_delay_ms": summary["start_delay"]["max"],
                }
            )
        return sorted(out, key=lambda c: c["trigger_ms"])

    def rocksdb(self) -> dict[str, float]:
        """RocksDB's estimates for the engine's state (summed over subtasks), from the REST metrics."""
        get = self._rest
        job, decide = self._decide_vertex()
        listing = f"/jobs/{job}/vertices/{decide}/subtasks/metrics"
        wanted: list[str] = []
        for _ in range(15):  # the REST metric fetcher fills its cache on the first requests
            names = [m["id"] for m in get(listing)]
            wanted = [n for n in names if "rocksdb" in n.lower() and "engine" in n]
            if wanted:
                break
            time.sleep(1)
        if not wanted:
            log(f"  no RocksDB metrics for the engine state among {len(names)} metrics, e.g. {names[:8]}")
        out: dict[str, float] = {}
        if wanted:
            log(f"  RocksDB metrics: {wanted}")
            for m in get(f"{listing}?get={','.join(wanted)}&agg=sum"):
                metric = m["id"].rsplit(".", 1)[-1].removeprefix("rocksdb_")
                out[metric] = out.get(metric, 0.0) + float(m["sum"])
        return out


class PyFlinkFloor(RiskctlJob):
    """``bench/contenders/pyflink_floor.py``: level 3 of PyFlink's floor (bench/floor.py) between the risk
    job's own Kafka source and sink, in its environment (the same variables); no rules, so none are
    installed. Its Python operator is named ``decide``: the bench reads that thread and its checkpoints as
    the job's."""

    reads_rules = False

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        ((_, env),) = super().commands()
        return [([sys.executable, str(ROOT / "bench" / "contenders" / "pyflink_floor.py")], env)]


class RiskctlProcessJob(RiskctlJob):
    """The same job with ``python.execution-mode=process``."""

    mode = "process"


class ClusterJob(RiskctlJob):
    """The risk job submitted (``riskctl submit``) to the local standalone cluster, a slot per TaskManager."""

    job_id: str | None = None
    rest_timeout_s = 10.0

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        ((_, env),) = super().commands()
        self.rest_port = self.settings.stack.flink_rest_port
        env["RISKCTL_FLINK_OPTIONS"] = ";".join(
            o for o in env["RISKCTL_FLINK_OPTIONS"].split(";") if not o.startswith("rest.port=")
        )
        name = f"bench-{self.topics.events}"
        cmd = [
            str(Path(sys.executable).parent / "riskctl"),
            "submit",
            "-p",
            str(self.parallelism),
            "--name",
            name,
        ]
        return [(cmd, env)]

    def start(self) -> None:
        ((cmd, env),) = self.commands()
        log_file = self.tmp / f"{self.name}-submit.log"
        with log_file.open("wb") as out:
            res = subprocess.run(  # noqa: S603 - our own CLI
                cmd, stdout=out, stderr=subprocess.STDOUT, env=process_env(env), cwd=ROOT, check=False
            )
        if res.returncode != 0:
            msg = f"riskctl submit failed ({res.returncode}): {log_file.read_text(errors='replace')[-3000:]}"
            raise RuntimeError(msg)
        name = cmd[cmd.index("--name") + 1]
        jobs = self._rest("/jobs/overview")["jobs"]
        self.job_id = next(j["jid"] for j in jobs if j["name"] == name and j["state"] == "RUNNING")

    @property
    def session(self) -> int | None:
        return None  # the cluster's processes are sampled as their own roles

    def check_alive(self) -> None:
        if self.job_id is None:
            return
        state = self._rest(f"/jobs/{self.job_id}")["state"]
        if state not in ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING"):
            root = self._rest(f"/jobs/{self.job_id}/exceptions").get("root-exception", "")
            msg = f"{self.name}: job {self.job_id} is {state}: {str(root)[-3000:]}"
            raise RuntimeError(msg)

    def stop(self) -> None:
        if self.job_id is not None:
            try:
                self._rest(f"/jobs/{self.job_id}?mode=cancel", method="PATCH")
            except OSError as exc:
                log(f"could not cancel {self.job_id}: {exc}")
            self.job_id = None


class PlainLoop(Contender):
    """``bench/contenders/plain_loop.py``: a Kafka consumer loop around the pure engine; one process per
    unit of parallelism, in one consumer group."""

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        t = self.topics
        return [
            (
                self.script(
                    "plain_loop.py",
                    "plain",
                    "--decisions-topic",
                    t.decisions,
                    "--alerts-topic",
                    t.alerts,
                    "--dead-letter-topic",
                    t.dead,
                    "--rules-dir",
                    str(ROOT / "rules"),
                    "--stats-file",
                    str(self.tmp / f"{self.name}-stats-{i}.json"),
                ),  # fmt: skip
                {},
            )
            for i in range(self.parallelism)
        ]

    def stats(self) -> list[dict[str, Any]]:
        """What each process wrote to its ``--stats-file`` when it stopped (counts, state bytes per user)."""
        files = sorted(self.tmp.glob(f"{self.name}-stats-*.json"))
        return [json.loads(f.read_text()) for f in files]


class MatchRecognize(Contender):
    """``bench/contenders/match_recognize.py``: Flink SQL MATCH_RECOGNIZE for the brute-force rule alone."""

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        options = ["--out-topic", self.topics.decisions, "--parallelism", str(self.parallelism)]
        return [(self.script("match_recognize.py", "mr", *options), {})]


def _server_ids() -> str:
    """A fresh range of MySQL replica server ids for one CDC reader (a clash with another reader fails)."""
    start = 6000 + (uuid.uuid4().int % 3000) * 4
    return f"{start}-{start + 3}"


def cluster_running(settings: Settings) -> bool:
    """Whether the local cluster the cluster run needs is up already (two one-slot TaskManagers, thread mode:
    one interpreter each); SystemExit when it runs but cannot serve (fewer TaskManagers, or a job)."""
    from riskctl.stack.services import FlinkCluster

    settings.stack.flink_taskmanagers, settings.stack.flink_slots = 2, 1
    ov = FlinkCluster(settings).overview()
    if ov is not None and (
        int(str(ov.get("taskmanagers", 0))) < 2 or int(str(ov.get("jobs-running", 0))) > 0
    ):
        msg = (
            f"the local Flink cluster runs {ov.get('taskmanagers')} TaskManager(s) and "
            f"{ov.get('jobs-running')} job(s): stop it ('riskctl stack down') or run with --no-cluster"
        )
        raise SystemExit(msg)
    return ov is not None


def cluster_up(settings: Settings) -> list[int]:
    """The local cluster for the cluster run, started unless :func:`cluster_running`; its pids."""
    from riskctl.stack.services import FlinkCluster

    if not cluster_running(settings):
        log("starting the local Flink cluster: 2 TaskManagers with 1 slot each")
        env = {**os.environ, "RISKCTL_STACK_FLINK_TASKMANAGERS": "2", "RISKCTL_STACK_FLINK_SLOTS": "1"}
        riskctl = str(Path(sys.executable).parent / "riskctl")
        subprocess.run([riskctl, "stack", "up", "--flink"], env=env, check=True)  # noqa: S603
    return FlinkCluster(settings).pids()


def cluster_down(settings: Settings) -> None:
    """Stop the local cluster (the bench started it for the cluster run): what runs after it has the box."""
    from riskctl.stack.services import FlinkCluster

    log("stopping the local Flink cluster the bench started")
    FlinkCluster(settings).stop()


def cluster_process_name(pid: int) -> str:
    """Which of the local cluster's processes ``pid`` is, for the name of its sampling role."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return "taskmanager" if b"TaskManagerRunner" in cmdline else "jobmanager"
