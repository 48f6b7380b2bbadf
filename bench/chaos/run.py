"""The fault suite: the risk job on the local standalone cluster under faults, measured.

    .venv/bin/python bench/chaos/run.py [--quick] [--only tm_kill,poison] [--name chaos]

Each scenario submits the job (p=2, rules by MySQL CDC from a fresh table with ``rules/``, fresh topics),
runs a paced load of valid events (keyed by user, ``ts`` = wall clock), injects its fault, stops the load,
drains, then compares what came out with what went in and with ``riskctl replay`` of the same records.
Whatever the job does is recorded as data: a job that ends FAILED, a scenario that throws, a replay that
crashes are rows of the table, never a crash of the suite. Writes ``bench/results/<name>.md`` and
``<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from harness import process_env  # noqa: E402
from harness.workload import EventMaker  # noqa: E402

from riskctl.config import Settings, load_settings  # noqa: E402
from riskctl.errors import ServiceError  # noqa: E402
from riskctl.stack.process import terminate  # noqa: E402
from riskctl.stack.services import FlinkCluster, Kafka, MariaDB  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work" / "chaos"
PYTHON = sys.executable
FAR_FUTURE_TS = 253_402_214_400_000  # 9999-12-31T00:00:00Z
GAP_S = 3.0  # a pause between two decisions longer than this counts as "without decisions"


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- plan -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    rate: int = 1000  # events/s of valid load
    warmup_s: float = 15.0  # load before the first fault
    tail_s: float = 30.0  # load after the last fault
    tm_kills: int = 3
    kill_every_s: float = 25.0
    replacement_after_s: float = 3.0  # a replacement TaskManager is started this long after each kill
    broker_down_s: float = 20.0
    mysql_down_s: float = 30.0
    drain_quiet_s: float = 20.0  # the drain ends when nothing new arrived for this long...
    drain_max_s: float = 120.0  # ...or after this long
    checkpoint_interval_ms: int = 1000
    warm_replacements: bool = True  # run `riskctl warm` on each replacement TaskManager once it registered

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if not quick:
            return cls()
        return cls(warmup_s=10, tail_s=15, tm_kills=1, broker_down_s=10, mysql_down_s=30, drain_quiet_s=15)


# -- events -----------------------------------------------------------------------------------------------
def poison_records(run: str) -> list[tuple[str, bytes | None, bytes | None]]:
    """(name, value, key) of hostile records (a value of None: a Kafka tombstone); each valid-looking one
    has an event_id ``<run>-p-<name>``."""
    t = now_ms()

    def ev(name: str, user: str, etype: str, **fields: Any) -> dict[str, Any]:
        return {"event_id": f"{run}-p-{name}", "user_id": user, "type": etype, "ts": t, **fields}

    def js(d: dict[str, Any]) -> bytes:
        return json.dumps(d, separators=(",", ":")).encode()

    nested = b'{"a":' * 1024 + b"1" + b"}" * 1024
    out: list[tuple[str, bytes | None, bytes | None]] = [
        ("binary-1MB", random.Random(1).randbytes(1_000_000), b"pz-binary"),
        (
            "invalid-utf8",
            js(ev("invalid-utf8", "pz-utf8", "login", success=True))[:-1] + b',"city":"\xff\xfe"}',
            b"pz-utf8",
        ),
        (
            "far-future-ts",
            js({**ev("far-future-ts", "pz-future", "login", success=False), "ts": FAR_FUTURE_TS}),
            b"pz-future",
        ),
        (
            "nested-1024",
            js(ev("nested-1024", "pz-nested", "login", success=True))[:-1] + b',"extra":' + nested + b"}",
            b"pz-nested",
        ),
        (
            "lone-surrogate",
            js(ev("lone-surrogate", "pz-sur", "login", success=True)).replace(b'"pz-sur"', b'"pz-\\ud800"'),
            b"pz-sur",
        ),
        (
            "digits-4300-a",
            js(ev("digits-4300-a", "pz-digits", "transfer"))[:-1] + b',"amount":' + b"9" * 4300 + b"}",
            b"pz-digits",
        ),
        (
            "digits-4300-b",
            js(ev("digits-4300-b", "pz-digits", "transfer"))[:-1] + b',"amount":' + b"9" * 4300 + b"}",
            b"pz-digits",
        ),
        (
            "amount-1e400",
            js(ev("amount-1e400", "pz-huge", "transfer"))[:-1] + b',"amount":1' + b"0" * 400 + b"}",
            b"pz-huge",
        ),
        ("amount-after-1e400", js(ev("amount-after-1e400", "pz-huge", "transfer", amount=1.5)), b"pz-huge"),
        ("not-json", b"hello, engine", b"pz-text"),
        ("empty", b"", b"pz-empty"),
        ("tombstone", None, b"pz-tombstone"),
        (
            "field-100KiB",
            js(ev("field-100KiB", "pz-big", "login", success=True, note="x" * 102_400)),
            b"pz-big",
        ),
        ("ts-string", js({**ev("ts-string", "pz-tss", "login", success=True), "ts": "yesterday"}), b"pz-tss"),
    ]
    return out


# -- Kafka I/O --------------------------------------------------------------------------------------------
class Load(threading.Thread):
    """Produces ``rate`` valid events/s until stopped; remembers every record the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str, rate: int) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.topic = topic
        self.rate = rate
        # wall-clock event time: no event is ever late or early
        self.maker = EventMaker(2000, 7, login_success=0.8, transfer_mu=8.0)
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "enable.idempotence": True,  # per-partition order survives retries (replay compares in order)
                "message.timeout.ms": 300_000,  # a broker outage delays records, it does not drop them
                "message.max.bytes": 3_000_000,
                "log_level": 2,  # a stopped broker is the point of a scenario: no connection-refused noise
                # its state every 5 s: what the summary shows of a producer that stopped delivering
                "statistics.interval.ms": 5000,
                "stats_cb": self._on_stats,
            }
        )
        self.stats = ""  # the producer's last statistics (librdkafka's JSON)
        self.lock = threading.Lock()
        # (id, value) in send order (per key: partition order); a value of None is a tombstone
        self.order: list[tuple[str, bytes | None]] = []
        self.acked: dict[str, tuple[int, int]] = {}  # id -> (partition, offset)
        self.failed: dict[str, str] = {}
        self.stop_event = threading.Event()
        self.paused = threading.Event()

    def _on_stats(self, stats: str) -> None:
        self.stats = stats

    def _cb(self, rid: str) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            with self.lock:
                if err is None:
                    self.acked[rid] = (msg.partition(), msg.offset())
                else:
                    self.failed[rid] = str(err)

        return done

    def send(self, rid: str, value: bytes | None, key: bytes | None) -> None:
        with self.lock:
            self.order.append((rid, value))
        while True:
            try:
                self.producer.produce(self.topic, value, key, on_delivery=self._cb(rid))
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def run(self) -> None:
        t0 = time.monotonic()
        n = 0
        while not self.stop_event.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while n < due:
                e = self.maker.make(now_ms())
                self.send(e["event_id"], json.dumps(e, separators=(",", ":")).encode(), e["user_id"].encode())
                n += 1
            self.producer.poll(0.002)
        self.producer.flush(120)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=180)


