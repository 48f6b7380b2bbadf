"""Every figure of the side-by-side benchmark, in one run: riskctl against what a user would pick instead.

    .venv/bin/python bench/bench.py --quick      # a few minutes: small workload, short phases
    .venv/bin/python bench/bench.py              # the full run (about half an hour on 2 cores)

Writes ``bench/results/bench.json`` (every figure, the machine and the command), ``bench/results/bench.md``
(tables) and PNG plots (``bench_latency.png``: latency percentiles against offered rate, per contender;
``bench_throughput.png``: maximum sustained throughput per contender). Progress goes to stderr.

Workload: the simulator's traffic (``riskctl.sim``) with attacks mixed in, 100,000 users with Zipf-skewed
activity, generated once into ``bench/.work/`` (JSON lines) and loaded into Kafka, so every contender reads
the same records with the same rules (``rules/``).

Contenders (each on its own fresh topics, started from its own process):

* ``riskctl-thread``: the risk job on the embedded MiniCluster, thread mode (the default), rules by MySQL CDC.
* ``riskctl-process``: the same job with ``python.execution-mode=process``.
* ``plain-loop``: a plain Python Kafka consumer loop running the same pure engine with in-memory dicts
  (``bench/contenders/plain_loop.py``); at parallelism 2, two such processes in one consumer group.
* ``match-recognize``: Flink SQL ``MATCH_RECOGNIZE`` (Java CEP) for the brute-force rule only, as the JVM
  reference; checked against riskctl's brute-force hits on the same records.

Figures: (a) maximum sustained throughput, Kafka in to decisions out, parallelism 1 and 2 (events preloaded,
then the contender starts: decisions/s from the first to the last decision); (b) latency from produce to
decision visible at fixed offered rates (1k, 5k events/s, 80% of the contender's maximum); (c) rule
propagation, MySQL commit to the first decision made with the new version, over 20+ edits; (d) RocksDB state
bytes per active user (RocksDB's own estimates, through the Flink REST metrics); (e) the pure engine's
events/s on the same workload; (f) CPU and memory of every process during each contender's run.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from riskctl.config import Settings, load_settings  # noqa: E402
from riskctl.kafka_admin import ensure_topics  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"
PROBE_RULE = "bench_probe"
PROBE_TYPE = "bench_probe"
EXTRA_FLINK_OPTIONS: list[str] = []  # --flink-option, for experiments


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    if not values:
        return None
    s = sorted(values)
    rank = math.ceil(p * len(s) / 100 - 1e-9)  # the epsilon: 99 * 100 / 100 is 99.00000000000001
    return s[min(len(s), max(1, rank)) - 1]


def percentiles(values: list[float]) -> dict[str, float | None]:
    out = {f"p{p}".replace(".", "_"): pct(values, p) for p in (50, 90, 99, 99.9)}
    out["max"] = max(values) if values else None
    return {k: (round(v, 1) if v is not None else None) for k, v in out.items()}


# -- the plan -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    users: int
    warmup_events: int  # decided first, from a cold start (JIT compilation, caches): the cold figure
    throughput_events: int  # preloaded behind them, drained by the warmed-up contender: the sustained figure
    throughput_limit_s: float  # stop measuring a contender's drain after this long
    phase_s: float  # length of one fixed-rate latency phase
    rates: tuple[int, ...]
    edits: int
    engine_events: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(100_000, 10_000, 20_000, 60, 10, (200, 1000, 5000), 20, 20_000)
        return cls(100_000, 30_000, 100_000, 180, 30, (200, 1000, 5000), 25, 100_000)

    def events_needed(self) -> int:
        reserve_for_80pct = 10_000 * self.phase_s  # up to 10k events/s at 80% of a contender's maximum
        return int(
            self.warmup_events + self.throughput_events + sum(self.rates) * self.phase_s + reserve_for_80pct
        )


# -- workload -----------------------------------------------------------------------------------------
def workload(users: int, events: int, seed: int = 42) -> list[bytes]:
    """The simulator's events (attacks included, Zipf 1.0 activity), one JSON document each, cached."""
    from riskctl.sim import SimConfig, Simulator

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"workload-u{users}-n{events}-s{seed}.jsonl"
    larger = [
        f
        for f in WORK.glob(f"workload-u{users}-n*-s{seed}.jsonl")
        if int(f.name.split("-n", 1)[1].split("-", 1)[0]) >= events
    ]
    if larger:
        path = min(larger, key=lambda f: f.stat().st_size)  # a larger file: its first events are as good
    else:
        log(f"generating {events:,} events for {users:,} users into {path.relative_to(ROOT)}")
        rate = 1000.0
        config = SimConfig(
            users=users,
            rate=rate,
            duration_s=events / rate * 1.1 + 5,
            attack_fraction=0.02,
            seed=seed,
            start_ts=1_700_000_000_000,
            zipf=1.0,
        )
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for n, e in enumerate(Simulator(config)):
                if n >= events:
                    break
                out.write(json.dumps(e, separators=(",", ":")) + "\n")
        tmp.replace(path)
    lines = path.read_bytes().splitlines()
    if len(lines) < events:
        msg = f"{path} has {len(lines)} events, fewer than {events}: delete it and run again"
        raise SystemExit(msg)
    return lines[:events]


def key_of(raw: bytes) -> tuple[bytes, str]:
    doc = json.loads(raw)
    return str(doc["user_id"]).encode(), str(doc["event_id"])


# -- Kafka I/O -----------------------------------------------------------------------------------------
def producer(bootstrap: str, *, linger_ms: int) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=linger_ms,
        acks=1,
        batch_size=256 * 1024,
        max_request_size=4 << 20,
    )


def fast_producer(bootstrap: str, *, linger_ms: int) -> Any:
    """The load generator's producer: librdkafka (confluent-kafka), so that generating 5,000 events/s costs
    the box a few percent of a core, not the 70% that kafka-python took from the contenders (bench.md)."""
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "acks": 1,
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def preload(bootstrap: str, topic: str, records: list[bytes]) -> float:
    t0 = time.time()
    prod = fast_producer(bootstrap, linger_ms=20)
    for raw in records:
        key, _ = key_of(raw)
        prod.produce(topic, raw, key=key)
        prod.poll(0)
    if prod.flush(60) != 0:
        msg = f"could not preload {topic}: records still unsent after 60 s"
        raise RuntimeError(msg)
    return time.time() - t0


