"""End-to-end benchmark of the risk job.

Events into Kafka -> embedded job (file rules) -> decisions out of Kafka.

Latency mode (default): produce at a fixed rate, one event at a time (kafka-python, linger_ms=0, keyed by
user_id, event time = now); a consumer thread reads the decisions topic; latency = decision receive wall time
minus event send wall time, per event_id. Every event must get exactly one decision.

Max-throughput mode (--max-throughput N): preload N events before the job starts, then start it and measure
decisions/s from the first to the last decision (and over the 10%..90% part), plus the total time.

    .venv/bin/python bench/e2e_bench.py --rate 1000 --seconds 30 --parallelism 1
    .venv/bin/python bench/e2e_bench.py --max-throughput 200000 --parallelism 1

Writes bench/results/e2e.json (all runs) and appends a line to bench/results/e2e.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from harness import process_env  # noqa: E402
from harness.workload import EventMaker  # noqa: E402

from riskctl.config import load_settings  # noqa: E402
from riskctl.core.stats import percentile  # noqa: E402
from riskctl.kafka_admin import ensure_topics  # noqa: E402

RESULTS = ROOT / "bench" / "results"


# -- job process -----------------------------------------------------------------------------------
class Job:
    def __init__(self, topics: dict[str, str], parallelism: int, tmp: Path) -> None:
        self.log = tmp / "job.log"
        self.env = {
            "RISKCTL_JOB_EVENTS_TOPIC": topics["events"],
            "RISKCTL_JOB_DECISIONS_TOPIC": topics["decisions"],
            "RISKCTL_JOB_ALERTS_TOPIC": topics["alerts"],
            "RISKCTL_JOB_DEAD_LETTER_TOPIC": topics["dead"],
            "RISKCTL_JOB_RULE_STATUS_TOPIC": topics["status"],
            "RISKCTL_JOB_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
            "RISKCTL_JOB_RULES_SOURCE": "file",
            "RISKCTL_JOB_PARALLELISM": str(parallelism),
            "RISKCTL_JOB_CHECKPOINT_DIR": (tmp / "chk").as_uri(),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.started = time.time()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "jobs" / "risk_job.py")],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=process_env(self.env),
                cwd=ROOT,
            )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"job exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


# -- decisions reader ------------------------------------------------------------------------------
class Reader(threading.Thread):
    """Reads the decisions topic from the start; records receive wall time per event_id (the record key)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=10,
            max_poll_records=5000,
        )
        self.recv: dict[str, float] = {}  # first receive wall time
        self.broker_ts: dict[str, int] = {}  # record timestamp (job producer CreateTime, ms)
        self.dups = 0
        self.count = 0
        self.actions: dict[str, int] = {}
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        parse_actions = 0
        while not self.stop_flag.is_set():
            batches = self.consumer.poll(timeout_ms=50)
            now = time.time()
            with self.lock:
                for records in batches.values():
                    for m in records:
                        key = m.key.decode() if m.key else json.loads(m.value)["event_id"]
                        self.count += 1
                        if key in self.recv:
                            self.dups += 1
                            continue
                        self.recv[key] = now
                        self.broker_ts[key] = m.timestamp
                        if parse_actions < 20000:  # action mix from a sample (parsing all costs CPU)
                            parse_actions += 1
                            a = json.loads(m.value).get("action", "?")
                            self.actions[a] = self.actions.get(a, 0) + 1
        self.consumer.close()

    def has(self, key: str) -> bool:
        with self.lock:
            return key in self.recv

    def n(self) -> int:
        with self.lock:
            return len(self.recv)