class Reader(threading.Thread):
    """Reads decisions, dead letters and rule statuses from the beginning; stamps each with its arrival.

    Every partition is assigned to it, not given by a consumer group: a group's coordinator is a broker, and
    after the broker-stop scenario's restart the reader's group rebalanced only once the old member's session
    expired, so it read nothing for longer than the drain waits (the job had decided everything, 1 s after the
    broker was back: chaos-stop29). A reader without a group only needs the partitions' leader back.
    """

    def __init__(self, bootstrap: str, topics: dict[str, str], isolation: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topics = topics
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"chaos-reader-{uuid.uuid4().hex[:8]}",  # required by the client; never joined
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "fetch.wait.max.ms": 50,
                "reconnect.backoff.max.ms": 1000,  # a restarted broker is read again within a second
                "log_level": 2,
            }
        )
        names = [topics["decisions"], topics["dead"], topics["status"]]
        meta = self.consumer.list_topics(timeout=30).topics
        missing = [t for t in names if t not in meta or not meta[t].partitions]
        if missing:
            msg = f"topics not found: {missing}"
            raise RuntimeError(msg)
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in names for p in sorted(meta[t].partitions)]
        )
        self.lock = threading.Lock()
        self.decisions: dict[str, list[tuple[float, str]]] = defaultdict(list)  # event_id -> [(t, action)]
        self.arrivals: list[float] = []  # wall time of every decision record
        self.dead: list[dict[str, Any]] = []
        self.status: list[tuple[float, dict[str, Any]]] = []
        self.last = time.time()
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            t = time.time()
            try:
                rec = json.loads(msg.value())
            except ValueError:
                continue
            with self.lock:
                self.last = t
                if msg.topic() == self.topics["decisions"]:
                    self.decisions[str(rec.get("event_id"))].append((t, str(rec.get("action"))))
                    self.arrivals.append(t)
                elif msg.topic() == self.topics["dead"]:
                    self.dead.append(rec)
                else:
                    self.status.append((t, rec))
        self.consumer.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)


