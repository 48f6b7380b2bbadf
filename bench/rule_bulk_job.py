"""A bulk of rule changes against the real job: how long until the job has applied them, and what events wait.

    .venv/bin/python bench/rule_bulk_job.py [--rules 10000] [--updates 1000] [--rate 100] [--out FILE]

Needs the local stack's Kafka and MariaDB (``riskctl stack up``). Starts the risk job (MiniCluster,
parallelism 1, the rules of ``rules/``, MySQL CDC) on fresh topics and a fresh rules table, then, while a
steady ``--rate`` of login events is decided:

1. inserts ``--rules`` new rules in one transaction (per-merchant transfer rules, each with a feature of its
   own), the way a script or a migration would;
2. writes ``--updates`` new versions of one rule, each in its own transaction, as fast as MariaDB takes them.

For each phase: from the commit (the last commit for 2) to the job's status records of the first, the
median and the last change, and the decision latency of the login events meanwhile (produce to decision
read). Writes a markdown table to ``--out`` (default bench/results/rule-bulk-job.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer  # noqa: E402

from riskctl.config import load_settings  # noqa: E402
from riskctl.store.connection import connect  # noqa: E402
from tests.integration.support import new_job, start_job, wait_rules  # noqa: E402


def document(i: int) -> dict[str, Any]:
    return {
        "id": f"merchant_{i:05d}",
        "action": "REVIEW",
        "applies_to": ["transfer"],
        "features": {
            "s": {
                "kind": "sum",
                "field": "amount",
                "window": "5m",
                "filter": f'event.type == "transfer" and event.merchant == "m{i}"',
            }
        },
        "when": f"s > {1000 + i}",
    }


class Traffic:
    """Login events at a steady rate, and the latency of their decisions (sent to read)."""

    def __init__(self, bootstrap: str, topics: dict[str, str], rate: float) -> None:
        self.bootstrap, self.topics, self.rate = bootstrap, topics, rate
        self.sent: dict[str, float] = {}
        self.latency: list[tuple[str, float]] = []  # (event id, sent to read in s)
        self.stop_sending = threading.Event()
        self.stop = threading.Event()

    def produce(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 0})
        n, start = 0, time.monotonic()
        while not self.stop_sending.is_set():
            eid = f"bulk-{n}"
            user = f"u{n % 50}"
            event = {"event_id": eid, "user_id": user, "type": "login", "success": True, "city": "Paris"}
            event["ts"] = int(time.time() * 1000)
            self.sent[eid] = time.monotonic()
            producer.produce(self.topics["events"], json.dumps(event).encode(), key=user.encode())
            producer.poll(0)
            n += 1
            time.sleep(max(0.0, start + n / self.rate - time.monotonic()))
        producer.flush(10)

    def consume(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bulk-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([self.topics["decisions"]])
        while not self.stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            now = time.monotonic()
            eid = json.loads(msg.value()).get("event_id")
            if eid in self.sent:
                self.latency.append((eid, now - self.sent[eid]))
        consumer.close()

    def between(self, start: float, end: float) -> str:
        """The decision latency of the events sent from ``start`` to ``end`` (whenever decided)."""
        decided = {eid: lat for eid, lat in self.latency}
        sent = [eid for eid, at in self.sent.items() if start <= at <= end]
        values = sorted(decided[eid] for eid in sent if eid in decided)
        if not values:
            return f"{len(sent)} sent, none decided"
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        undecided = f", {len(sent) - len(values)} never decided" if len(values) < len(sent) else ""
        return (
            f"{len(sent)} sent{undecided}: p50 {statistics.median(values) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"
        )

    def drain(self, timeout: float) -> None:
        """Stop sending; wait until every event sent is decided (or ``timeout``), then stop reading."""
        self.stop_sending.set()
        end = time.monotonic() + timeout
        while len(self.latency) < len(self.sent) and time.monotonic() < end:
            time.sleep(0.2)
        self.stop.set()


def watch_status(bootstrap: str, topic: str, wanted: set[tuple[str, int]], timeout: float) -> list[float]:
    """The monotonic time each wanted (rule, version) got a final status, in arrival order."""
    group = f"st-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen: list[float] = []
    left = set(wanted)
    end = time.monotonic() + timeout
    while left and time.monotonic() < end:
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        rec = json.loads(msg.value())
        key = (rec.get("rule_id"), rec.get("version"))
        if key in left and rec.get("state") in ("accepted", "refused"):
            left.discard(key)
            seen.append(time.monotonic())
    consumer.close()
    return seen


def figures(commit: float, seen: list[float], wanted: int) -> str:
    if not seen:
        return f"no status of {wanted:,}"
    mid = seen[len(seen) // 2]
    return (
        f"{len(seen):,} of {wanted:,}: first {seen[0] - commit:.2f} s, median {mid - commit:.2f} s, "
        f"last {seen[-1] - commit:.2f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=100.0, help="login events/s decided meanwhile")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each phase")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rule-bulk-job.md"))
    args = parser.parse_args()
    settings = load_settings()
    bootstrap = settings.kafka_bootstrap
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rule-bulk-", ignore_cleanup_errors=True) as tmp:
        job = new_job(settings, Path(tmp))
        proc = start_job(job, Path(tmp) / "job.log", {"RISKCTL_JOB_PARALLELISM": "1"})
        try:
            wait_rules(job)
            traffic = Traffic(bootstrap, job.topics, args.rate)
            threads = [threading.Thread(target=f, daemon=True) for f in (traffic.produce, traffic.consume)]
            for t in threads:
                t.start()
            time.sleep(10)
            phases = [("before", time.monotonic() - 8, time.monotonic(), "")]
            conn = connect(settings)
            cur = conn.cursor()
            table = job.rules_table
            insert = f"INSERT INTO {table} (rule_id, version, status, document) VALUES (%s, 1, 'active', %s)"
            new = [(f"merchant_{i:05d}", json.dumps(document(i))) for i in range(args.rules)]
            cur.executemany(insert, new)
            conn.commit()
            commit = time.monotonic()
            wanted = {(f"merchant_{i:05d}", 1) for i in range(args.rules)}
            seen = watch_status(bootstrap, job.topics["status"], wanted, args.timeout)
            print(figures(commit, seen, args.rules), flush=True)
            phase = f"{args.rules:,} new rules in one transaction"
            phases.append((phase, commit, time.monotonic(), figures(commit, seen, args.rules)))
            conn.autocommit(True)
            doc = document(0)
            start = time.monotonic()
            for v in range(2, args.updates + 2):
                doc["when"] = f"s > {1000 + v}"
                cur.execute(
                    f"UPDATE {table} SET version = %s, document = %s WHERE rule_id = %s",
                    (v, json.dumps(doc), "merchant_00000"),
                )
            commit = time.monotonic()
            wanted = {("merchant_00000", v) for v in range(2, args.updates + 2)}
            seen = watch_status(bootstrap, job.topics["status"], wanted, args.timeout)
            phase = f"{args.updates:,} updates of one rule ({commit - start:.1f} s to write; from the last)"
            phases.append((phase, start, time.monotonic(), figures(commit, seen, args.updates)))
            conn.close()
            traffic.drain(120)
            for t in threads:
                t.join(15)
            rows = [f"| {name} | {traffic.between(a, b)} | {status} |" for name, a, b, status in phases]
            proc.check_alive()
        finally:
            proc.stop()
    head = [
        "# A bulk of rule changes against the real job",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC (load average {os.getloadavg()[0]:.1f}): "
        f"`{' '.join(['bench/rule_bulk_job.py', *sys.argv[1:]])}`; MiniCluster, parallelism 1, MySQL CDC, "
        f"{args.rate:g} login events/s decided throughout (they read none of the new rules).",
        "",
        "| phase | login events sent meanwhile (sent to decision read) | job's statuses, from the commit |",
        "|---|---|---|",
    ]
    text = "\n".join([*head, *rows]) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
