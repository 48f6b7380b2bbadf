"""Contender: what a user would write instead of Flink, a plain Kafka consumer loop around the same engine.

One process, one thread: a kafka-python consumer (a consumer group, so two processes share the partitions and
scale like Flink's parallelism), ``riskctl.core`` with the rules of a folder, per-user state in in-memory
dicts
(``LocalRunner``), decisions to a topic keyed by event id, alerts keyed by alert id, bad records to a
dead-letter topic. The same JSON as the Flink job writes.

What it does not do, and the Flink job does: no checkpoints (state is lost on a restart, offsets are committed
by the consumer whatever the state), no rule changes while it runs, no event-time watermarks per partition
(the watermark is the newest ``ts`` this process saw), no rebalancing of state when the group changes, no
state bigger than the process's memory.

    python bench/contenders/plain_loop.py --bootstrap 127.0.0.1:19092 --events-topic T --decisions-topic D \\
        --alerts-topic A --dead-letter-topic X --rules-dir rules --group-id G [--stats-file stats.json]

Prints ``READY`` once it has partitions; runs until SIGTERM or SIGINT, then flushes and exits 0.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from harness.contenders import contender_parser  # noqa: E402

from riskctl.config.settings import JobSettings  # noqa: E402
from riskctl.core import jsoncodec  # noqa: E402
from riskctl.core.decisions import Decision  # noqa: E402
from riskctl.core.engine import Engine  # noqa: E402
from riskctl.core.errors import EventError  # noqa: E402
from riskctl.core.events import parse_event  # noqa: E402
from riskctl.core.rules import load_rules  # noqa: E402
from riskctl.core.runner import LocalRunner, tune_gc  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = contender_parser(__doc__)
    ap.add_argument("--decisions-topic", required=True)
    ap.add_argument("--alerts-topic", required=True)
    ap.add_argument("--dead-letter-topic", required=True)
    ap.add_argument("--rules-dir", required=True)
    ap.add_argument("--lateness-ms", type=int, default=5000)
    ap.add_argument("--state-ttl-ms", type=int, default=24 * 3600 * 1000)
    ap.add_argument("--stats-file", default=None)
    args = ap.parse_args(argv)

    from kafka import KafkaConsumer, KafkaProducer

    tune_gc()
    runner = LocalRunner(
        Engine(
            load_rules(args.rules_dir),
            lateness=args.lateness_ms,
            state_ttl=args.state_ttl_ms,
            dedup_window=JobSettings().dedup_window_ms,  # as the job decides (job.dedup "api")
        )
    )
    consumer = KafkaConsumer(
        args.events_topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        fetch_max_wait_ms=10,
        max_poll_records=500,
    )
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        linger_ms=JobSettings().sink_linger_ms,  # batches as the job's sinks do (job.sink_linger_ms)
        acks=1,
        batch_size=256 * 1024,
    )
    stop = {"now": False}

    def _stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    counts = {"events": 0, "decisions": 0, "alerts": 0, "dead": 0}
    ready = False
    while not stop["now"]:
        batches = consumer.poll(timeout_ms=100)
        if not ready and consumer.assignment():
            ready = True
            print("READY", flush=True)
        for records in batches.values():
            for m in records:
                counts["events"] += 1
                try:
                    if m.value is None:
                        msg = "empty record (null value)"
                        raise EventError(msg)
                    event = parse_event(m.value)
                except EventError as exc:
                    doc = {
                        "reason": exc.reason,
                        "field": exc.field,
                        "raw": m.value.decode("utf-8", "replace") if m.value is not None else None,
                        "topic": m.topic,
                        "partition": m.partition,
                        "offset": m.offset,
                    }
                    key = f"{m.topic}:{m.partition}:{m.offset}".encode()
                    producer.send(args.dead_letter_topic, json.dumps(doc).encode(), key=key)
                    counts["dead"] += 1
                    continue
                for record in runner.feed(event):
                    doc = record.to_dict()
                    if isinstance(record, Decision):
                        producer.send(
                            args.decisions_topic,
                            jsoncodec.dumpb(doc),
                            key=record.event_id.encode(),
                        )
                        counts["decisions"] += 1
                    else:
                        producer.send(
                            args.alerts_topic,
                            jsoncodec.dumpb(doc),
                            key=str(doc.get("alert_id")).encode(),
                        )
                        counts["alerts"] += 1
    producer.flush()
    producer.close()
    consumer.close()
    if args.stats_file:
        Path(args.stats_file).write_text(json.dumps(_stats(runner, counts), indent=2) + "\n")
    return 0


def _stats(runner: LocalRunner, counts: dict[str, int]) -> dict[str, Any]:
    sizes = runner.store.encoded_sizes()
    return {
        **counts,
        "users": len(sizes),
        "state_bytes_total": sum(sizes),
        "state_bytes_per_user": round(sum(sizes) / len(sizes), 1) if sizes else None,
        "written_at": time.time(),
    }


if __name__ == "__main__":
    sys.exit(main())
