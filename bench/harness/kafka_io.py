"""The bench's Kafka clients: preload a backlog, send at a fixed rate, read the decisions, fresh topics.

The load generator and the reader share the box with the contender they measure, so they use librdkafka
(confluent-kafka), which costs a fraction of what kafka-python does per record.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import log
from harness.workload import key_of


def producer(bootstrap: str, *, linger_ms: int) -> Any:
    """A kafka-python producer, for the few records (rule-propagation probes) whose cost does not count."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=linger_ms,
        acks=1,
        batch_size=256 * 1024,
        max_request_size=4 << 20,
    )


def fast_producer(bootstrap: str, *, linger_ms: int) -> Any:
    """The load generator's producer: librdkafka (confluent-kafka), because kafka-python, sending at the
    rates of the latency phases, took a large share of a core from the contender it measured (the figures
    are in bench/results/bench.md)."""
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
    """Write ``records`` to ``topic`` before the contender starts (the backlog it drains); seconds taken."""
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


@dataclass
class Topics:
    """The topics of one contender's run, named ``bench-<contender>-<random>-<role>``: no run reads
    another's records."""

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


#: the load generator's ``linger.ms`` in the latency phases: librdkafka's default since 1.5 (and the Java
#: client's since Kafka 4.0), what an application sending events would have. With 1 ms (a request every
#: millisecond) the broker took 45-48% of a core at 5,000 events/s and the job's JVM 80% (the fetches it
#: answers), and the p99 there was 97-139 ms; with 5 ms 21-26% and 62-67%, p99 36-50 ms
#: (bench/flink_profile/README.md, 2026-12-07). The wait is inside the "in Kafka" latency (its p50 at
#: 1,000/s: about 2 ms more), not inside "broker to broker"; a request per event (linger 0) took the broker
#: half a core.
SEND_LINGER_MS = 5


def paced_send(
    bootstrap: str, topic: str, records: list[bytes], rate: float, appended: dict[str, int] | None = None
) -> tuple[dict[str, float], float]:
    """Send ``records`` at ``rate`` per second (small bursts every millisecond); send time per event id.

    ``appended`` gets each record's timestamp from the broker's answer: its append time (ms) on a topic with
    ``message.timestamp.type=LogAppendTime``."""
    prod = fast_producer(bootstrap, linger_ms=SEND_LINGER_MS)
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


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete a run's topics; a failure is logged, not raised (cleanup must not hide the run's result)."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics(names)
        admin.close()
    except Exception as exc:  # noqa: BLE001 - cleanup only
        log(f"could not delete topics {names}: {exc}")