class Reader(threading.Thread):
    """Reads a decisions topic from the start: the first receive time per event id, and chosen values.

    librdkafka (confluent-kafka) for the same reason as :func:`fast_producer`: the reader shares the box."""

    def __init__(
        self, bootstrap: str, topic: str, *, keep: Callable[[str, bytes], bool] | None = None
    ) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",  # offsets are never committed
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.keep = keep
        self.recv: dict[str, float] = {}
        self.created: dict[str, int] = {}  # the decision record's timestamp: the broker's append time (ms)
        self.kept: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.duplicates = 0
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            # librdkafka waits for the whole timeout unless the batch fills: keep it short (latency "read")
            batch = self.consumer.consume(num_messages=5000, timeout=0.005)
            now = time.time()
            with self.lock:
                for m in batch:
                    if m.error():
                        continue
                    raw_key, value = m.key(), m.value()
                    key = raw_key.decode() if raw_key else json.loads(value)["event_id"]
                    if key in self.recv:
                        self.duplicates += 1
                    else:
                        self.recv[key] = now
                        self.created[key] = m.timestamp()[1]
                    if self.keep is not None and self.keep(key, value):
                        self.kept.setdefault(key, []).append((now, json.loads(value)))
        self.consumer.close()

    def count(self) -> int:
        with self.lock:
            return len(self.recv)

    def decided(self, ids: list[str]) -> int:
        """How many of ``ids`` have a decision."""
        with self.lock:
            recv = self.recv
            return sum(1 for k in ids if k in recv)

    def times(self) -> dict[str, float]:
        with self.lock:
            return dict(self.recv)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=10)


