"""Delivered ids kept in a compacted Kafka topic, so that deduplication survives a restart and is shared by
every dispatcher of the group.

After each delivery (or dead letter) to a channel, and before its offset can be committed, the dispatcher
writes the key ``<channel> US <deduplication key>`` (value ``1``) to ``alerts.delivered_topic``: the user id
and the item id (:func:`riskctl.alerts.model.id_key`), since an id is unique only within its user. At start it
reads the last ``dedup_size`` records of each partition into its bounded
:class:`~riskctl.alerts.ledger.DeliveredIds` (which keeps the newest ``dedup_size`` keys: older records would
be forgotten anyway; the topic holds every delivery of its retention, since each is a key of its own, and
reading all of it took longer than the 60 s allowed beyond about 5 million), then keeps reading it in a
thread, so ids delivered by another instance (before a rebalance gave it this partition) are known too. The
topic is created compacted with a retention (``cleanup.policy=compact,delete``, 7 days): it holds one record
per key and forgets old ones.

Deduplication stays best effort: a crash between a delivery and its write sends that message again at the
next start (at least once, never lost). A write that fails is logged and does not stop the delivery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from riskctl.alerts.model import MAX_KEY_CHARS
from riskctl.errors import ServiceError
from riskctl.kafka_admin import ensure_topics

log = logging.getLogger("riskctl.alerts")
SEP = "\x1f"
#: the longest key this module writes: a channel name (64 characters of ASCII), the separator and a
#: deduplication key (riskctl.alerts.model.MAX_KEY_CHARS characters, 4 bytes each at most); a longer key in
#: the topic is garbage, and keeping it would let a few thousand records of megabytes fill the memory
MAX_KEY_BYTES = 64 + 1 + 4 * MAX_KEY_CHARS
SERVICE = "kafka"
RETENTION_MS = 7 * 24 * 3600 * 1000
#: the longest wait between two connection attempts to a broker, for every Kafka client of the dispatcher.
#: kafka-python doubles the wait after each failed attempt up to its default of 30 s: after a broker
#: restart, alerts were read, delivered and dead-lettered 30 s after the broker was back (40 s outage). The
#: job (job.kafka_reconnect_backoff_max_ms) and riskctl serve use 1 s too.
RECONNECT_BACKOFF_MAX_MS = 1000


def key_of(channel: str, item_id: str) -> bytes:
    return f"{channel}{SEP}{item_id}".encode()


def parse_key(key: bytes | None) -> tuple[str, str] | None:
    """(channel, id) of a key; None for a key this module did not write (or longer than any it writes)."""
    if not key or len(key) > MAX_KEY_BYTES:
        return None
    try:
        channel, sep, item_id = key.decode("utf-8").partition(SEP)
    except UnicodeDecodeError:
        return None
    return (channel, item_id) if sep and channel and item_id else None


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """Create the compacted topic when it does not exist."""
    configs = {"cleanup.policy": "compact,delete", "retention.ms": str(RETENTION_MS)}
    ensure_topics(bootstrap, [topic], partitions, configs=configs)


class DeliveredLog:
    """Reads the topic into ``add`` (initially to its end, then as it grows) and writes new keys."""

    def __init__(
        self, bootstrap: str, topic: str, add: Callable[[tuple[str, str]], None], keep: int | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.add = add
        #: records read at start from the end of each partition (None: all); older ones would be forgotten
        self.keep = keep
        self.loaded = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._consumer: Any = None

    def start(self, timeout_s: float = 60.0) -> int:
        """Read the topic to its end (from ``keep`` records before it; returns how many keys), then follow it
        in a thread."""
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        self._producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            linger_ms=5,
            acks=1,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        )
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        )
        parts = [
            TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())
        ]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        if self.keep is None:
            consumer.seek_to_beginning(*parts)
        else:
            starts = consumer.beginning_offsets(parts)
            for tp in parts:
                consumer.seek(tp, max(starts[tp], ends[tp] - self.keep))
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                msg = f"reading {self.topic} to its end took more than {timeout_s:.0f} s"
                raise ServiceError(SERVICE, msg)
            self._take(consumer.poll(timeout_ms=200))
        self._consumer = consumer
        self._thread = threading.Thread(target=self._follow, name="alerts-delivered-log", daemon=True)
        self._thread.start()
        return self.loaded

    def _take(self, batch: dict[Any, list[Any]]) -> None:
        for records in batch.values():
            for r in records:
                key = parse_key(r.key)
                if key is not None:
                    self.add(key)
                    self.loaded += 1

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._take(self._consumer.poll(timeout_ms=500))
            except Exception as exc:  # the broker went away: keep trying, deduplication is best effort
                log.warning("reading %s failed: %s", self.topic, exc)
                self._stop.wait(1.0)

    def remember(self, channel: str, item_id: str) -> None:
        """Write one key (asynchronously; flushed by :meth:`flush` before offsets are committed)."""
        try:
            self._producer.send(self.topic, b"1", key=key_of(channel, item_id))
        except Exception as exc:
            log.warning(
                "writing to %s failed (deduplication after a restart may miss it): %s", self.topic, exc
            )

    def flush(self) -> None:
        try:
            self._producer.flush(timeout=10)
        except Exception as exc:
            log.warning("flushing %s failed: %s", self.topic, exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.close(timeout=5)
