"""Throughput and latency of ``riskctl alerts``: Kafka alerts topic -> dispatcher -> local HTTP receivers.

A burst of ``--alerts`` alert records is produced to a fresh topic; the dispatcher (``run_kafka``, the code
``riskctl alerts run`` runs) delivers each to ``--channels`` local webhook receivers (``http.server``,
answering 200 at once) and commits. Measured: the time from the first record produced to the last offset
committed (alerts/s), and per delivery the latency from the record's produce time to its arrival at a receiver
(p50/p99/max, nearest rank). With ``--delivered-topic`` the delivered ids are also written to a compacted
topic (the default of ``riskctl alerts run``). Needs the local stack's Kafka (``riskctl stack up``).

Run: ``PYTHONPATH=. .venv/bin/python bench/alerts_bench.py [--alerts 2000] [--channels 2]
[--delivered-topic] [--rate 100]``. Prints one JSON line. A burst measures throughput (and latency
includes the queue); ``--rate`` below the throughput measures the latency of one alert.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from riskctl.alerts.dispatcher import Dispatcher, run_kafka  # noqa: E402
from riskctl.alerts.settings import parse_config  # noqa: E402
from riskctl.config import load_settings  # noqa: E402
from riskctl.core.stats import percentile  # noqa: E402
from riskctl.kafka_admin import ensure_topics  # noqa: E402


def receiver(latencies: list[float], lock: threading.Lock) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            now = time.time() * 1000
            for item in json.loads(body)["items"]:
                with lock:
                    latencies.append(now - item["ts"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--delivered-topic", action="store_true")
    parser.add_argument("--rate", type=float, default=0, help="alerts/s produced; 0: one burst")
    args = parser.parse_args()
    settings = load_settings()
    run_id = uuid.uuid4().hex[:8]
    topic, dlq = f"bench-alerts-{run_id}", f"bench-alerts-dlq-{run_id}"
    ensure_topics(settings.kafka_bootstrap, [topic, dlq], partitions=2)
    latencies: list[float] = []
    lock = threading.Lock()
    servers = [receiver(latencies, lock) for _ in range(args.channels)]
    channels = {
        f"hook{i}": {"type": "webhook", "url": f"http://127.0.0.1:{s.server_address[1]}/"}
        for i, s in enumerate(servers)
    }
    config = parse_config({"channels": channels, "default_channels": list(channels)}, {})
    dispatcher = Dispatcher(config, dead_letter_topic=dlq, produce=lambda *a: None)
    committed: dict[Any, int] = {}
    thread = threading.Thread(
        target=run_kafka,
        kwargs={
            "dispatcher": dispatcher,
            "bootstrap": settings.kafka_bootstrap,
            "topics": [topic],
            "group_id": f"bench-alerts-{run_id}",
            "delivered_topic": f"bench-alerts-delivered-{run_id}" if args.delivered_topic else "",
            "on_commit": committed.update,
        },
        daemon=True,
    )
    thread.start()
    time.sleep(3)  # let the consumer join its group
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    start = time.monotonic()
    for i in range(args.alerts):
        doc = {
            "kind": "alert",
            "alert_id": f"bench:1:rule_alert:{run_id}-{i}",
            "user_id": f"user{i % 500}",
            "reason": "rule_alert",
            "ts": int(time.time() * 1000),
            "rule": {"id": "bench", "version": 1, "action": "REVIEW", "evidence": {"features": {"n": i}}},
            "event_id": f"e{i}",
            "ruleset_version": "rs",
        }
        producer.send(topic, json.dumps(doc).encode(), key=doc["alert_id"].encode())
        if args.rate:
            time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
    producer.flush()
    produced_s = time.monotonic() - start
    want = args.alerts * args.channels
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with lock:
            n = len(latencies)
        if n >= want and sum(committed.values()) >= args.alerts:
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    dispatcher.stop_event.set()
    thread.join(30)
    for s in servers:
        s.shutdown()
    with lock:
        lat = sorted(latencies)
    print(
        json.dumps(
            {
                "alerts": args.alerts,
                "channels": args.channels,
                "delivered_topic": args.delivered_topic,
                "rate": args.rate or "burst",
                "deliveries": len(lat),
                "produce_s": round(produced_s, 2),
                "all_committed_s": round(elapsed, 2),
                "alerts_per_s": round(args.alerts / elapsed, 1),
                "deliveries_per_s": round(len(lat) / elapsed, 1),
                "latency_ms": {
                    "p50": round(percentile(lat, 50) or 0, 1),
                    "p99": round(percentile(lat, 99) or 0, 1),
                    "max": round(lat[-1] if lat else 0, 1),
                },
                "dead_lettered": dispatcher.stats.dead_lettered,
            }
        )
    )


if __name__ == "__main__":
    main()