def wait_for(cond: Any, timeout: float, job: Job, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        job.check_alive()
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``riskctl.core.stats``), NaN when there are no values."""
    value = percentile(values, p)
    return float("nan") if value is None else value


def producer(bootstrap: str, **kw: Any) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, **kw)


# -- modes -----------------------------------------------------------------------------------------
def latency_mode(
    args: argparse.Namespace, bootstrap: str, topics: dict[str, str], job: Job
) -> dict[str, Any]:
    maker = EventMaker(args.users, 42)
    reader = Reader(bootstrap, topics["decisions"])
    reader.start()
    prod = producer(bootstrap, linger_ms=0, acks=1)
    res: dict[str, Any] = {}
    try:
        job.start()
        warm = maker.make(int(time.time() * 1000))
        warm["event_id"] += "-warmup"
        prod.send(topics["events"], json.dumps(warm).encode(), key=warm["user_id"].encode())
        prod.flush()
        wait_for(lambda: reader.has(warm["event_id"]), args.start_timeout, job, "the warm-up decision")
        res["job_ready_s"] = round(time.time() - job.started, 1)
        print(f"job ready after {res['job_ready_s']} s", flush=True)
        time.sleep(2)  # let the warm-up settle

        total = int(args.rate * args.seconds)
        sent: dict[str, float] = {}
        late_sends = 0
        t0 = time.time()
        for i in range(total):
            target = t0 + i / args.rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                late_sends += 1
            now = time.time()
            e = maker.make(int(now * 1000))
            prod.send(topics["events"], json.dumps(e).encode(), key=e["user_id"].encode())
            sent[e["event_id"]] = now
        t_end = time.time()
        prod.flush()
        produce_s = t_end - t0
        print(f"sent {total} in {produce_s:.1f}s; draining", flush=True)
        try:
            wait_for(
                lambda: all(reader.has(k) for k in list(sent)[-50:]) and reader.n() >= total + 1,
                args.drain_timeout,
                job,
                "all decisions",
            )
        except TimeoutError as exc:
            print(exc, flush=True)
        time.sleep(2)  # catch late duplicates
        reader.stop_flag.set()
        reader.join(timeout=5)

        with reader.lock:
            recv = dict(reader.recv)
            broker = dict(reader.broker_ts)
        lat = [(recv[k] - s) * 1000 for k, s in sent.items() if k in recv]
        job_side = [
            broker[k] - s * 1000 for k, s in sent.items() if k in broker
        ]  # send -> job's produce time
        tail_side = [(recv[k] * 1000 - broker[k]) for k in sent if k in recv]  # job produce -> our receive
        missing = sum(1 for k in sent if k not in recv)
        unexpected = sum(1 for k in recv if k not in sent and not k.endswith("-warmup"))
        last_recv = max((recv[k] for k in sent if k in recv), default=t0)
        res.update(
            events=total,
            produce_s=round(produce_s, 2),
            achieved_send_rate=round(total / produce_s, 1),
            late_sends_over_50ms=late_sends,
            decisions=len(lat),
            decision_rate=round(len(lat) / max(1e-9, last_recv - t0), 1),
            missing=missing,
            duplicates=reader.dups,
            unexpected=unexpected,
            latency_ms={
                "p50": round(pct(lat, 50), 1),
                "p90": round(pct(lat, 90), 1),
                "p99": round(pct(lat, 99), 1),
                "max": round(max(lat), 1) if lat else None,
                "mean": round(statistics.fmean(lat), 1) if lat else None,
            },
            send_to_job_produce_ms={"p50": round(pct(job_side, 50), 1), "p99": round(pct(job_side, 99), 1)},
            job_produce_to_recv_ms={"p50": round(pct(tail_side, 50), 1), "p99": round(pct(tail_side, 99), 1)},
            latency_by_second_p99_ms=_per_second(sent, recv, t0),
            actions_sample=reader.actions,
        )
    finally:
        reader.stop_flag.set()
        prod.close()
    return res


def _per_second(sent: dict[str, float], recv: dict[str, float], t0: float) -> list[float]:
    buckets: dict[int, list[float]] = {}
    for k, s in sent.items():
        if k in recv:
            buckets.setdefault(int(s - t0), []).append((recv[k] - s) * 1000)
    return [round(pct(buckets[b], 99), 1) for b in sorted(buckets)]


def throughput_mode(
    args: argparse.Namespace, bootstrap: str, topics: dict[str, str], job: Job
) -> dict[str, Any]:
    n = args.max_throughput
    maker = EventMaker(args.users, 42)
    prod = producer(bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1)
    t0 = time.time()
    base = int(t0 * 1000)
    ids = set()
    for i in range(n):
        e = maker.make(base + i // 50)  # event time advances 1 ms per 50 events
        ids.add(e["event_id"])
        prod.send(topics["events"], json.dumps(e).encode(), key=e["user_id"].encode())
    prod.flush()
    prod.close()
    preload_s = time.time() - t0
    print(f"preloaded {n} events in {preload_s:.1f}s", flush=True)

    reader = Reader(bootstrap, topics["decisions"])
    reader.start()
    res: dict[str, Any] = {"events": n, "preload_s": round(preload_s, 1)}
    try:
        job.start()
        wait_for(lambda: reader.n() > 0, args.start_timeout, job, "the first decision")
        res["job_first_decision_s"] = round(time.time() - job.started, 1)
        print(f"first decision after {res['job_first_decision_s']} s", flush=True)
        last_n, last_change, last_print = 0, time.time(), time.time()
        deadline = time.time() + args.measure_limit
        while reader.n() < n and time.time() < deadline:
            if time.time() - last_print > 10:
                last_print = time.time()
                print(f"  {reader.n()} decisions", flush=True)
            job.check_alive()
            time.sleep(0.5)
            cur = reader.n()
            if cur != last_n:
                last_n, last_change = cur, time.time()
            elif time.time() - last_change > 30:
                print("no progress for 30 s; giving up", flush=True)
                break
        time.sleep(2)
        reader.stop_flag.set()
        reader.join(timeout=5)
        with reader.lock:
            times = sorted(reader.recv[k] for k in reader.recv if k in ids)
        got = len(times)
        res["complete"] = got == n  # False: stopped at --measure-limit, rates are over the part decided
        first, last = times[0], times[-1]
        lo, hi = times[int(got * 0.1)], times[int(got * 0.9) - 1]
        res.update(
            decisions=got,
            missing=n - got,
            duplicates=reader.dups,
            first_to_last_s=round(last - first, 2),
            rate_first_to_last=round((got - 1) / max(1e-9, last - first), 1),
            rate_10_to_90pct=round((int(got * 0.9) - int(got * 0.1)) / max(1e-9, hi - lo), 1),
            job_start_to_last_decision_s=round(last - job.started, 1),
            actions_sample=reader.actions,
        )
    finally:
        reader.stop_flag.set()
    return res


# -- main ------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000, help="events/s in latency mode")
    ap.add_argument("--seconds", type=float, default=30, help="duration of the latency run")
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=2, help="partitions of the events topic")
    ap.add_argument(
        "--max-throughput", type=int, metavar="N", default=0, help="preload N events, measure decisions/s"
    )
    ap.add_argument("--start-timeout", type=float, default=240)
    ap.add_argument("--drain-timeout", type=float, default=60)
    ap.add_argument(
        "--measure-limit",
        type=float,
        default=150,
        help="throughput mode: stop measuring this many s after the first decision",
    )
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # so that the finally blocks stop the job

    signal.signal(signal.SIGTERM, _term)
    settings = load_settings()
    bootstrap = settings.kafka_bootstrap
    suffix = uuid.uuid4().hex[:8]
    topics = {k: f"bench-{k}-{suffix}" for k in ("events", "decisions", "alerts", "dead", "status")}
    ensure_topics(bootstrap, topics.values(), partitions=args.partitions)
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="riskctl-e2e-"))
    job = Job(topics, args.parallelism, tmp)
    mode = "throughput" if args.max_throughput else "latency"
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        if args.max_throughput:
            res = throughput_mode(args, bootstrap, topics, job)
        else:
            res = latency_mode(args, bootstrap, topics, job)
    finally:
        job.stop()
        _delete_topics(bootstrap, list(topics.values()))
    run = {
        "mode": mode,
        "started": started,
        "command": "python bench/e2e_bench.py " + " ".join(sys.argv[1:]),
        "params": {
            "rate": args.rate if mode == "latency" else None,
            "seconds": args.seconds if mode == "latency" else None,
            "events": args.max_throughput or None,
            "users": args.users,
            "parallelism": args.parallelism,
            "partitions": args.partitions,
            "rules_source": "file",
        },
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0],
        },
        "job_log": str(job.log),
        "results": res,
    }
    print(json.dumps(run, indent=2))
    if not args.no_save:
        save(run)
    return 0


def save(run: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "e2e.json"
    data: dict[str, Any] = {"runs": []}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            pass
    data.setdefault("runs", []).append(run)
    path.write_text(json.dumps(data, indent=2) + "\n")
    md = RESULTS / "e2e.md"
    if not md.exists():
        md.write_text("# End-to-end benchmark (Kafka -> embedded job -> Kafka)\n\n")
    r, p, m = run["results"], run["params"], run["machine"]
    load = m["loadavg_start"][0]
    if run["mode"] == "latency":
        lat = r["latency_ms"]
        line = (
            f"- {run['started']} latency, p={p['parallelism']}, {p['rate']:.0f} ev/s x {p['seconds']:.0f} s: "
            f"sent {r['achieved_send_rate']} ev/s, decided {r['decision_rate']} ev/s; "
            f"latency ms p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} max {lat['max']}; "
            f"missing {r['missing']}, dup {r['duplicates']}; "
            f"job ready {r['job_ready_s']} s; nproc {m['nproc']}, load {load} (`{run['command']}`)\n"
        )
    else:
        line = (
            f"- {run['started']} max-throughput, p={p['parallelism']}, {p['events']} events preloaded: "
            f"**{r['rate_first_to_last']} decisions/s** first->last ({r['rate_10_to_90pct']} over 10-90%), "
            f"{r['first_to_last_s']} s first->last, {r['job_start_to_last_decision_s']} s job start->last; "
            f"{'complete' if r['complete'] else 'stopped at --measure-limit'}, "
            f"missing {r['missing']}, dup {r['duplicates']}; "
            f"nproc {m['nproc']}, load {load} (`{run['command']}`)\n"
        )
    with md.open("a") as fh:
        fh.write(line)


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            admin.delete_topics(names)
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001 - best effort
        print(f"could not delete topics: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