# -- resource sampling ---------------------------------------------------------------------------------
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc(pid: int) -> tuple[str, int, float, int] | None:
    """(comm, session id, cpu seconds, rss bytes) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2 :].split()
    session = int(rest[3])
    cpu = (int(rest[11]) + int(rest[12])) / CLK
    rss = int(rest[21]) * PAGE
    return comm, session, cpu, rss


class Sampler(threading.Thread):
    """Once a second: CPU time and RSS of named processes (a role each) and of a contender's whole session."""

    def __init__(self, roles: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.roles = dict(roles)
        self.session: int | None = None
        self.samples: list[tuple[float, dict[str, tuple[float, int]]]] = []
        self.stop_flag = threading.Event()

    def watch_session(self, sid: int | None) -> None:
        self.session = sid

    def _snapshot(self) -> dict[str, tuple[float, int]]:
        out: dict[str, tuple[float, int]] = {}
        for role, pid in self.roles.items():
            p = _proc(pid)
            if p is not None:
                out[role] = (p[2], p[3])
        if self.session is not None:
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                p = _proc(int(entry))
                if p is None or p[1] != self.session:
                    continue
                role = "contender " + ("JVM" if p[0] == "java" else p[0])
                cpu, rss = out.get(role, (0.0, 0))
                out[role] = (cpu + p[2], rss + p[3])
        return out

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.samples.append((time.monotonic(), self._snapshot()))
            self.stop_flag.wait(1.0)

    def window(self, t0: float, t1: float) -> dict[str, dict[str, float]]:
        """Average CPU (% of one core) and peak RSS (MB) per role between two monotonic times."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        roles = {role for _, snap in inside for role in snap}
        out: dict[str, dict[str, float]] = {}
        for role in sorted(roles):
            seen = [(t, snap[role]) for t, snap in inside if role in snap]
            if len(seen) < 2:
                continue
            (ta, (cpu_a, _)), (tb, (cpu_b, _)) = seen[0], seen[-1]
            out[role] = {
                "cpu_pct": round((cpu_b - cpu_a) / (tb - ta) * 100, 1),
                "rss_mb_peak": round(max(rss for _, (_, rss) in seen) / 2**20, 1),
                "seconds": round(tb - ta, 1),
            }
        return out

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=5)


# -- contenders -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Topics:
    events: str
    decisions: str
    alerts: str
    dead: str
    status: str

    @classmethod
    def fresh(cls, tag: str) -> Topics:
        run = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
        return cls(f"{run}-events", f"{run}-decisions", f"{run}-alerts", f"{run}-dead", f"{run}-status")

    def all(self) -> list[str]:
        return [self.events, self.decisions, self.alerts, self.dead, self.status]


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

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        raise NotImplementedError

    def start(self) -> None:
        for i, (cmd, env) in enumerate(self.commands()):
            out = (self.tmp / f"{self.name}-{i}.log").open("wb")
            self.procs.append(
                subprocess.Popen(  # noqa: S603 - our own scripts, argument lists
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, **env},
                    cwd=ROOT,
                )
            )

    @property
    def session(self) -> int | None:
        return self.procs[0].pid if self.procs else None  # start_new_session: the session id is the pid

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                tail = (self.tmp / f"{self.name}-{i}.log").read_text(errors="replace")[-3000:]
                msg = f"{self.name} exited with {p.returncode}:\n{tail}"
                raise RuntimeError(msg)

    def stop(self) -> None:
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
        self.procs.clear()


class RiskctlJob(Contender):
    mode = "thread"

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
        options += EXTRA_FLINK_OPTIONS
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

    def rocksdb(self) -> dict[str, float]:
        """RocksDB's estimates for the engine's state (summed over subtasks), from the REST metrics."""
        base = f"http://127.0.0.1:{self.rest_port}"

        def get(path: str) -> Any:
            with urllib.request.urlopen(base + path, timeout=5) as r:  # noqa: S310 - our local REST endpoint
                return json.load(r)

        (job,) = [j["id"] for j in get("/jobs")["jobs"] if j["status"] == "RUNNING"]
        vertices = get(f"/jobs/{job}")["vertices"]
        (decide,) = [v["id"] for v in vertices if v["name"].startswith("decide")]
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


class RiskctlProcessJob(RiskctlJob):
    mode = "process"


class ClusterJob(RiskctlJob):
    """The risk job submitted (``riskctl submit``) to the local standalone cluster, a slot per TaskManager."""

    job_id: str | None = None

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

    def _rest(self, path: str, method: str = "GET") -> Any:
        url = f"http://127.0.0.1:{self.settings.stack.flink_rest_port}{path}"
        req = urllib.request.Request(url, method=method)  # noqa: S310 - the local cluster's REST endpoint
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            body = r.read()
        return json.loads(body) if body else None

    def start(self) -> None:
        ((cmd, env),) = self.commands()
        log_file = self.tmp / f"{self.name}-submit.log"
        with log_file.open("wb") as out:
            res = subprocess.run(  # noqa: S603 - our own CLI
                cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=ROOT, check=False
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
    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        t = self.topics
        out: list[tuple[list[str], dict[str, str]]] = []
        for i in range(self.parallelism):
            cmd = [
                sys.executable,
                str(ROOT / "bench" / "contenders" / "plain_loop.py"),
                "--bootstrap", self.settings.kafka_bootstrap,
                "--events-topic", t.events,
                "--decisions-topic", t.decisions,
                "--alerts-topic", t.alerts,
                "--dead-letter-topic", t.dead,
                "--rules-dir", str(ROOT / "rules"),
                "--group-id", f"{t.events}-plain",
                "--stats-file", str(self.tmp / f"{self.name}-stats-{i}.json"),
            ]  # fmt: skip
            out.append((cmd, {}))
        return out

    def stats(self) -> list[dict[str, Any]]:
        files = sorted(self.tmp.glob(f"{self.name}-stats-*.json"))
        return [json.loads(f.read_text()) for f in files]


class MatchRecognize(Contender):
    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        t = self.topics
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "contenders" / "match_recognize.py"),
            "--bootstrap", self.settings.kafka_bootstrap,
            "--events-topic", t.events,
            "--out-topic", t.decisions,
            "--group-id", f"{t.events}-mr",
            "--parallelism", str(self.parallelism),
        ]  # fmt: skip
        return [(cmd, {})]


def _server_ids() -> str:
    """A fresh range of MySQL replica server ids for one CDC reader (a clash with another reader fails)."""
    start = 6000 + (uuid.uuid4().int % 3000) * 4
    return f"{start}-{start + 3}"


def cluster_up(settings: Settings) -> list[int]:
    """The local cluster with two one-slot TaskManagers (thread mode: one interpreter each); its pids."""
    from riskctl.stack.services import FlinkCluster

    settings.stack.flink_taskmanagers, settings.stack.flink_slots = 2, 1
    cluster = FlinkCluster(settings)
    ov = cluster.overview()
    if ov is not None and (
        int(str(ov.get("taskmanagers", 0))) < 2 or int(str(ov.get("jobs-running", 0))) > 0
    ):
        msg = (
            f"the local Flink cluster runs {ov.get('taskmanagers')} TaskManager(s) and "
            f"{ov.get('jobs-running')} job(s): stop it ('riskctl stack down') or run with --no-cluster"
        )
        raise SystemExit(msg)
    if ov is None:
        log("starting the local Flink cluster: 2 TaskManagers with 1 slot each")
        env = {**os.environ, "RISKCTL_STACK_FLINK_TASKMANAGERS": "2", "RISKCTL_STACK_FLINK_SLOTS": "1"}
        riskctl = str(Path(sys.executable).parent / "riskctl")
        subprocess.run([riskctl, "stack", "up", "--flink"], env=env, check=True)  # noqa: S603
    return cluster.pids()


def _proc_name(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return "taskmanager" if b"TaskManagerRunner" in cmdline else "jobmanager"


# -- the measurements ---------------------------------------------------------------------------------
def wait_until(cond: Callable[[], bool], timeout: float, contender: Contender, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        contender.check_alive()
        time.sleep(0.05)
    log(f"  {contender.name}: gave up waiting for {what} after {timeout:.0f} s")
    return False


def measure_drain(
    contender: Contender, reader: Reader, ids: list[str], limit_s: float, start_timeout: float, what: str
) -> dict[str, Any]:
    """Time the decisions of ``ids`` (in the topic already, or being produced): first to last.

    Progress is counted by these ids, not by all decisions read: with two partitions, decisions of events
    behind ``ids`` arrive while some of ``ids`` are still to come."""
    n = len(ids)
    started = time.time()
    any_decided = lambda: reader.decided(ids) > 0  # noqa: E731
    if not wait_until(any_decided, start_timeout, contender, f"the first {what} decision"):
        return {"events": n, "complete": False, "error": "no decision before the start timeout"}
    first = time.time()
    log(f"  {contender.name}: first {what} decision after {first - started:.1f} s; {n:,} events to decide")
    last_report = first
    deadline = first + limit_s
    while (done := reader.decided(ids)) < n and time.time() < deadline:
        contender.check_alive()
        time.sleep(0.2)
        if time.time() - last_report > 10:
            last_report = time.time()
            log(f"  {contender.name}: {done:,}/{n:,} decided ({done / (time.time() - first):,.0f}/s)")
    recv = reader.times()
    got = sorted(recv[k] for k in ids if k in recv)
    with reader.lock:
        created = sorted(reader.created[k] / 1000 for k in ids if k in reader.created)
    complete = len(got) == n
    span = (got[-1] - got[0]) if len(got) > 1 else 0.0
    lo, hi = (got[len(got) // 10], got[(len(got) * 9) // 10 - 1]) if len(got) >= 10 else (0.0, 0.0)
    return {
        "events": n,
        "decided": len(got),
        "complete": complete,
        "stopped_at_limit_s": None if complete else limit_s,
        "wait_for_first_decision_s": round(first - started, 1),
        "first_to_last_s": round(span, 2),
        "events_per_s": round(len(got) / span, 1) if span > 0 else None,
        "events_per_s_10_90": round(len(got) * 0.8 / (hi - lo), 1) if hi > lo else None,
        # the same span by the decision records' broker append times: a difference to first_to_last_s is the
        # reader's delay, not the contender's
        "first_to_last_by_record_ts_s": round(created[-1] - created[0], 2) if len(created) > 1 else None,
        "duplicates": reader.duplicates,
    }


def _wait_quiet(contender: Contender, reader: Reader, limit_s: float, quiet_s: float = 20) -> dict[str, Any]:
    """Wait until no new output record has come for ``quiet_s`` (after at least one), or ``limit_s``."""
    t0 = time.time()
    last_n, last_change = 0, time.time()
    while time.time() - t0 < limit_s:
        contender.check_alive()
        n = reader.count()
        if n != last_n:
            last_n, last_change = n, time.time()
        elif n and time.time() - last_change >= quiet_s:
            break
        time.sleep(0.5)
    return {"records": last_n, "last_record_after_s": round(last_change - t0, 1)}


def paced_send(
    bootstrap: str, topic: str, records: list[bytes], rate: float, appended: dict[str, int] | None = None
) -> tuple[dict[str, float], float]:
    """Send ``records`` at ``rate`` per second (small bursts every millisecond); send time per event id.

    ``appended`` gets each record's timestamp from the broker's answer: its append time (ms) on a topic with
    ``message.timestamp.type=LogAppendTime``."""
    # linger 1 ms: a request per event (linger 0) took the broker half a core at 5,000 events/s, from the
    # contenders; the millisecond is inside the "in Kafka" latency, not inside "broker to broker"
    prod = fast_producer(bootstrap, linger_ms=1)
    sent: dict[str, float] = {}
    keys = [key_of(r) for r in records]  # parsed before the clock starts: the sender's CPU is the bench's

    def delivered(eid: str, err: Any, msg: Any) -> None:
        if err is None and appended is not None:
            appended[eid] = msg.timestamp()[1]

    t0 = time.time()
    i = 0
    n = len(records)
    while i < n:
        due = min(n, int((time.time() - t0) * rate) + 1)
        while i < due:
            key, eid = keys[i]
            prod.produce(topic, records[i], key=key, on_delivery=functools.partial(delivered, eid))
            sent[eid] = time.time()
            i += 1
        prod.poll(0)
        time.sleep(0.0005)
    prod.flush(30)
    took = time.time() - t0
    return sent, took


def measure_latency(
    contender: Contender, reader: Reader, bootstrap: str, records: list[bytes], rate: float, drain_s: float
) -> dict[str, Any]:
    """Send at a fixed rate; latency = decision received - event sent, per event. A contender that cannot keep
    up builds a queue: the phase is marked saturated, and the bench waits (up to ``drain_s``) for the backlog
    to drain, so that it does not spill into the next measurement.

    Two latencies per event: to the decision *in Kafka* (the broker's append time of the decision record,
    the decisions topic having ``message.timestamp.type=LogAppendTime``: when any consumer can read it), and
    to the decision *read* by the bench's own consumer (that plus the reader's fetch wait and its share of
    this process's interpreter lock with the sender)."""
    base = reader.count()
    event_appended: dict[str, int] = {}
    sent, took = paced_send(bootstrap, contender.topics.events, records, rate, event_appended)
    t_sent = time.time()
    drained = wait_until(
        lambda: reader.count() - base >= len(sent), drain_s, contender, "the phase's decisions"
    )
    time.sleep(1)
    recv = reader.times()
    lat = [(recv[k] - t) * 1000 for k, t in sent.items() if k in recv]
    with reader.lock:
        appended = {k: reader.created[k] for k in sent if k in reader.created}
    lat_kafka = [appended[k] - t * 1000 for k, t in sent.items() if k in appended]
    lat_job = [appended[k] - event_appended[k] for k in sent if k in appended and k in event_appended]
    decided_span = max((recv[k] for k in sent if k in recv), default=0) - min(sent.values())
    decided_rate = len(lat) / decided_span if decided_span > 0 else 0.0
    saturated = len(lat) < len(sent) or decided_rate < 0.9 * rate
    return {
        "offered_per_s": round(rate, 1),
        "achieved_send_per_s": round(len(sent) / took, 1),
        "drained": drained,
        "drain_after_send_s": round(time.time() - t_sent, 1),
        "events": len(sent),
        "decided": len(lat),
        "decided_per_s": round(decided_rate, 1),
        "saturated": saturated,
        "latency_ms": percentiles(lat),
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "latency_in_kafka_ms": percentiles(lat_kafka),
        # event record appended -> decision record appended, both by the broker's clock: the contender's own
        # latency, without the bench's producer (its client-side queueing and sender thread)
        "latency_broker_to_broker_ms": percentiles(lat_job),
    }


def measure_propagation(
    settings: Settings, table: str, bootstrap: str, topics: Topics, reader: Reader, edits: int, event_ts: int
) -> dict[str, Any]:
    """Edit the probe rule ``edits`` times; for each, time from the MySQL commit to (1) the job's accepted
    status and (2) the first decision that carries the new version (probe events every 10 ms).

    The probes' event time continues the workload's (from ``event_ts`` on, at wall-clock pace): a probe
    stamped with today's date would move the watermark years ahead and fire every pending timer of every user
    at once, a stall of many seconds that has nothing to do with rule propagation."""
    store = _store(settings, table)
    prod = producer(bootstrap, linger_ms=0)
    applied: list[float] = []
    first_decision: list[float] = []
    stop = threading.Event()
    n_probe = [0]
    t_start = time.time()

    def probes() -> None:
        while not stop.is_set():
            n_probe[0] += 1
            doc = {
                "event_id": f"{PROBE_TYPE}-{topics.events}-{n_probe[0]}",
                "user_id": "bench-probe",
                "type": PROBE_TYPE,
                "ts": event_ts + int((time.time() - t_start) * 1000),
            }
            prod.send(topics.events, json.dumps(doc).encode(), key=b"bench-probe")
            prod.flush()
            stop.wait(0.01)

    sender = threading.Thread(target=probes, daemon=True)
    sender.start()
    try:
        for i in range(edits):
            version, committed = _edit_probe(store, i)
            status = _wait_status(store, version, 30)
            if status is not None:
                applied.append((status - committed) * 1000)
            seen = _wait_probe_version(reader, version, committed, 30)
            if seen is not None:
                first_decision.append((seen - committed) * 1000)
            log(
                f"  edit {i + 1}/{edits}: v{version} applied {applied[-1] if applied else '?':.0f} ms, first "
                f"decision {first_decision[-1] if first_decision else float('nan'):.0f} ms"
            )
            time.sleep(0.3)
    finally:
        stop.set()
        sender.join(timeout=5)
        prod.close()
        store.conn.close()
    return {
        "edits": edits,
        "commit_to_applied_ms": percentiles(applied) | {"n": len(applied)},
        "commit_to_first_decision_ms": percentiles(first_decision) | {"n": len(first_decision)},
        "probe_interval_ms": 10,
    }


def _store(settings: Settings, table: str) -> Any:
    from riskctl.store.connection import connect
    from riskctl.store.rules_store import RuleStore

    return RuleStore(connect(settings), table)


def probe_rule(threshold: int) -> dict[str, Any]:
    return {
        "id": PROBE_RULE,
        "description": "benchmark probe: edited to time rule propagation",
        "status": "shadow",
        "action": "REVIEW",
        "when": f'event.type == "{PROBE_TYPE}" and {threshold} >= 0',
    }


def install_rules(settings: Settings, table: str) -> None:
    """The project's rules plus the (shadow) probe rule, into a fresh rules table."""
    from riskctl.core.rules import RuleSet, load_rules, parse_rule

    store = _store(settings, table)
    try:
        rules = list(load_rules(ROOT / "rules").rules) + [parse_rule(probe_rule(0))]
        store.apply(store.plan(RuleSet(rules)), author="bench", comment="benchmark rules")
    finally:
        store.conn.close()


def _edit_probe(store: Any, i: int) -> tuple[int, float]:
    from riskctl.core.rules import RuleSet, parse_rule

    others = [parse_rule(r.document) for r in store.current() if r.rule_id != PROBE_RULE]
    plan = store.plan(RuleSet([*others, parse_rule(probe_rule(i + 1))]))
    changes = store.apply(plan, author="bench", comment=f"probe {i + 1}")
    committed = time.time()
    (change,) = [c for c in changes if c.rule_id == PROBE_RULE]
    return int(change.version), committed


def _wait_status(store: Any, version: int, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = store.job_status([(PROBE_RULE, version)]).get((PROBE_RULE, version))
        if st is not None and st.state == "accepted" and st.seen_at is not None:
            return st.seen_at.timestamp()
        time.sleep(0.02)
    return None


def _wait_probe_version(reader: Reader, version: int, after: float, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with reader.lock:
            hits = [
                t
                for docs in reader.kept.values()
                for t, doc in docs
                if t >= after
                and any(
                    r.get("id") == PROBE_RULE and r.get("version") == version for r in doc.get("shadow", [])
                )
            ]
        if hits:
            return min(hits)
        time.sleep(0.01)
    return None


def pure_engine(records: list[bytes]) -> dict[str, Any]:
    """The engine alone (LocalRunner, in-memory state) over the same events: events/s on one core."""
    from riskctl.core.engine import Engine
    from riskctl.core.events import parse_event
    from riskctl.core.rules import load_rules
    from riskctl.core.runner import LocalRunner, tune_gc

    tune_gc()
    events = [parse_event(r) for r in records]
    runner = LocalRunner(Engine(load_rules(ROOT / "rules"), lateness=5000, state_ttl=24 * 3600 * 1000))
    t0 = time.perf_counter()
    for e in events:
        for _ in runner.feed(e):
            pass
    took = time.perf_counter() - t0
    sizes = runner.store.pickled_sizes()
    return {
        "events": len(events),
        "seconds": round(took, 2),
        "events_per_s": round(len(events) / took, 1),
        "users": len(sizes) or None,
        "state_bytes_per_user_pickled": round(statistics.fmean(sizes), 1) if sizes else None,
    }


# -- one contender, start to stop ---------------------------------------------------------------------
def keep_probe_and_brute_force(key: str, value: bytes) -> bool:
    return key.startswith(PROBE_TYPE) or b"brute_force_login" in value


def run_contender(
    kind: type[Contender],
    name: str,
    parallelism: int,
    settings: Settings,
    plan: Plan,
    records: list[bytes],
    sampler: Sampler,
    tmp: Path,
    *,
    latency: bool,
    propagation: bool = False,
) -> dict[str, Any]:
    """Fresh topics; preload the throughput events; start; measure; then (optionally) latency phases at fixed
    rates with later events of the workload, and rule propagation; stop. Every figure goes in the result."""
    bootstrap = settings.kafka_bootstrap
    topics = Topics.fresh(name)
    ensure_topics(bootstrap, topics.all(), partitions=2)
    log_append_time(bootstrap, topics.events)
    log_append_time(bootstrap, topics.decisions)
    warm = records[: plan.warmup_events]
    main = records[plan.warmup_events : plan.warmup_events + plan.throughput_events]
    rest = records[plan.warmup_events + plan.throughput_events :]
    contender = kind(name, parallelism, settings, topics, tmp)
    if isinstance(contender, RiskctlJob):
        contender.rules_table = f"bench_{uuid.uuid4().hex[:8]}"
        install_rules(settings, contender.rules_table)
    first_batch = warm + main
    log(f"{name} (p={parallelism}): preloading {len(first_batch):,} events")
    preload_s = preload(bootstrap, topics.events, first_batch)
    keep = (lambda k, v: True) if kind is MatchRecognize else keep_probe_and_brute_force
    reader = Reader(bootstrap, topics.decisions, keep=keep)
    reader.start()
    result: dict[str, Any] = {"contender": name, "parallelism": parallelism, "preload_s": round(preload_s, 1)}
    t0 = time.monotonic()
    try:
        contender_started = time.monotonic()
        contender.start()
        sampler.watch_session(contender.session)
        if isinstance(contender, MatchRecognize):
            # its output is the matches only: wait for them to stop coming (or for the limit)
            result["matches"] = _wait_quiet(contender, reader, plan.throughput_limit_s + 120)
            result["resources"] = sampler.window(contender_started, time.monotonic())
            with reader.lock:
                result["brute_force_hits"] = sorted(reader.kept)
            return result
        log(f"  {name}: cold start, {len(warm):,} events preloaded")
        result["cold"] = cold = measure_drain(
            contender, reader, [key_of(r)[1] for r in warm], plan.throughput_limit_s, 240, "cold"
        )
        log(f"  {name}: cold {cold.get('events_per_s')} events/s (complete: {cold.get('complete')})")
        tp: dict[str, Any] = {}
        if cold.get("complete"):
            # the sustained events were preloaded behind the cold ones: the warmed-up contender drains a
            # backlog, with nothing else producing on the box (a producer running beside it on 2 cores would
            # measure the producer: kafka-python sends 5-7k events/s while a contender runs)
            log(f"  {name}: sustained: {len(main):,} more events, preloaded behind the cold ones")
            tp.update(
                measure_drain(
                    contender,
                    reader,
                    [key_of(r)[1] for r in main],
                    plan.throughput_limit_s,
                    60,
                    "sustained",
                )
            )
            log(f"  {name}: sustained {tp.get('events_per_s')} events/s (complete: {tp.get('complete')})")
        result["throughput"] = tp
        with reader.lock:  # success events flagged for brute force
            result["brute_force_hits"] = sorted(k for k in reader.kept if not k.startswith(PROBE_TYPE))
        max_rate = tp.get("events_per_s") or 0
        offset = 0  # events of `rest` sent so far
        if latency and tp.get("complete"):
            phases = sorted({*plan.rates, max(100, int(0.8 * max_rate))})
            result["latency"] = []
            for rate in phases:
                n = int(rate * plan.phase_s)
                if offset + n > len(rest):
                    log(f"  {name}: workload too short for {rate}/s x {plan.phase_s:.0f} s; skipped")
                    continue
                log(f"  {name}: latency at {rate:,}/s for {plan.phase_s:.0f} s")
                p0 = time.monotonic()
                phase = measure_latency(contender, reader, bootstrap, rest[offset : offset + n], rate, 300)
                phase["resources"] = sampler.window(p0, time.monotonic())
                phase["at_80pct_of_max"] = rate == max(100, int(0.8 * max_rate))
                offset += n
                result["latency"].append(phase)
                lat, read = phase["latency_in_kafka_ms"], phase["latency_ms"]
                log(
                    f"  {name}: {rate:,}/s -> decided {phase['decided_per_s']:,}/s; "
                    f"in Kafka p50 {lat['p50']} ms, p99 {lat['p99']} ms, p99.9 {lat['p99_9']} ms; "
                    f"read p99 {read['p99']} ms; broker to broker p99 "
                    f"{phase['latency_broker_to_broker_ms']['p99']} ms"
                    + (" (SATURATED)" if phase["saturated"] else "")
                )
                if phase["saturated"]:
                    log(f"  {name}: saturated at {rate:,}/s; higher rates not run")
                    break
        if propagation and isinstance(contender, RiskctlJob) and contender.rules_table:
            log(f"  {name}: rule propagation over {plan.edits} edits")
            last_ts = max(
                json.loads(r)["ts"] for r in records[: plan.warmup_events + plan.throughput_events + offset]
            )
            result["propagation"] = measure_propagation(
                settings, contender.rules_table, bootstrap, topics, reader, plan.edits, last_ts + 1
            )
        if isinstance(contender, RiskctlJob):
            try:
                rocks = contender.rocksdb()
                keys = rocks.get("estimate-num-keys") or 0
                result["rocksdb"] = rocks | {
                    "live_bytes_per_key": round(rocks["estimate-live-data-size"] / keys, 1) if keys else None,
                    "sst_bytes_per_key": round(rocks["total-sst-files-size"] / keys, 1) if keys else None,
                }
            except Exception as exc:  # noqa: BLE001 - a metric we could not read is reported, not fatal
                result["rocksdb"] = {"error": str(exc)}
        result["resources"] = sampler.window(contender_started, time.monotonic())
    finally:
        contender.stop()
        reader.stop()
        sampler.watch_session(None)
        if isinstance(contender, PlainLoop):
            result["plain_loop_stats"] = contender.stats()
        _delete_topics(bootstrap, topics.all())
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def log_append_time(bootstrap: str, topic: str) -> None:
    """Records of ``topic`` carry the broker's append time: the moment a decision became readable."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, topic, configs={"message.timestamp.type": "LogAppendTime"}
                )
            ]
        )
    finally:
        admin.close()


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics(names)
        admin.close()
    except Exception as exc:  # noqa: BLE001 - cleanup only
        log(f"could not delete topics {names}: {exc}")


# -- report -------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mem_total_mb": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**20),
    }


def markdown(doc: dict[str, Any]) -> str:
    out = [
        "# riskctl side by side",
        "",
        f"Run {doc['started']} with `{doc['command']}` ({'quick' if doc['quick'] else 'full'} mode); "
        f"{doc['machine']['nproc']} cores, load average at start {doc['machine']['loadavg'][0]:.2f}. "
        f"Workload: {doc['workload']['events']:,} simulator events (attacks included), "
        f"{doc['workload']['users']:,} users, Zipf 1.0; rules: `rules/` ({doc['workload']['rules']} rules).",
        "",
        "## (a) Maximum sustained throughput, Kafka in to decisions out",
        "",
        "Every event preloaded, then the contender starts. Cold: the first events after the start (JIT",
        "compilation included). Sustained: the events behind them, drained by the warmed-up contender",
        "(decisions/s, first to last), with nothing else producing on the box.",
        "",
        "| contender | p | sustained events/s | (10-90%) | decided | cold events/s | cold: start to first "
        "decision (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        tp, cold = r.get("throughput", {}), r.get("cold", {})
        if "matches" in r:
            continue
        out.append(
            f"| {r['contender']} | {r['parallelism']} | {tp.get('events_per_s')} "
            f"| {tp.get('events_per_s_10_90')} | {tp.get('decided')}/{tp.get('events')} "
            f"| {cold.get('events_per_s')} | {cold.get('wait_for_first_decision_s')} |"
        )
    out += [
        "",
        "## (b) Latency, produce to decision visible (ms)",
        "",
        "From the event's send to the decision record's append time in the broker (readable by any",
        "consumer); read: to the bench's own consumer reading it (adds its fetch and scheduling).",
        "",
        "| contender | offered/s | sent/s | decided/s | p50 | p90 | p99 | p99.9 | max | read: p50 "
        "| read: p99 | saturated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        for ph in r.get("latency", []):
            lat, read = ph["latency_in_kafka_ms"], ph["latency_ms"]
            out.append(
                f"| {r['contender']} | {ph['offered_per_s']:,.0f} | {ph['achieved_send_per_s']:,.0f} | "
                f"{ph['decided_per_s']:,.0f} | {lat['p50']} | {lat['p90']} | {lat['p99']} | {lat['p99_9']} | "
                f"{lat['max']} | {read['p50']} | {read['p99']} | "
                f"{'yes: a queue, not latency' if ph['saturated'] else 'no'} |"
            )
    for r in doc["runs"]:
        prop = r.get("propagation")
        if prop:
            a, f = prop["commit_to_applied_ms"], prop["commit_to_first_decision_ms"]
            out += [
                "",
                f"## (c) Rule propagation ({r['contender']}, MySQL CDC, {prop['edits']} edits)",
                "",
                "| from the MySQL commit to | n | p50 ms | p99 ms | max ms |",
                "|---|---|---|---|---|",
                f"| the job applying the version (status row) | {a['n']} | {a['p50']} | {a['p99']} "
                f"| {a['max']} |",
                f"| the first decision made with it (probe every {prop['probe_interval_ms']} ms) "
                f"| {f['n']} | "
                f"{f['p50']} | {f['p99']} | {f['max']} |",
            ]
    out += ["", "## (d) State per active user", ""]
    for r in doc["runs"]:
        rocks = r.get("rocksdb")
        if rocks and "error" not in rocks:
            out.append(
                f"- {r['contender']} p={r['parallelism']}: RocksDB `engine` state, "
                f"{rocks.get('estimate-num-keys')} "
                f"keys: live data {rocks.get('live_bytes_per_key')} B/key, SST files "
                f"{rocks.get('sst_bytes_per_key')} B/key (compressed, with key and TTL overhead)"
            )
        for st in r.get("plain_loop_stats", []):
            out.append(
                f"- {r['contender']} p={r['parallelism']}: in-memory state of {st.get('users')} users, "
                f"{st.get('state_bytes_per_user')} B/user pickled"
            )
    eng = doc.get("pure_engine", {})
    out.append(f"- pure engine (pickled dict per user): {eng.get('state_bytes_per_user_pickled')} B/user")
    out += [
        "",
        "## (e) Pure engine, same workload, one core",
        "",
        f"{eng.get('events_per_s'):,} events/s over {eng.get('events'):,} events "
        f"({eng.get('users'):,} users with state).",
        "",
        "## (f) CPU (% of one core, average) and peak RSS (MB) per process, during each whole run",
        "",
        "| contender | p | process | CPU % | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        for role, v in sorted(r.get("resources", {}).items()):
            out.append(
                f"| {r['contender']} | {r['parallelism']} | {role} | {v['cpu_pct']} | {v['rss_mb_peak']} |"
            )
    mr = doc.get("match_recognize_check")
    if mr:
        out += [
            "",
            "## MATCH_RECOGNIZE (Java CEP) against riskctl, brute-force rule, same records",
            "",
            "```",
            json.dumps(mr, indent=2),
            "```",
        ]
    out += ["", "## Targets", ""]
    for t in doc.get("targets", []):
        out.append(f"- {t}")
    return "\n".join(out) + "\n"


def plots(doc: dict[str, Any], folder: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (pip install -e '.[bench]')")
        return []
    written = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in doc["runs"]:
        phases = [p for p in r.get("latency", []) if p["decided"]]
        if not phases:
            continue
        xs = [p["offered_per_s"] for p in phases]
        for q, style in (("p50", "o-"), ("p99", "s--"), ("p99_9", "^:")):
            ax.plot(
                xs,
                [p["latency_in_kafka_ms"][q] for p in phases],
                style,
                label=f"{r['contender']} {q.replace('_', '.')}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s")
    ax.set_ylabel("produce -> decision in Kafka (ms)")
    ax.axhline(50, color="grey", lw=0.8)
    ax.set_title("Latency against offered rate (saturated points are queueing)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "bench_latency.png"
    fig.savefig(path, dpi=110)
    written.append(str(path))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [f"{r['contender']}\np={r['parallelism']}" for r in doc["runs"]]
    values = [r.get("throughput", {}).get("events_per_s") or 0 for r in doc["runs"]]
    bars = ax.bar(labels, values, color="#4477aa")
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
    ax.set_ylabel("decisions/s (Kafka in -> Kafka out)")
    ax.set_title("Maximum sustained throughput")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = folder / "bench_throughput.png"
    fig.savefig(path, dpi=110)
    written.append(str(path))
    plt.close(fig)
    return written


def targets(doc: dict[str, Any]) -> list[str]:
    runs = {(r["contender"], r["parallelism"]): r for r in doc["runs"]}
    out = []
    at_p2 = {
        name: runs.get((name, 2), {}).get("throughput", {}).get("events_per_s") or 0
        for name in ("riskctl-thread", "riskctl-cluster")
    }
    best = max(at_p2, key=lambda k: at_p2[k])
    p2 = at_p2[best] or None
    out.append(
        f"throughput at p=2 >= 30,000 events/s: {p2} ({best}) -> {'met' if p2 and p2 >= 30000 else 'MISSED'}"
    )
    five = [p for p in runs.get(("riskctl-thread", 1), {}).get("latency", []) if p["offered_per_s"] == 5000]
    if five:
        p99 = five[0]["latency_in_kafka_ms"]["p99"]
        ok = not five[0]["saturated"] and p99 is not None and p99 < 50
        out.append(
            f"p99 < 50 ms at 5,000 events/s: p99 {p99} ms in Kafka "
            f"({five[0]['latency_ms']['p99']} ms read by the bench), saturated {five[0]['saturated']} -> "
            f"{'met' if ok else 'MISSED'}"
        )
    else:
        out.append("p99 < 50 ms at 5,000 events/s: not run (saturated at a lower rate) -> MISSED")
    prop = runs.get(("riskctl-thread", 1), {}).get("propagation")
    if prop:
        p99 = prop["commit_to_first_decision_ms"]["p99"]
        out.append(
            f"rule propagation p99 < 1 s: {p99} ms -> {'met' if p99 is not None and p99 < 1000 else 'MISSED'}"
        )
    rocks = runs.get(("riskctl-thread", 1), {}).get("rocksdb", {})
    live = rocks.get("live_bytes_per_key")
    out.append(
        f"state < 1 KB per active user: {live} B (RocksDB live data) -> "
        + ("met" if live and live < 1024 else "MISSED")
    )
    return out


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small workload, short phases (a few minutes)")
    ap.add_argument(
        "--only",
        default="",
        help="contenders to run, comma-separated "
        "(riskctl-thread, riskctl-process, plain-loop, match-recognize, riskctl-cluster)",
    )
    ap.add_argument("--no-p2", action="store_true", help="skip the parallelism-2 throughput runs")
    ap.add_argument(
        "--no-cluster",
        action="store_true",
        help="skip the standalone-cluster run (p=2 on two one-slot TaskManagers, started if needed)",
    )
    ap.add_argument(
        "--flink-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Flink configuration for the riskctl jobs (repeatable), to compare settings",
    )
    ap.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the throughput figures (no latency phases, no rule propagation): for before/after runs",
    )
    ap.add_argument("--out", default=str(RESULTS), help="folder for bench.json, bench.md and the plots")
    args = ap.parse_args(argv)
    plan = Plan.of(args.quick)
    EXTRA_FLINK_OPTIONS.extend(args.flink_option)
    settings = load_settings()
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    doc: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "plan": plan.__dict__,
        "flink_options": args.flink_option,
        "machine": machine(),
        "runs": [],
    }
    needed = plan.events_needed()
    records = workload(plan.users, needed)
    from riskctl.core.rules import load_rules

    doc["workload"] = {
        "users": plan.users,
        "events": len(records),
        "zipf": 1.0,
        "rules": len(load_rules(ROOT / "rules").rules),
    }
    log("pure engine on the throughput events")
    doc["pure_engine"] = pure_engine(records[: plan.engine_events])
    log(f"  {doc['pure_engine']['events_per_s']:,} events/s")

    from riskctl.stack.services import services

    roles = {"bench (load generator, reader)": os.getpid()}
    for service in services(settings, flink=False):
        pids = service.pids()
        if not pids:
            msg = f"the local {service.name} is not running: start the stack with 'riskctl stack up'"
            raise SystemExit(msg)
        roles[service.name] = pids[0]

    runs: list[tuple[type[Contender], str, int, bool, bool]] = [
        (RiskctlJob, "riskctl-thread", 1, True, True),
        (PlainLoop, "plain-loop", 1, True, False),
        (RiskctlProcessJob, "riskctl-process", 1, True, False),
        (MatchRecognize, "match-recognize", 1, False, False),
    ]
    if not args.no_p2:
        runs += [(RiskctlJob, "riskctl-thread", 2, False, False), (PlainLoop, "plain-loop", 2, False, False)]
    if not args.no_p2 and not args.no_cluster and (not only or "riskctl-cluster" in only):
        for pid in cluster_up(settings):
            roles[f"flink cluster {_proc_name(pid)} {pid}"] = pid
        runs += [(ClusterJob, "riskctl-cluster", 2, True, False)]
    sampler = Sampler(roles)
    sampler.start()
    # contenders' logs and checkpoints stay here after the run (bench/.work is ignored by git)
    tmp = WORK / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    tmp.mkdir(parents=True)
    doc["logs"] = str(tmp)
    for kind, name, p, latency, propagation in runs:
        if only and name not in only:
            continue
        try:
            doc["runs"].append(
                run_contender(
                    kind,
                    name,
                    p,
                    settings,
                    plan,
                    records,
                    sampler,
                    tmp,
                    latency=latency and not args.throughput_only,
                    propagation=propagation and not args.throughput_only,
                )
            )
        except Exception as exc:  # noqa: BLE001 - one contender failing is a result, the others still run
            log(f"{name} p={p} failed: {exc}")
            doc["runs"].append({"contender": name, "parallelism": p, "error": str(exc)[-2000:]})
    sampler.stop()

    by = {(r["contender"], r["parallelism"]): r for r in doc["runs"]}
    mr = by.get(("match-recognize", 1))
    ref = next((by[k] for k in (("riskctl-thread", 1), ("plain-loop", 1)) if k in by), None)
    if mr and ref and "brute_force_hits" in mr and "brute_force_hits" in ref:
        sys.path.insert(0, str(ROOT / "bench" / "contenders"))
        from match_recognize import compare  # type: ignore[import-not-found]

        # CEP emits a match once the watermark (newest ts - 5 s) passes it; at the end of a finite input the
        # watermark stops, so compare only successes that the final watermark passed (plus the raw figures)
        seen = records[: plan.warmup_events + plan.throughput_events]
        ts_of = {d["event_id"]: d["ts"] for d in map(json.loads, seen)}
        final_watermark = max(ts_of.values()) - 5000
        ref_hits = {h for h in ref["brute_force_hits"] if h in ts_of}
        passed = {h for h in ref_hits if ts_of[h] <= final_watermark}
        check = compare(set(mr["brute_force_hits"]), passed)
        doc["match_recognize_check"] = {
            "against": ref["contender"],
            "compared": "success events the final watermark passed",
            **check,
            "reference_hits_after_the_final_watermark": len(ref_hits - passed),
        }
    for r in doc["runs"]:
        r.pop("brute_force_hits", None)
    doc["targets"] = targets(doc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc["plots"] = plots(doc, out)
    (out / "bench.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(markdown(doc))
    log(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {len(doc['plots'])} plots")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
