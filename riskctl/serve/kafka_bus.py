"""The Kafka side of ``riskctl serve`` (confluent-kafka: librdkafka, chosen in bench/results/api-choice.md).

* a producer writes each event to the events topic, keyed by ``user_id`` (the job's partitioning), with a
  ``reply_to`` key chosen by :func:`reply_key_for` so that the job's copy of the decision lands in this
  instance's partition of the replies topic;
* one consumer, *assigned* (no group, no rebalance) to that single partition, from its end at start-up,
  hands each decision to the service on the event loop: an instance reads its own replies, not every
  decision of the cluster;
* a health thread asks the broker for the replies topic's metadata every second (``kafka_ok``). When the
  broker answers again after it did not, the consumer is replaced by a new one at the same position: an
  assigned librdkafka consumer may stay silent after a broker restart although the broker is back
  (confluentinc/librdkafka#5153, open; CI saw it once: every request of the next 60 s got its fallback
  while the job decided them), and a new consumer reads again.

librdkafka calls back from its own threads; everything that touches the service goes through
``loop.call_soon_threadsafe``. Its log lines go through Python's logging (``riskctl.serve.librdkafka``), each
kind at most once a minute, with the count of those left out (:data:`KAFKA_LOG_LIMIT`); the health thread says
when Kafka stops answering and when it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka.partitioner.default import murmur2

from riskctl.core.reply import MAX_REPLY_KEY, valid_reply_key
from riskctl.errors import ConfigError, ServiceError
from riskctl.lograte import LEFT_OUT, OncePer, by_shape

LOG = logging.getLogger(__name__)
SERVICE = "kafka"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

#: librdkafka's own log lines (refused connections, disconnections), given to the Kafka clients as their
#: ``logger``: served by their poll(), each shape of line (numbers aside) at most once a minute
#: (:data:`KAFKA_LOG_LIMIT`)
KAFKA_LOG = logging.getLogger("riskctl.serve.librdkafka")
#: librdkafka logs every connection attempt that fails, and with the broker away its clients tried again
#: every 50 ms (``reconnect.backoff.ms``, which ``reconnect.backoff.max.ms`` did not raise for the bootstrap
#: broker): about 20 lines a second on stderr, 70,000 in an hour of outage, and as many again before
#: ``riskctl serve`` gave up at start. What an operator needs of an outage is its start and its end, which the
#: health thread logs. Alike lines differ by their numbers (they come formatted: the format string is
#: ``%s [%s] %s`` for all, hence :func:`~riskctl.lograte.by_shape`); the connection failures come at ERROR
#: (confluent-kafka's level for librdkafka's 3), so every level is limited. The count of the last lines of an
#: outage is logged once their minute is over (``background``) and at shutdown (``serve()``, in app.py).
KAFKA_LOG_LIMIT = OncePer(60.0, key=by_shape, max_level=logging.CRITICAL, wording=LEFT_OUT, background=True)
KAFKA_LOG.addFilter(KAFKA_LOG_LIMIT)


def instance_name(name: str) -> str:
    """A name usable in reply keys: unsafe characters replaced, at most 40 characters."""
    cleaned = _UNSAFE.sub("-", name)[:40]
    if not cleaned:
        msg = "serve.instance must not be empty"
        raise ConfigError(msg)
    return cleaned


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java client 3.x, the job's sinks) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def reply_key_for(instance: str, partition: int, partitions: int) -> str:
    """The first key ``<instance>:<n>`` that Kafka's default partitioner puts into ``partition``."""
    if not 0 <= partition < partitions:
        msg = (
            f"serve.reply_partition {partition} is not a partition of the replies topic (0..{partitions - 1})"
        )
        raise ConfigError(msg)
    for n in range(100 * partitions + 1000):
        key = f"{instance}:{n}"
        if kafka_partition(key.encode(), partitions) == partition:
            assert valid_reply_key(key) and len(key) <= MAX_REPLY_KEY
            return key
    msg = (
        f"no reply key found for partition {partition} of {partitions}"  # pragma: no cover - murmur2 spreads
    )
    raise ConfigError(msg)