# -- the job ----------------------------------------------------------------------------------------------
class Job:
    """One submission of the risk job to the local cluster, with fresh topics and rules table."""

    def __init__(
        self, settings: Settings, cluster: FlinkCluster, name: str, delivery: str, plan: Plan
    ) -> None:
        from riskctl.kafka_admin import ensure_topics

        suffix = uuid.uuid4().hex[:8]
        self.settings = settings
        self.cluster = cluster
        self.name = name
        self.delivery = delivery
        self.topics = {
            k: f"chaos-{name}-{k}-{suffix}" for k in ("events", "decisions", "alerts", "dead", "status")
        }
        ensure_topics(settings.kafka_bootstrap, self.topics.values(), partitions=2)
        self.table = f"chaos{suffix}_rules"
        apply_rules(settings, self.table)
        self.work = WORK / f"{name}-{suffix}"
        self.work.mkdir(parents=True, exist_ok=True)
        server_id = 7000 + uuid.uuid4().int % 2000
        self.env = {
            "RISKCTL_JOB_EVENTS_TOPIC": self.topics["events"],
            "RISKCTL_JOB_DECISIONS_TOPIC": self.topics["decisions"],
            "RISKCTL_JOB_ALERTS_TOPIC": self.topics["alerts"],
            "RISKCTL_JOB_DEAD_LETTER_TOPIC": self.topics["dead"],
            "RISKCTL_JOB_RULE_STATUS_TOPIC": self.topics["status"],
            "RISKCTL_JOB_RULES_TABLE": self.table,
            "RISKCTL_JOB_GROUP_ID": f"chaos-{suffix}",
            "RISKCTL_JOB_RULES_SOURCE": "cdc",
            "RISKCTL_JOB_CDC_SERVER_ID": f"{server_id}-{server_id + 3}",
            "RISKCTL_JOB_PARALLELISM": "2",
            "RISKCTL_JOB_DELIVERY": delivery,
            "RISKCTL_JOB_CHECKPOINT_INTERVAL_MS": str(plan.checkpoint_interval_ms),
            "RISKCTL_JOB_CHECKPOINT_DIR": (self.work / "chk").as_uri(),
        }
        self.job_id = ""

    def submit(self) -> None:
        env = process_env(self.env)
        res = subprocess.run(
            [PYTHON, "-m", "riskctl.cli.main", "submit", "-p", "2", "--name", f"chaos-{self.name}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=ROOT,
        )
        out = res.stdout + res.stderr
        (self.work / "submit.log").write_text(out)
        ids = [w for line in out.splitlines() if "JobID" in line for w in line.split() if len(w) == 32]
        if res.returncode != 0 or not ids:
            msg = f"submit failed ({res.returncode}): {out[-1500:]}"
            raise RuntimeError(msg)
        self.job_id = ids[-1]

    def rest(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.cluster.rest_url}{path}", timeout=10) as resp:  # noqa: S310
            return json.load(resp)

    def state(self) -> str:
        try:
            return str(self.rest(f"/jobs/{self.job_id}")["state"])
        except OSError as exc:
            return f"unknown ({exc})"

    def tasks_running(self) -> bool:
        """The job RUNNING with every task RUNNING (a restarting job is RUNNING while tasks deploy)."""
        try:
            info = self.rest(f"/jobs/{self.job_id}")
        except OSError:
            return False
        counts = info.get("status-counts", {})
        return info.get("state") == "RUNNING" and counts.get("RUNNING", 0) == sum(counts.values())

    def _num_restarts(self) -> int | None:
        try:
            metrics = self.rest(f"/jobs/{self.job_id}/metrics?get=numRestarts")
            return int(float(metrics[0]["value"])) if metrics else None
        except (OSError, ValueError, KeyError, IndexError):
            return None

    def restarts(self) -> int | None:
        """The job's ``numRestarts`` now (None: not known), in one fetch interval and a half (~12 s).

        Flink's REST API answers a metric request from its MetricStore, which MetricFetcherImpl refreshes
        asynchronously: a request starts a refresh only if the last one started more than
        ``metrics.fetcher.update-interval`` ago (10 s by default) and has ended, and is answered at once from
        what is stored, never from the refresh it started. Other calls start refreshes too (``/jobs/<id>``
        and a vertex's TaskManagers, for their I/O metrics), so one read gave whatever the refresh after the
        suite's last such call had seen: 0 after a TaskManager kill that restarted the job when that call came
        before the kill (chaos-stop31, 33, 36, 38), mostly 1, and for a job not yet in the store nothing
        (–; every poison row). So: a read, another once an interval has passed (if no refresh started since
        the first read, this one starts it), and a last one a moment later, which sees a refresh started
        after the first read. The counter only grows, so the largest read is the freshest.
        """
        interval = self.metric_fetch_interval_s()
        if interval <= 0:  # 0: Flink fetches no metrics at all
            return self._num_restarts()
        reads = [self._num_restarts()]
        time.sleep(interval + 0.5)
        reads.append(self._num_restarts())
        time.sleep(1.0)  # a refresh of the JobManager's own metrics takes milliseconds
        reads.append(self._num_restarts())
        known = [r for r in reads if r is not None]
        return max(known) if known else None

    def metric_fetch_interval_s(self) -> float:
        """The cluster's ``metrics.fetcher.update-interval`` in seconds (the stack leaves Flink's 10 s unless
        ``stack.flink_config`` sets it)."""
        try:
            conf = {e["key"]: str(e["value"]) for e in self.rest("/jobmanager/config")}
        except (OSError, ValueError, KeyError, TypeError):
            conf = {}
        return flink_duration_s(conf.get("metrics.fetcher.update-interval", ""), default=10.0)

    def exceptions(self) -> list[str]:
        try:
            hist = self.rest(f"/jobs/{self.job_id}/exceptions?maxExceptions=50")
        except OSError:
            return []
        entries = hist.get("exceptionHistory", {}).get("entries", [])
        return [str(e.get("exceptionName", "?")).rsplit(".", 1)[-1][:80] for e in entries]

    def decide_taskmanagers(self) -> list[str]:
        """REST ids of the TaskManagers running the decide operator now."""
        try:
            info = self.rest(f"/jobs/{self.job_id}")
            vid = next(v["id"] for v in info["vertices"] if v["name"].startswith("decide"))
            tms = self.rest(f"/jobs/{self.job_id}/vertices/{vid}/taskmanagers")["taskmanagers"]
            ids = [
                t.get("taskmanager-id") or t.get("taskmanagerId") for t in tms if t.get("status") == "RUNNING"
            ]
            return [i for i in ids if i]
        except (OSError, StopIteration, KeyError):
            return []

    def cancel(self) -> None:
        if not self.job_id:
            return
        req = urllib.request.Request(
            f"{self.cluster.rest_url}/jobs/{self.job_id}?mode=cancel", method="PATCH"
        )
        try:
            urllib.request.urlopen(req, timeout=10).close()  # noqa: S310
        except OSError:
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.state() not in {"CANCELED", "FAILED", "FINISHED"}:
            time.sleep(1)


FLINK_UNITS_S = {"": 0.001, "ms": 0.001, "milli": 0.001, "millis": 0.001, "millisecond": 0.001,
                 "milliseconds": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
                 "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
                 "h": 3600.0, "hour": 3600.0, "hours": 3600.0}  # fmt: skip


def flink_duration_s(text: str, default: float) -> float:
    """A Flink duration setting ("10 s", "500ms", "2min"; a bare number is milliseconds) in seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", text.lower())
    if not m or m.group(2) not in FLINK_UNITS_S:
        return default
    return int(m.group(1)) * FLINK_UNITS_S[m.group(2)]


def apply_rules(settings: Settings, table: str) -> None:
    from riskctl.core.rules import load_rules
    from riskctl.store.connection import connect
    from riskctl.store.rules_store import RuleStore

    conn = connect(settings)
    try:
        store = RuleStore(conn, table)
        store.apply(store.plan(load_rules(ROOT / "rules")), author="chaos")
    finally:
        conn.close()


def edit_rule_description(settings: Settings, table: str, rule_id: str) -> tuple[int, float]:
    """A new version of ``rule_id`` that decides alike (its description alone changes).

    Returns the version and the wall time of the commit.
    """
    from riskctl.core.rules import RuleSet, parse_rule
    from riskctl.store.connection import connect
    from riskctl.store.rules_store import RuleStore

    conn = connect(settings)
    try:
        store = RuleStore(conn, table)
        current = store.require(rule_id)
        doc = json.loads(json.dumps(current.document))
        doc["description"] = f"{doc.get('description', '')} (edited by the fault suite)".strip()
        others = [parse_rule(r.document) for r in store.current() if r.rule_id != rule_id]
        changes = store.apply(store.plan(RuleSet([*others, parse_rule(doc)])), author="chaos")
        committed = time.time()
    finally:
        conn.close()
    (change,) = [c for c in changes if c.rule_id == rule_id]
    return change.version, committed


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def ensure_taskmanagers(cluster: FlinkCluster, wanted: int) -> None:
    """Exactly ``wanted`` TaskManagers: start some if a previous scenario killed more than it replaced, stop
    the newest if earlier runs left extra ones (idle JVMs cost CPU here, and a spare changes the test)."""

    def registered() -> int:
        ov = cluster.overview() or {}
        return int(str(ov.get("taskmanagers", 0)))

    running = sorted(cluster.taskmanager_pids().items(), key=lambda kv: kv[0].stat().st_mtime)
    for pid_file, pid in running[wanted:]:
        terminate(pid)
        pid_file.unlink(missing_ok=True)
    if running[wanted:]:
        wait_for(lambda: registered() <= wanted, 60)

    missing = wanted - max(registered(), len(cluster.taskmanager_pids()))
    for _ in range(max(0, missing)):
        cluster.start_taskmanager()
    wait_for(lambda: registered() >= wanted, 90)


# -- a scenario run ---------------------------------------------------------------------------------------
@dataclass
class Run:
    job: Job
    load: Load
    reader: Reader
    faults: list[dict[str, Any]] = field(default_factory=list)  # {"what", "at", "back_at"}
    extra: dict[str, Any] = field(default_factory=dict)
    load_window: tuple[float, float] = (0.0, 0.0)


def start_run(settings: Settings, cluster: FlinkCluster, name: str, delivery: str, plan: Plan) -> Run:
    from riskctl.core.rules import load_rules

    ensure_taskmanagers(cluster, 2)
    job = Job(settings, cluster, name, delivery, plan)
    isolation = "read_committed" if delivery == "exactly-once" else "read_uncommitted"
    reader = Reader(settings.kafka_bootstrap, job.topics, isolation)
    reader.start()
    log(f"{name}: submitting ({delivery})")
    n_rules = len(load_rules(ROOT / "rules"))

    def rules_in() -> bool:
        with reader.lock:
            return len({r["rule_id"] for _, r in reader.status if r.get("state") == "accepted"}) >= n_rules

    try:
        job.submit()
        if not wait_for(rules_in, 240):
            msg = f"the job ({job.state()}) did not report its {n_rules} rules accepted within 240 s"
            raise RuntimeError(msg)
    except BaseException:
        reader.stop()
        job.cancel()
        raise
    load = Load(settings.kafka_bootstrap, job.topics["events"], plan.rate)
    run = Run(job, load, reader)
    log(f"{name}: job {job.job_id} running, load at {plan.rate} events/s")
    load.start()
    run.load_window = (time.time(), 0.0)
    return run


def finish_run(run: Run, plan: Plan) -> None:
    run.load.stop()
    run.load_window = (run.load_window[0], time.time())
    expected = set(run.load.acked)

    def settled() -> bool:
        with run.reader.lock:
            quiet = time.time() - run.reader.last > plan.drain_quiet_s
            done = expected <= set(run.reader.decisions) | dead_ids(run)
        # a job still restarting may yet decide: only a quiet job whose tasks all run, or that ended, is done
        return done or (quiet and (run.job.tasks_running() or run.job.state() in {"FAILED", "CANCELED"}))

    wait_for(settled, plan.drain_max_s, step=1.0)
    if run.job.delivery == "exactly-once":
        time.sleep(3)  # the last checkpoint commits the last transaction
    run.reader.stop()  # what arrived is what the summary counts


def close_run(run: Run) -> None:
    """Cancel the job and stop the load and the reader, whatever happened (idempotent)."""
    run.job.cancel()
    if run.load.is_alive():
        run.load.stop()
    if run.reader.is_alive():
        run.reader.stop()


def dead_ids(run: Run) -> set[str]:
    """Ids of the records the job dead-lettered (matched by partition and offset)."""
    by_coord = {coord: rid for rid, coord in run.load.acked.items()}
    out = set()
    for d in run.reader.dead:
        coord = (d.get("partition"), d.get("offset"))
        if coord in by_coord:
            out.add(by_coord[coord])
    return out


def replay_diffs(run: Run, only: set[str] | None = None) -> dict[str, Any]:
    """Replay the acknowledged records in send order with rules/; count decisions unlike the job's."""
    lines = [v for rid, v in run.load.order if rid in run.load.acked and v and b"\n" not in v and v.strip()]
    src = run.job.work / "replayed.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = run.job.work / "replay-out.jsonl"
    res = subprocess.run(
        [PYTHON, "-m", "riskctl.cli.main", "replay", "--rules", str(ROOT / "rules"), str(src), "-o", str(out),
         "--summary-json"],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
        env=process_env(),
    )  # fmt: skip
    if res.returncode != 0:
        return {"replay_error": f"exit {res.returncode}: {res.stderr.strip().splitlines()[-1:]}"}
    replayed: dict[str, str] = {}
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "decision":
            replayed[str(rec["event_id"])] = str(rec["action"])
    differ = []
    for eid, got in run.reader.decisions.items():
        if only is not None and eid not in only:
            continue
        if eid in replayed and replayed[eid] != got[0][1]:
            differ.append((eid, got[0][1], replayed[eid]))
    return {"replay_differ": len(differ), "replay_differ_examples": differ[:5], "replayed": len(replayed)}


def gaps(run: Run) -> dict[str, Any]:
    """Pauses in the decision stream while the load ran, and the recovery after each fault."""
    t0, t1 = run.load_window
    with run.reader.lock:
        times = sorted(t for t in run.reader.arrivals if t >= t0)
    if not times:
        return {"longest_gap_s": round(t1 - t0, 1), "silent_s": round(t1 - t0, 1), "recovery_s": None}
    edges = [t0 + 2.0, *times]  # the first decisions may take a moment: start counting 2 s into the load
    pauses = [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b - a > GAP_S]
    if times[-1] < t1 - GAP_S:
        pauses.append((times[-1], t1))
    recovery: list[float | str] = []
    refs = [f.get("back_at") or f["at"] for f in run.faults]

    def owner(a: float) -> int | None:
        """The fault a pause starting at ``a`` follows: the last one before it (or up to GAP_S after)."""
        before = [i for i, r in enumerate(refs) if r <= a + GAP_S]
        return before[-1] if before else None

    for i, ref in enumerate(refs):
        # decisions flow again: the end of the last pause this fault caused or fell into; 0: no pause
        own = [b for a, b in pauses if owner(a) == i or a <= ref <= b]
        if own and max(own) >= t1 and times[-1] < t1 - GAP_S:
            recovery.append("not resumed")  # the pause lasted until the load stopped, nothing after it
        else:
            recovery.append(round(max(own) - ref, 1) if own else 0.0)
    per_second: dict[int, int] = defaultdict(int)
    for t in times:
        per_second[int(t - t0)] += 1
    return {
        "longest_gap_s": round(max((b - a for a, b in pauses), default=0.0), 1),
        "silent_s": round(sum(b - a for a, b in pauses), 1),
        "recovery_s": recovery,
        "decisions_per_second": [per_second.get(i, 0) for i in range(int(max(times) - t0) + 1)],
    }


def summarize(run: Run, name: str, extra_ids: set[str] | None = None) -> dict[str, Any]:
    acked = set(run.load.acked)
    with run.reader.lock:
        decided = {eid for eid in acked if eid in run.reader.decisions}
        dead = dead_ids(run) & acked
        dup = 0
        dup_other = 0
        for eid in acked:
            got = run.reader.decisions.get(eid, [])
            dup += max(0, len(got) - 1)
            dup_other += sum(1 for _, a in got[1:] if a != got[0][1])
    row: dict[str, Any] = {
        "scenario": name,
        "delivery": run.job.delivery,
        "sent": len(acked),
        "not_acked": len(run.load.failed),
        # produced, yet neither acknowledged nor failed when the load stopped (its flush ran out): the broker
        # never had them, so they are in no other count (chaos-stop35: about 30,000 after a broker restart)
        "not_delivered": (undelivered := len(run.load.order) - len(acked) - len(run.load.failed)),
        "decided": len(decided),
        "dead_lettered": len(dead - decided),
        "lost": len(acked - decided - dead),
        "duplicates": dup,
        "duplicates_other_action": dup_other,
        "restarts": run.job.restarts(),
        "failures": len(failures := run.job.exceptions()),
        "exceptions": {name: failures.count(name) for name in sorted(set(failures))},
        "final_state": run.job.state(),
        "faults": [{k: round(v - run.load_window[0], 1) if isinstance(v, float) else v for k, v in f.items()}
                   for f in run.faults],
        **gaps(run),
        **run.extra,
    }  # fmt: skip
    if undelivered:
        row["load_producer"] = producer_state(run.load.stats, run.job.topics["events"])
    row.update(replay_diffs(run))
    return row


def producer_state(stats: str, topic: str) -> dict[str, Any]:
    """What librdkafka's last statistics say of the load's producer: the idempotence state, each broker's
    connection and requests, and ``topic``'s partitions (leader, queued, in flight)."""
    try:
        doc = json.loads(stats)
    except ValueError:
        return {"stats": "none"}
    parts = doc.get("topics", {}).get(topic, {}).get("partitions", {})
    return {
        "age_s": round(time.time() - doc.get("time", 0), 1),
        "idemp_state": doc.get("eos", {}).get("idemp_state"),
        "brokers": {
            b.get("name"): {**{k: b.get(k) for k in ("state", "outbuf_cnt", "waitresp_cnt")},
                            "partitions": sorted(b.get("toppars", {}))}
            for b in doc.get("brokers", {}).values()
        },
        "partitions": {
            p: {k: v.get(k) for k in ("leader", "msgq_cnt", "xmit_msgq_cnt", "msgs_inflight")}
            for p, v in parts.items()
            if p != "-1"
        },
    }  # fmt: skip


# -- scenarios --------------------------------------------------------------------------------------------
@contextmanager
def scenario_run(
    settings: Settings, cluster: FlinkCluster, name: str, delivery: str, plan: Plan
) -> Iterator[Run]:
    """The frame of a scenario on the cluster: the job started under load and warmed up for
    ``plan.warmup_s``; the scenario injects its fault; the run is closed however the scenario ends."""
    run = start_run(settings, cluster, name, delivery, plan)
    try:
        time.sleep(plan.warmup_s)
        yield run
    finally:
        close_run(run)


def settle_and_summarize(run: Run, plan: Plan, tail_s: float) -> dict[str, Any]:
    """Let the job run ``tail_s`` more seconds after the fault, stop the load, drain, and summarize."""
    time.sleep(tail_s)
    finish_run(run, plan)
    return summarize(run, run.job.name)


def scenario_tm_kill(settings: Settings, cluster: FlinkCluster, plan: Plan, delivery: str) -> dict[str, Any]:
    name = f"tm-kill-{'eo' if delivery == 'exactly-once' else 'alo'}"
    with scenario_run(settings, cluster, name, delivery, plan) as run:
        for i in range(plan.tm_kills):
            if i:
                time.sleep(max(0.0, plan.kill_every_s - plan.replacement_after_s))
            running = [cluster.taskmanager_pid(t) for t in run.job.decide_taskmanagers()]
            pids = [p for p in running if p] or list(cluster.taskmanager_pids().values())
            victim = pids[0]
            t = time.time()
            cluster.kill_taskmanager(victim)
            log(f"kill -9 TaskManager pid {victim} ({i + 1}/{plan.tm_kills}); job {run.job.state()}")
            run.faults.append({"what": f"kill -9 TaskManager {i + 1}", "at": t})
            time.sleep(plan.replacement_after_s)
            replacement = cluster.start_taskmanager()
            if plan.warm_replacements:  # as an operator would: `riskctl warm` once it has registered
                warming = threading.Thread(
                    target=warm_in_background, args=(cluster, replacement), daemon=True
                )
                warming.start()
        return settle_and_summarize(run, plan, plan.tail_s)


def warm_in_background(cluster: FlinkCluster, pid: int) -> None:
    try:
        res = cluster.warm(new_pid=pid)
        log(f"warm-up of TaskManager {pid}: {res.state} in {res.seconds} s on {len(res.warmed)} TaskManagers")
    except ServiceError as exc:
        log(f"warm-up of TaskManager pid {pid} failed: {exc}")


def outage(service: Kafka | MariaDB, name: str, down_s: float) -> tuple[float, float]:
    """Stop ``service``, keep it down ``down_s`` seconds, start it again; (stopped at, back at) wall times."""
    t = time.time()
    service.stop()
    log(f"{name} stopped; down {down_s:.0f} s")
    time.sleep(down_s)
    service.start(timeout=120)
    return t, time.time()


def scenario_broker(settings: Settings, cluster: FlinkCluster, plan: Plan) -> dict[str, Any]:
    kafka = Kafka(settings)
    with scenario_run(settings, cluster, "broker-stop", "at-least-once", plan) as run:
        try:
            t, back = outage(kafka, "broker", plan.broker_down_s)
            log(f"broker back after {back - t:.1f} s; job {run.job.state()}")
            run.faults.append({"what": f"broker stop {plan.broker_down_s:.0f} s", "at": t, "back_at": back})
            return settle_and_summarize(run, plan, plan.tail_s)
        finally:
            kafka.start(timeout=120)


def scenario_mysql(settings: Settings, cluster: FlinkCluster, plan: Plan) -> dict[str, Any]:
    db = MariaDB(settings)
    with scenario_run(settings, cluster, "mysql-stop", "at-least-once", plan) as run:
        try:
            t, back = outage(db, "MariaDB", plan.mysql_down_s)
            run.faults.append({"what": f"MySQL stop {plan.mysql_down_s:.0f} s", "at": t, "back_at": back})
            rule = "transfer_velocity"
            version, committed = edit_rule_description(settings, run.job.table, rule)
            log(f"MariaDB back; rule {rule} v{version} committed; job {run.job.state()}")

            def arrived() -> float | None:
                with run.reader.lock:
                    seen = [
                        ts
                        for ts, r in run.reader.status
                        if r.get("rule_id") == rule and r.get("version") == version
                    ]
                return min(seen) if seen else None

            wait_for(lambda: arrived() is not None, 120)
            at = arrived()
            run.extra["rule_edit_propagation_s"] = round(at - committed, 2) if at else "not within 120 s"
            return settle_and_summarize(run, plan, max(0.0, plan.tail_s - (time.time() - back)))
        finally:
            db.start(timeout=120)


def scenario_poison(settings: Settings, cluster: FlinkCluster, plan: Plan) -> dict[str, Any]:
    with scenario_run(settings, cluster, "poison", "at-least-once", plan) as run:
        run_id = run.load.maker.run
        # a brute force whose attempts straddle another user's far-future event (issue 11: it blinded
        # the engine)
        probe = f"{run_id}-probe"

        def login(i: int, ok: bool) -> tuple[str, bytes]:
            e = {"event_id": f"{probe}-{i}", "user_id": "pz-probe", "type": "login", "ts": now_ms(),
                 "success": ok, "device_id": "d1", "city": "Paris"}  # fmt: skip
            return e["event_id"], json.dumps(e).encode()

        poisons = poison_records(run_id)
        t = time.time()
        run.faults.append({"what": f"{len(poisons)} poison records", "at": t})
        for i in (0, 1):
            rid, v = login(i, False)
            run.load.send(rid, v, b"pz-probe")
            time.sleep(0.2)
        for name, value, key in poisons:
            run.load.send(f"{run_id}-p-{name}", value, key)
            time.sleep(0.5)
        for i, ok in ((2, False), (3, True)):
            rid, v = login(i, ok)
            run.load.send(rid, v, b"pz-probe")
            time.sleep(0.2)
        row = settle_and_summarize(run, plan, plan.tail_s)
        ids = {f"{run_id}-p-{n}" for n, _, _ in poisons}
        with run.reader.lock:
            decided = {i for i in ids if i in run.reader.decisions}
            dead = dead_ids(run) & ids
            probe_action = run.reader.decisions.get(f"{probe}-3", [(0, "none")])[0][1]
        row["poison_outcomes"] = {
            n: ("decided" if f"{run_id}-p-{n}" in decided else "dead-letter" if f"{run_id}-p-{n}" in dead
                else "none" if f"{run_id}-p-{n}" in run.load.acked else "not accepted by the broker")
            for n, _, _ in poisons
        }  # fmt: skip
        row["probe_brute_force_across_far_future"] = f"{probe_action} (REJECT expected)"
        return row


def hostile_lines() -> list[tuple[str, bytes]]:
    """Hostile lines for ``riskctl replay`` (one line each, so no raw newline in them)."""
    lines = [(n, v) for n, v, _ in poison_records("file") if v and b"\n" not in v]
    t = now_ms()
    extra = [
        ("nested-100k", b'{"event_id":"file-n100k","user_id":"f1","type":"login","ts":%d,"x":' % t
         + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("surrogate-event-id", b'{"event_id":"\\ud800","user_id":"f2","type":"login","ts":%d}' % t),
        ("surrogate-type", b'{"event_id":"file-st","user_id":"f2","type":"\\udfff","ts":%d}' % t),
        ("avg-1e400", b'{"event_id":"file-avg","user_id":"f3","type":"transfer","ts":%d,"amount":1e400}' % t),
        ("valid-after", b'{"event_id":"file-last","user_id":"f4","type":"login","ts":%d,"success":true}' % t),
    ]  # fmt: skip
    return lines + extra


def scenario_file(plan: Plan) -> dict[str, Any]:
    """``riskctl replay`` of a hostile event file: does every line get an outcome, and does it finish?"""
    work = WORK / f"hostile-file-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True, exist_ok=True)
    lines = hostile_lines()
    src = work / "hostile.jsonl"
    src.write_bytes(b"\n".join(v for _, v in lines) + b"\n")
    out = work / "out.jsonl"
    t = time.monotonic()
    try:
        res = subprocess.run(
            [PYTHON, "-m", "riskctl.cli.main", "replay", "--rules", str(ROOT / "rules"), str(src),
             "-o", str(out), "--summary-json"],
            capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
            env=process_env(),
        )  # fmt: skip
        code: int | str = res.returncode
        stderr = res.stderr
    except subprocess.TimeoutExpired:
        code, stderr = "timeout after 300 s", ""
    seconds = round(time.monotonic() - t, 1)
    decided = 0
    if out.exists():
        for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                decided += json.loads(line).get("kind") == "decision"
            except ValueError:
                continue
    summary: dict[str, Any] = {}
    for line in reversed(stderr.splitlines()):
        if line.startswith("{"):
            try:
                summary = json.loads(line)
                break
            except ValueError:
                continue
    bad = int(summary.get("bad_lines", 0)) if summary else sum("(skipped)" in s for s in stderr.splitlines())
    traceback_seen = "Traceback (most recent call last)" in stderr
    last = stderr.strip().splitlines()[-1][:160] if stderr.strip() else ""
    return {
        "scenario": "hostile-file",
        "delivery": "replay",
        "sent": len(lines),
        "decided": decided,
        "dead_lettered": bad,
        "lost": max(0, len(lines) - decided - bad),
        "duplicates": 0,
        "duplicates_other_action": 0,
        "restarts": None,
        "final_state": f"exit {code}" + (" with a traceback" if traceback_seen else ""),
        "replay_seconds": seconds,
        "last_stderr_line": last if code != 0 else "",
        "lines": [n for n, _ in lines],
    }


# -- report -----------------------------------------------------------------------------------------------
COLUMNS = [
    ("scenario", "scenario"), ("delivery", "delivery"), ("sent", "sent"), ("decided", "decided"),
    ("dead_lettered", "dead-lettered"), ("lost", "lost"), ("duplicates", "dups"),
    ("duplicates_other_action", "dups w/ other action"), ("replay_differ", "≠ replay"),
    ("restarts", "restarts"), ("failures", "failures"),
    ("silent_s", "s without decisions"), ("recovery_s", "decisions again after (s)"),
    ("rule_edit_propagation_s", "rule edit (s)"), ("final_state", "final state"),
]  # fmt: skip


MD_SKIP = {"lines", "traceback", "decisions_per_second"}  # in the JSON only


def cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, list):
        return ", ".join(cell(x) for x in v) or "–"
    return str(v).replace("|", "\\|")


def code_version() -> str:
    """The commit the suite started on, plus "+changes" when riskctl/ or jobs/ differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False).stdout

    dirty = git("status", "--porcelain", "--", "riskctl", "jobs").strip()
    return git("rev-parse", "--short", "HEAD").strip() + (" +uncommitted changes" if dirty else "")


def write(rows: list[dict[str, Any]], plan: Plan, name: str, started: float, commit: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "command": " ".join([".venv/bin/python", "bench/chaos/run.py", *sys.argv[1:]]),
        "minutes": round((time.time() - started) / 60, 1),
        "plan": plan.__dict__,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str) + "\n")
    md = [
        f"# Fault suite: {name}",
        "",
        f"{meta['date']}, commit {commit}, `{meta['command']}`, {meta['minutes']} min. Cluster: standalone, "
        f"2 TaskManagers, p=2, {plan.rate} events/s of valid load. Columns: bench/chaos/README.md.",
        "",
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        md.append("| " + " | ".join(cell(r.get(k)) for k, _ in COLUMNS) + " |")
    md += ["", "## Details", ""]
    for r in rows:
        details = {k: v for k, v in r.items() if k not in {c for c, _ in COLUMNS} and k not in MD_SKIP}
        text = "; ".join(
            f"{k}: {json.dumps(v) if isinstance(v, dict) else cell(v)}" for k, v in details.items()
        )
        md.append(f"- **{r['scenario']}**: {text}")
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    log(f"wrote {RESULTS / name}.md and .json")


SCENARIOS = ["tm_kill", "tm_kill_eo", "broker", "mysql", "poison", "file"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one TaskManager kill, shorter phases (~8 min)")
    p.add_argument("--only", default="", help=f"comma-separated scenarios among {', '.join(SCENARIOS)}")
    p.add_argument("--name", default="chaos", help="results file name under bench/results/ (no extension)")
    p.add_argument(
        "--no-warm",
        action="store_true",
        help="do not warm replacement TaskManagers (riskctl warm), for an A/B",
    )
    args = p.parse_args()
    plan = Plan.of(args.quick)
    if args.no_warm:
        plan = replace(plan, warm_replacements=False)
    chosen = [s for s in (args.only.split(",") if args.only else SCENARIOS) if s]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.quick and not args.only:
        chosen = [s for s in chosen if s != "tm_kill_eo"]
    settings = load_settings()
    settings.stack.flink_taskmanagers = max(2, settings.stack.flink_taskmanagers)
    started = time.time()
    commit = code_version()
    for svc in (Kafka(settings), MariaDB(settings)):
        svc.start(timeout=180)
    cluster = FlinkCluster(settings)
    if "file" not in chosen or len(chosen) > 1:
        cluster.start(timeout=180)
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "tm_kill": lambda: scenario_tm_kill(settings, cluster, plan, "at-least-once"),
        "tm_kill_eo": lambda: scenario_tm_kill(settings, cluster, plan, "exactly-once"),
        "broker": lambda: scenario_broker(settings, cluster, plan),
        "mysql": lambda: scenario_mysql(settings, cluster, plan),
        "poison": lambda: scenario_poison(settings, cluster, plan),
        "file": lambda: scenario_file(plan),
    }
    rows = []
    for name in chosen:
        log(f"== {name}")
        try:
            row = runs[name]()
        except Exception as exc:  # noqa: BLE001 - a scenario that breaks is a row of the table
            row = {"scenario": name, "final_state": f"suite error: {type(exc).__name__}: {str(exc)[:300]}",
                   "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
        log(
            f"{name}: "
            + json.dumps({k: v for k, v in row.items() if k not in {"lines", "traceback"}}, default=str)
        )
        rows.append(row)
        write(rows, plan, args.name, started, commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