def default_partition(instance: str, partitions: int) -> int:
    return zlib.crc32(instance.encode()) % partitions


#: the fewest events the producer may hold at once (librdkafka's own default of
#: ``queue.buffering.max.messages``); raised to ``serve.max_in_flight`` when that is larger
QUEUE_MESSAGES = 100_000


class KafkaBus:
    """Producer, reply consumer and health check of one API instance."""

    def __init__(
        self,
        bootstrap: str,
        events_topic: str,
        replies_topic: str,
        instance: str,
        *,
        reply_partition: int = -1,
        produce_timeout_ms: int = 5000,
        linger_ms: int = 1,
        queue_max_bytes: int = 64 << 20,
        max_in_flight: int = 0,
    ) -> None:
        self.bootstrap = bootstrap
        self.events_topic = events_topic
        self.replies_topic = replies_topic
        self.instance = instance_name(instance)
        self.produce_timeout_ms = produce_timeout_ms
        self.linger_ms = linger_ms
        self.queue_max_bytes = queue_max_bytes
        self.max_in_flight = max_in_flight
        self.requested_partition = reply_partition
        self.partition = -1
        self.partitions = 0
        self.reply_key = ""
        self.kafka_ok = False
        self.kafka_error = "not started"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_decision: Callable[[dict[str, Any]], Any] | None = None
        self._stop = threading.Event()
        self._renew = threading.Event()  # set by the health thread, acted on by the replies thread
        # the offset the replies consumer was assigned at (OFFSET_END while unresolved): where a renewal
        # starts when the consumer has no position of its own (it never read a reply)
        self._assigned_at = OFFSET_END
        self.renewals = 0  # consumers replaced since the start
        self._threads: list[threading.Thread] = []
        self.producer: Any = None
        self.consumer: Any = None

    # -- life cycle -----------------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, on_decision: Callable[[dict[str, Any]], Any]) -> None:
        """Connect (blocking, a few seconds at most): find this instance's partition, assign it at its end."""
        self._loop = loop
        self._on_decision = on_decision
        self.producer = Producer(self.producer_config())
        try:
            meta = self.producer.list_topics(timeout=10)
        except KafkaException as exc:
            msg = f"no broker answers at {self.bootstrap}: {exc} (see RISKCTL_KAFKA_BOOTSTRAP)"
            raise ServiceError(SERVICE, msg) from None
        for topic in (self.events_topic, self.replies_topic):
            found = meta.topics.get(topic)
            if found is None or found.error is not None:
                msg = (
                    f"topic {topic!r} does not exist at {self.bootstrap}: start the job first ('riskctl run')"
                )
                raise ServiceError(SERVICE, msg)
        self.partitions = len(meta.topics[self.replies_topic].partitions)
        self.partition = (
            self.requested_partition
            if self.requested_partition >= 0
            else default_partition(self.instance, self.partitions)
        )
        self.reply_key = reply_key_for(self.instance, self.partition, self.partitions)
        self.consumer = self._new_consumer()
        self._assign(self.consumer, OFFSET_END, timeout=10)
        self.kafka_ok, self.kafka_error = True, ""
        for target, name in (
            (self._consume, "replies"),
            (self._poll_producer, "producer"),
            (self._health, "health"),
        ):
            thread = threading.Thread(target=target, name=f"riskctl-serve-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        LOG.info(
            "serve %s: replies from %s[%d] of %d (reply key %s)",
            self.instance,
            self.replies_topic,
            self.partition,
            self.partitions,
            self.reply_key,
        )

    def producer_config(self) -> dict[str, Any]:
        """The producer's librdkafka configuration.

        Its queue is bounded by ``serve.producer_queue_max_bytes`` (the events' values; librdkafka counts KiB,
        whole ones here: never more than the setting says) and by a count of events: each queued event costs
        about 480 bytes beyond its value (librdkafka's message and the delivery callback; 46 MB for 100,000
        events of 10 bytes, measured), which the bytes do not count. The count is librdkafka's default,
        raised to ``serve.max_in_flight`` when larger: below it, a broker slow for a moment would refuse the
        events of requests that max_in_flight admits. A full queue refuses an event at once (BufferError in
        :meth:`produce`): its request gets the fallback, and is not remembered as produced."""
        return {
            "bootstrap.servers": self.bootstrap,
            "linger.ms": self.linger_ms,
            "acks": "all",
            "message.timeout.ms": self.produce_timeout_ms,
            "reconnect.backoff.max.ms": 1000,
            "queue.buffering.max.kbytes": self.queue_max_bytes // 1024,
            "queue.buffering.max.messages": max(QUEUE_MESSAGES, self.max_in_flight),
            # a delivery report (a Python call under the GIL) for the lost events only: the delivered ones
            # need none, their decision answers the request
            "delivery.report.only.error": True,
            "logger": KAFKA_LOG,
        }

    def _new_consumer(self) -> Any:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"riskctl-serve-{self.instance}",  # required by the client; nothing is committed
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "reconnect.backoff.max.ms": 1000,
                # librdkafka reads committed records only by default: with job.delivery=exactly-once a reply
                # would wait for the job's next checkpoint (seconds). A reply of an aborted transaction is
                # decided again after the job's restore, and that second decision is the one remembered
                # only if the first did not arrive: see docs/api.md.
                "isolation.level": "read_uncommitted",
                "logger": KAFKA_LOG,
            }
        )

    def _assign(self, consumer: Any, offset: int, timeout: float) -> int:
        """Assign ``consumer`` to this instance's partition of the replies topic at ``offset``; OFFSET_END is
        resolved to the partition's end now (``timeout``), an explicit offset: a reply produced before a
        lazily resolved "end" would be skipped. Returns the offset assigned."""
        tp = TopicPartition(self.replies_topic, self.partition)
        if offset == OFFSET_END:
            with contextlib.suppress(KafkaException):
                offset = consumer.get_watermark_offsets(tp, timeout=timeout)[1]
        consumer.assign([TopicPartition(self.replies_topic, self.partition, offset)])
        self._assigned_at = offset
        return offset

    def _renew_consumer(self) -> None:
        """Replace the consumer by a new one assigned at its position (the replies thread only: it alone
        uses the consumer). Where the old one cannot say (it never read), the offset it was assigned at: the
        partition's end now would skip the replies produced while the broker was away (and, when that offset
        is unknown too, the end now). The old one is closed once the new one is assigned: if that fails, the
        old one stays."""
        tp = TopicPartition(self.replies_topic, self.partition)
        offset = self._assigned_at
        try:
            (at,) = self.consumer.position([tp])
            if at.offset >= 0:
                offset = at.offset
        except (KafkaException, RuntimeError, ValueError) as exc:
            LOG.warning("serve %s: the replies consumer's position is unknown (%s)", self.instance, exc)
        fresh = self._new_consumer()
        try:
            offset = self._assign(fresh, offset, timeout=5)
        except BaseException:
            fresh.close()
            raise
        old, self.consumer = self.consumer, fresh
        with contextlib.suppress(KafkaException, RuntimeError):
            old.close()
        self.renewals += 1
        LOG.warning(
            "serve %s: the broker answers again: replies read by a new consumer from offset %s",
            self.instance,
            offset,
        )

    def close(self, flush_timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``flush_timeout``), then stop the threads and close the clients."""
        if self.producer is not None:
            left = self.producer.flush(flush_timeout)
            if left:
                LOG.warning("serve %s: %d event(s) not delivered at shutdown", self.instance, left)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    # -- producing ------------------------------------------------------------------------------------------
    def produce(self, key: bytes, value: bytes, on_failure: Callable[[str], None]) -> None:
        loop = self._loop
        assert loop is not None

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                loop.call_soon_threadsafe(on_failure, str(err))

        try:
            self.producer.produce(self.events_topic, value=value, key=key, on_delivery=delivered)
        except BufferError:
            on_failure("the producer's queue is full")
        except KafkaException as exc:
            on_failure(str(exc))

    def _poll_producer(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    # -- replies --------------------------------------------------------------------------------------------
    def _consume(self) -> None:
        loop, handle = self._loop, self._on_decision
        assert loop is not None and handle is not None
        while not self._stop.is_set():
            if self._renew.is_set():
                self._renew.clear()
                try:
                    self._renew_consumer()
                except (KafkaException, RuntimeError) as exc:  # the old one is kept; tried again in 1 s
                    LOG.warning("serve %s: renewing the replies consumer failed: %s", self.instance, exc)
                    self._renew.set()
                    time.sleep(1.0)
                    continue
            try:
                # poll() returns at the first record; consume(n, timeout) would wait for the whole timeout
                # unless n records came (measured: consume(500, 1.0) took 1,000 ms for one record), which
                # added up to its timeout to every reply. What else is already there is taken without waiting.
                first = self.consumer.poll(0.1)
                msgs = [] if first is None else [first, *self.consumer.consume(num_messages=500, timeout=0)]
            except (KafkaException, RuntimeError) as exc:  # RuntimeError: closed while stopping
                if self._stop.is_set():
                    return
                LOG.warning("serve %s: reading replies failed: %s", self.instance, exc)
                time.sleep(0.2)
                continue
            docs = []
            for msg in msgs:
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        LOG.warning("serve %s: replies: %s", self.instance, msg.error())
                    continue
                try:
                    doc = orjson.loads(msg.value())
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict):
                    docs.append(doc)
            if docs:
                loop.call_soon_threadsafe(_deliver_all, handle, docs)

    def _health(self) -> None:
        while not self._stop.wait(1.0):
            was_ok = self.kafka_ok
            self._check_health()
            if self.kafka_ok and not was_ok:  # the broker is back: a new consumer for the replies
                self._renew.set()
            elif was_ok and not self.kafka_ok:
                LOG.warning("serve %s: kafka: %s (/readyz answers 503)", self.instance, self.kafka_error)

    def _check_health(self) -> None:
        """Set ``kafka_ok`` from the replies topic's metadata (one request, at most 2 s)."""
        try:
            meta = self.producer.list_topics(self.replies_topic, timeout=2)
            topic = meta.topics.get(self.replies_topic)
            if topic is None or topic.error is not None:
                self.kafka_ok, self.kafka_error = (
                    False,
                    f"replies topic: {topic.error if topic else 'gone'}",
                )
            elif len(topic.partitions) != self.partitions:
                self.kafka_ok = False
                self.kafka_error = (
                    f"the replies topic has {len(topic.partitions)} partitions, was {self.partitions}: "
                    "restart the instance (its reply key routes by the partition count)"
                )
            else:
                self.kafka_ok, self.kafka_error = True, ""
        except KafkaException as exc:
            self.kafka_ok, self.kafka_error = False, str(exc)[:300]


def _deliver_all(handle: Callable[[dict[str, Any]], Any], docs: list[dict[str, Any]]) -> None:
    """Hand each reply of a batch to ``handle``: one that fails it is dropped, not the replies after it
    (other requests' decisions: they would get their fallback)."""
    for doc in docs:
        try:
            handle(doc)
        except Exception as exc:  # noqa: BLE001 - a hostile record, one line each: no traceback to flood logs
            LOG.warning("serve: a reply (event_id %.100r) was dropped: %s", doc.get("event_id"), exc)
