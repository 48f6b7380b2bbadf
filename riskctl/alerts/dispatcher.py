"""The dispatcher: Kafka in, one worker thread per channel out, offsets committed after delivery.

::

    alerts topic ──┐                       ┌─> worker "ding" (queue, rate limit + digest, retries) ─> DingTalk
                   ├─> parse ─> route ─────┼─> worker "mail" (...)                                 ─> SMTP
    decisions ─────┘  (REVIEW only,        └─> worker "hook" (...)                                 ─> webhook
    (optional)         when configured)             │ every channel done (delivered or dead-lettered)
                                                    v
                                   OffsetLedger ─> commit the finished prefix of each partition

- **At least once.** An offset is committed only when every channel of its record, and of every record
  before it in the partition, has delivered or dead-lettered it. A crash replays what was in flight.
- **No duplicates** while the id is remembered: each (channel, user id and item id) delivered is kept in a
  bounded :class:`~riskctl.alerts.ledger.DeliveredIds` (a very long one by its hash, see
  :func:`~riskctl.alerts.model.id_key`); a replayed or re-emitted alert is not sent again there. The user is
  part of it because an id is unique only within its user (it is built from event ids, which senders choose):
  another user's alert of the same id is not a duplicate.
- **A channel that is down blocks only itself**: its worker retries with exponential backoff while the
  others go on. After ``delivery.attempts`` attempts (or a permanent refusal) the item is dead-lettered with
  the reason, and the offsets move on. While a channel is failing (its last attempt failed), it keeps at
  most ``max_backlog`` items (queued, retried or held for a digest): beyond, new items for it are
  dead-lettered at once ("backlog full"), so a channel that stays down sheds its load instead of holding
  every offset back; a copy of an alert the channel already holds is not shed (the copy held delivers or
  dead-letters it). A healthy but busy channel is never shed: reading pauses instead. Records in flight are
  bounded (``max_in_flight``, counting what the channels still hold, also of revoked partitions): beyond it,
  the consumer pauses its partitions, keeps polling (so it stays in the group) and pauses the partitions a
  rebalance gives it meanwhile.
- **A revoked partition's work is abandoned**: records of a partition taken away by a rebalance that a
  channel has not started are dropped (their new owner reads them again, from the committed offset), and
  nothing finished for them marks an offset of the partition as it is read after it comes back. A record a
  channel is delivering when the partition goes is not retried once the attempt under way fails, and is
  never dead-lettered here: its new owner delivers or dead-letters it (dead-lettered by both, it
  reached the dead-letter topic twice). Delivered, it is remembered like any delivery.
- **One dead letter per (user and alert id, channel)** while the id is remembered: a dead letter, after the
  attempts or for a full backlog, is remembered like a delivery (and written to the delivered log), so a copy
  of the alert read later, or the record read again after a restart, is neither sent nor dead-lettered again.
  A crash between writing the dead letter and its id can write it twice (at least once, never lost): both
  copies have the same Kafka key (:func:`dead_letter_key`), by which a consumer deduplicates.
- **Hostile records** (not JSON, too large, missing fields, ...) are dead-lettered with the field and the
  reason, never fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from riskctl.alerts.ledger import DeliveredIds, OffsetLedger
from riskctl.alerts.messages import Outcome, backoff_s, email_message, http_request
from riskctl.alerts.model import AlertItem, BadRecord, id_key, parse_item
from riskctl.alerts.ratelimit import DigestWindow
from riskctl.alerts.routing import route
from riskctl.alerts.settings import SEVERITY_RANK, AlertsConfig, Channel
from riskctl.alerts.templates import MAX_BODY_BYTES, STYLE, context, digest_values, link_for, message
from riskctl.core.door import dead_letter

log = logging.getLogger("riskctl.alerts")

Sender = Callable[[Channel, str, str, str, Sequence[AlertItem]], Outcome]


def network_sender(timeout_s: float) -> Sender:
    """The sender that talks to the real receivers (HTTP or SMTP)."""
    from riskctl.alerts import senders

    def send(channel: Channel, title: str, text: str, severity: str, items: Sequence[AlertItem]) -> Outcome:
        # building the message does no I/O: a ValueError there (a header the e-mail library refuses) comes
        # back on every attempt, so it is a permanent failure, not one to retry
        if channel.type == "email":
            try:
                mail = email_message(channel, title, text)
            except ValueError as exc:
                reason = f"the e-mail cannot be built: {type(exc).__name__}: {str(exc)[:200]}"
                return Outcome(False, reason, permanent=True)
            return senders.send_mail(channel, mail, timeout_s)
        if channel.type == "sms":
            return senders.send_sms(channel, text, timeout_s)
        try:
            request = http_request(channel, title, text, severity, items, int(time.time() * 1000))
        except ValueError as exc:  # its message may quote the URL, which may hold a token
            return Outcome(False, f"the request cannot be built ({type(exc).__name__})", permanent=True)
        return senders.post(channel.type, request, timeout_s)

    return send


@dataclass
class _Record:
    """One Kafka record being delivered to ``remaining`` channels."""

    partition: Hashable
    offset: int
    raw: bytes
    coordinates: dict[str, Any]
    remaining: set[str]
    #: the partition's assignment it was read in (see Dispatcher.revoke)
    epoch: int = 0


@dataclass
class _Job:
    item: AlertItem
    severity: str
    link: str
    record: _Record


@dataclass
class Stats:
    read: int = 0
    delivered: int = 0
    digests: int = 0
    digested_items: int = 0
    deduplicated: int = 0
    skipped: int = 0
    unrouted: int = 0
    dead_lettered: int = 0
    retries: int = 0
    #: items of a revoked partition dropped before a channel started them, or whose delivery under way
    #: failed (their new owner reads them again and delivers or dead-letters them)
    abandoned: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    """Takes records through :meth:`accept` (:func:`run_kafka` feeds it from Kafka); delivers through
    ``sender``, one worker thread per channel; dead letters go to ``dead_letter_topic`` through
    ``produce(topic, key, value)`` (which must block until the broker has the record, and raise when it
    cannot); :meth:`finished` and ``ledger`` say which offsets may be committed.
    """

    def __init__(
        self,
        config: AlertsConfig,
        *,
        dead_letter_topic: str,
        produce: Callable[[str, bytes | None, bytes], None],
        sender: Sender | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.dead_letter_topic = dead_letter_topic
        self.produce = produce
        self.sender = sender or network_sender(config.delivery.timeout_ms / 1000)
        #: records in flight beyond which reading pauses; each keeps its value (for a dead letter): at most
        #: max_in_flight x max_record_bytes of memory (5,000 x 1 MiB at worst; alerts are about 1 KiB, one
        #: holding a field of an event at the job's 64 KiB limit about 64 KiB)
        self.max_in_flight = config.max_in_flight
        self._backlog: dict[str, int] = dict.fromkeys(config.channels, 0)
        #: the channel's last attempt failed (it is retrying): only then is its backlog shed
        self._failing: dict[str, bool] = dict.fromkeys(config.channels, False)
        self.clock = clock
        #: called with (channel, id) after a delivery or dead letter (see riskctl.alerts.delivered_log)
        self.remember: Callable[[str, str], None] | None = None
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.ledger = OffsetLedger()
        self.delivered = DeliveredIds(config.dedup_size)
        self._lock = threading.Lock()
        #: (partition, offset, the partition's epoch when it was read) of each record finished
        self._finished: queue.SimpleQueue[tuple[Hashable, int, int]] = queue.SimpleQueue()
        self._queues: dict[str, queue.Queue[_Job]] = {name: queue.Queue() for name in config.channels}
        self._threads: list[threading.Thread] = []
        #: per partition, how many times it was revoked: a record read before that is abandoned
        self._epoch: dict[Hashable, int] = {}
        #: records queued to channels and not yet done by all of them (what the channels hold in memory)
        self._held = 0
        #: (channel, id key) -> records of that id queued to the channel and not done (see accept's shedding)
        self._holding: dict[tuple[str, str], list[_Record]] = {}

    # ---------------------------------------------------------------------------------------- intake
    def accept(
        self, partition: Hashable, offset: int, raw: bytes | None, coordinates: dict[str, Any]
    ) -> None:
        """Take one record: parse, route, queue it to its channels (or finish it at once)."""
        self.stats.read += 1
        self.ledger.take(partition, offset)
        try:
            item = parse_item(raw, max_bytes=self.config.max_record_bytes)
        except BadRecord as exc:
            self._dead_letter(raw, exc.reason, exc.field, coordinates)
            self._finish(partition, offset)
            return
        if item is None:
            self.stats.skipped += 1
            self._finish(partition, offset)
            return
        routed = route(self.config, item)
        if not routed.matched and not routed.channels:
            self.stats.unrouted += 1
            log.info("alert %r matched no route and there are no default channels", item.key)
        with self._lock:
            todo = {c for c in routed.channels if (c, item.key) not in self.delivered}
            self.stats.deduplicated += len(routed.channels) - len(todo)
        if not todo:
            self._finish(partition, offset)
            return
        assert raw is not None
        coordinates = {**coordinates, "alert_id": item.id, "user_id": item.user_id}
        with self._lock:
            full = {c for c in todo if self._failing[c] and self._backlog[c] >= self.config.max_backlog}
            # a copy of an id the channel already holds is a duplicate, not load to shed: the copy held
            # delivers or dead-letters it (shed, it was dead-lettered here and again when the copy held ran
            # out of attempts); a copy held for a revoked partition is not dead-lettered, so it does not count
            held = {c for c in full if self._holds(c, item.key)}
            self.stats.deduplicated += len(held)
            full -= held
            todo -= held
        for name in sorted(full):
            # shed load: a channel that is down (or slower than alerts arrive) must not stall the others
            reason = (
                f"channel {name}: backlog full ({self.config.max_backlog} waiting): the channel is down or "
                "slower than the alerts arrive"
            )
            self._dead_letter(raw, reason, None, {**coordinates, "channel": name})
            self._remember(name, item.key)
        todo -= full
        if not todo:
            self._finish(partition, offset)
            return
        with self._lock:
            record = _Record(partition, offset, raw, coordinates, set(todo), self._epoch.get(partition, 0))
            self._held += 1
            for c in todo:
                self._backlog[c] += 1
                self._holding.setdefault((c, item.key), []).append(record)
        link = link_for(self.config.link, item, routed.severity)
        for name in routed.channels:
            if name in todo:
                self._queues[name].put(_Job(item, routed.severity, link, record))

    def in_flight(self) -> int:
        """Records read and not finished: those the ledger waits for, or more while the channels still hold
        records of a revoked partition (the ledger forgot them; memory did not)."""
        with self._lock:
            held = self._held
        return max(self.ledger.in_flight(), held)

    def revoke(self, partition: Hashable) -> None:
        """A rebalance took ``partition`` away: forget its offsets, and abandon its records that no channel
        has started (whoever gets it reads them again from the committed offset)."""
        with self._lock:
            self._epoch[partition] = self._epoch.get(partition, 0) + 1
        self.ledger.forget(partition)

    def _stale(self, partition: Hashable, epoch: int) -> bool:
        """A record of ``partition`` read in ``epoch`` predates a revocation (call with the lock held)."""
        return epoch != self._epoch.get(partition, 0)

    def _holds(self, channel: str, key: str) -> bool:
        """``channel`` holds a record of ``key`` that it will deliver or dead-letter: one of a partition
        still assigned (call with the lock held)."""
        return any(not self._stale(r.partition, r.epoch) for r in self._holding.get((channel, key), ()))

    def _all_stale(self, jobs: list[_Job]) -> bool:
        """Every job's partition was revoked since it was read: what comes of them is their new owner's."""
        with self._lock:
            return all(self._stale(j.record.partition, j.record.epoch) for j in jobs)

    def _finish(self, partition: Hashable, offset: int, epoch: int | None = None) -> None:
        """The record at ``offset`` is done; ``epoch``: its partition's when it was read (default: now)."""
        if epoch is None:
            with self._lock:
                epoch = self._epoch.get(partition, 0)
        self._finished.put((partition, offset, epoch))

    def finished(self) -> list[tuple[Hashable, int]]:
        """Records finished since the last call (marked in the ledger). A record read before its partition
        was revoked finishes nothing: the same offset may be in flight again, read after the partition came
        back, and must not be committed before that copy is done."""
        out: list[tuple[Hashable, int]] = []
        while True:
            try:
                partition, offset, epoch = self._finished.get_nowait()
            except queue.Empty:
                return out
            with self._lock:
                stale = self._stale(partition, epoch)
            if not stale and self.ledger.finish(partition, offset):
                out.append((partition, offset))

    # --------------------------------------------------------------------------------------- workers
    def start_workers(self) -> None:
        for name, channel in self.config.channels.items():
            t = threading.Thread(target=self._worker, args=(channel,), name=f"alerts-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop_workers(self, timeout_s: float = 10.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _done(self, job: _Job, channel: str) -> None:
        with self._lock:
            rec = job.record
            rec.remaining.discard(channel)
            last = not rec.remaining
            self._backlog[channel] -= 1
            key = (channel, job.item.key)
            holding = [r for r in self._holding[key] if r is not rec]
            if holding:
                self._holding[key] = holding
            else:
                del self._holding[key]
            if last:
                self._held -= 1
        if last:
            self._finish(rec.partition, rec.offset, rec.epoch)

    def _worker(self, channel: Channel) -> None:
        q = self._queues[channel.name]
        window: DigestWindow[_Job] = DigestWindow(channel.rate_limit)
        while True:
            stopping = self.stop_event.is_set()
            now = self.clock()
            due = window.due(now if not stopping else float("inf"))
            if due:
                self._deliver(channel, due, digest=True)
                continue
            if stopping:
                return
            deadline = window.deadline()
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - now))
            try:
                job = q.get(timeout=wait)
            except queue.Empty:
                continue
            with self._lock:
                stale = self._stale(job.record.partition, job.record.epoch)
                seen = not stale and (channel.name, job.item.key) in self.delivered
                if stale:
                    self.stats.abandoned += 1
                elif seen:
                    self.stats.deduplicated += 1
            if stale or seen:
                self._done(job, channel.name)
            elif window.admit(job, self.clock()):
                self._deliver(channel, [job], digest=False)

    def _deliver(self, channel: Channel, jobs: list[_Job], *, digest: bool) -> None:
        """Send one message (one item, or a digest of several) with retries; then mark every job done."""
        # a job whose id was delivered meanwhile (a duplicate held in the same digest) is not listed twice;
        # one whose partition was revoked while it was held for the digest is dropped (not started: the
        # partition's new owner reads it again and sends it)
        unique: dict[str, _Job] = {}
        dropped: list[_Job] = []
        with self._lock:
            for j in jobs:
                if self._stale(j.record.partition, j.record.epoch):
                    self.stats.abandoned += 1
                    dropped.append(j)
                elif (channel.name, j.item.key) in self.delivered or j.item.key in unique:
                    self.stats.deduplicated += 1
                    dropped.append(j)
                else:
                    unique[j.item.key] = j
        for j in dropped:
            self._done(j, channel.name)
        jobs = list(unique.values())
        if not jobs:
            return
        items = [j.item for j in jobs]
        attempts = self.config.delivery.attempts
        attempt = 0
        try:
            title, text, severity = self._render(channel, jobs, digest)
        except Exception as exc:  # a bug must not kill the worker: the items are dead-lettered with it
            log.exception("channel %s: rendering failed", channel.name)
            outcome = Outcome(
                False, f"internal error: {type(exc).__name__}: {str(exc)[:200]}", permanent=True
            )
        else:
            outcome = Outcome(False, "not attempted")
            for attempt in range(1, attempts + 1):  # noqa: B007 (attempt is reported after the loop)
                outcome = self._send(channel, title, text, severity, items)
                with self._lock:
                    self._failing[channel.name] = not outcome.ok and not outcome.permanent
                if outcome.ok or outcome.permanent:
                    break
                if self._all_stale(jobs):
                    # revoked meanwhile: the new owner reads them again and retries (or dead-letters) them
                    break
                if attempt < attempts:
                    with self._lock:
                        self.stats.retries += 1
                    delivery = self.config.delivery
                    wait = backoff_s(attempt, delivery.backoff_ms, delivery.max_backoff_ms)
                    log.warning(
                        "channel %s: attempt %d/%d failed (%s); next in %.1fs",
                        channel.name,
                        attempt,
                        attempts,
                        outcome.reason,
                        wait,
                    )
                    if self.stop_event.wait(wait):
                        # stopping: leave these jobs unfinished (not committed: replayed at the next start)
                        log.warning(
                            "channel %s: stopping with %d item(s) undelivered", channel.name, len(jobs)
                        )
                        return
                    if self._all_stale(jobs):
                        # revoked during the backoff: no attempt is under way, none is started
                        break
        if outcome.ok:
            for j in jobs:
                self._remember(channel.name, j.item.key)
            with self._lock:
                self.stats.by_channel[channel.name] = self.stats.by_channel.get(channel.name, 0) + len(jobs)
                if digest and len(jobs) > 1:
                    self.stats.digests += 1
                    self.stats.digested_items += len(jobs)
                else:
                    self.stats.delivered += 1
        else:
            why = "refused" if outcome.permanent else f"undeliverable after {attempt} attempt(s)"
            for j in jobs:
                with self._lock:
                    # its partition was revoked during the attempts: the new owner reads it again and owns
                    # its outcome (dead-lettered here too, it was dead-lettered twice); not remembered either,
                    # else the partition coming back here would skip it: neither sent nor dead-lettered
                    stale = self._stale(j.record.partition, j.record.epoch)
                    # another dispatcher of the group (a rebalance gave it the partition meanwhile; its ids
                    # arrive through the delivered log) delivered or dead-lettered it during the attempts
                    known = not stale and (channel.name, j.item.key) in self.delivered
                    if stale:
                        self.stats.abandoned += 1
                    elif known:
                        self.stats.deduplicated += 1
                if stale or known:
                    continue
                self._dead_letter(
                    j.record.raw,
                    f"channel {channel.name}: {why}: {outcome.reason}",
                    None,
                    {**j.record.coordinates, "channel": channel.name},
                )
                # remembered at once, each (not after the whole digest: stopping while a later dead letter
                # waits for the broker would leave this one written and forgotten)
                self._remember(channel.name, j.item.key)
        for j in jobs:
            self._done(j, channel.name)

    def _remember(self, channel: str, key: str) -> None:
        """``key`` is done on ``channel``, delivered or dead-lettered: remembered (and written to the
        delivered log), so that a copy of the alert, or its record read again, is neither sent there again
        nor dead-lettered a second time (the channel took it, took its attempts, or shed it)."""
        with self._lock:
            self.delivered.add((channel, key))
        if self.remember is not None:
            self.remember(channel, key)

    def _render(self, channel: Channel, jobs: list[_Job], digest: bool) -> tuple[str, str, str]:
        """(title, text, severity) of the message for ``jobs``: one item, or a digest of several."""
        style = STYLE[channel.type]
        max_bytes = MAX_BODY_BYTES.get(channel.type)
        if digest and len(jobs) > 1:
            values = digest_values(
                [(j.item, j.severity, j.link) for j in jobs],
                style,
                channel.name,
                self.config.digest_max_items,
            )
            title, text = message(channel.digest_template, values, max_bytes)
            return title, text, max((j.severity for j in jobs), key=_severity_rank)
        j = jobs[0]
        values = context(j.item, j.severity, j.link, style, channel.name)
        title, text = message(channel.template, values, max_bytes)
        return title, text, j.severity

    def _send(
        self, channel: Channel, title: str, text: str, severity: str, items: list[AlertItem]
    ) -> Outcome:
        try:
            return self.sender(channel, title, text, severity, items)
        except Exception as exc:  # a bug in a sender must not kill the worker: it is a failed attempt
            log.exception("channel %s: the sender raised", channel.name)
            return Outcome(False, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")

    # ----------------------------------------------------------------------------------- dead letters
    def _dead_letter(
        self, raw: bytes | None, reason: str, fld: str | None, coordinates: dict[str, Any]
    ) -> None:
        """Write the dead letter and wait for the broker; retried until it is written or the dispatcher
        stops (then the record stays uncommitted and is read again at the next start).
        """
        record = dead_letter(raw, reason=reason, field=fld, coordinates=coordinates)
        key = dead_letter_key(coordinates)
        wait = 0.5
        while True:
            try:
                self.produce(self.dead_letter_topic, key.encode(), record.encode())
                break
            except Exception as exc:
                log.error("dead letter not written (%s); retrying in %.1fs", exc, wait)
                if self.stop_event.wait(wait):
                    raise
                wait = min(wait * 2, 30.0)
        with self._lock:
            self.stats.dead_lettered += 1
        log.warning("dead-lettered %s: %s", coordinates, reason)


def dead_letter_key(coordinates: dict[str, Any]) -> str:
    """The Kafka key of a dead letter, by which its consumers deduplicate: ``<channel>/<deduplication key>``
    (:func:`~riskctl.alerts.model.id_key` of the user id and the alert id) for an alert the channel could not
    take (one dead letter per pair is meant: a crash between writing it and remembering it writes it again,
    with this key), else ``<topic>:<partition>:<offset>`` of the record, as the job keys its own (a record
    that cannot be read has no id). Neither a channel name nor a topic name holds a ``/``, so the two kinds
    never share a key (with ``:``, the alert id ``0:5`` of a channel named like the topic had the key of that
    topic's record at partition 0, offset 5). The user is in the key as in the deduplication: keyed by the
    alert id alone, two users' dead letters of one id had one key, and a consumer kept only the first."""
    alert_id = coordinates.get("alert_id")
    if alert_id:
        # an alert id is bounded by the record size only: a long key is its hash (model.id_key)
        return f"{coordinates.get('channel')}/{id_key(str(coordinates.get('user_id', '')), str(alert_id))}"
    return f"{coordinates.get('topic')}:{coordinates.get('partition')}:{coordinates.get('offset')}"


def _severity_rank(name: str) -> int:
    return SEVERITY_RANK.get(name, 0)


# ------------------------------------------------------------------------------------------ Kafka loop
def run_kafka(
    dispatcher: Dispatcher,
    *,
    bootstrap: str,
    topics: Sequence[str],
    group_id: str,
    stop: threading.Event | None = None,
    delivered_topic: str = "",
    idle_exit_s: float | None = None,
    on_commit: Callable[[dict[Any, int]], None] | None = None,
) -> Stats:
    """Consume ``topics`` in consumer group ``group_id`` until ``stop`` is set (or, with ``idle_exit_s``,
    until nothing was read or in flight for that long); commit finished offsets as they move. With a
    ``delivered_topic``, delivered ids are read from it first and written to it after each delivery
    (:mod:`riskctl.alerts.delivered_log`).
    """
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    stop = stop or dispatcher.stop_event
    from riskctl.alerts.delivered_log import RECONNECT_BACKOFF_MAX_MS

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=0,
        acks="all",
        max_block_ms=10_000,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
    )

    def produce(topic: str, key: bytes | None, value: bytes) -> None:
        producer.send(topic, value, key=key).get(timeout=30)

    dispatcher.produce = produce
    delivered_log = None
    if delivered_topic:
        from riskctl.alerts.delivered_log import DeliveredLog, ensure_topic

        ensure_topic(bootstrap, delivered_topic)

        def add(key: tuple[str, str]) -> None:
            with dispatcher._lock:
                dispatcher.delivered.add(key)

        delivered_log = DeliveredLog(bootstrap, delivered_topic, add, keep=dispatcher.config.dedup_size)
        loaded = delivered_log.start()
        log.info("%d delivered id(s) read from %s", loaded, delivered_topic)
        dispatcher.remember = delivered_log.remember
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_poll_records=500,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
    )

    unsent: dict[Any, int] = {}

    def commit() -> None:
        dispatcher.finished()
        unsent.update(dispatcher.ledger.committable())
        if not unsent:
            return
        if delivered_log is not None:
            delivered_log.flush()  # the ids of what is committed are written first
        try:
            consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in unsent.items()})
        except KafkaError as exc:  # the broker is away or the group rebalances: try again next round
            log.warning("commit of %d partition(s) failed, retried: %s", len(unsent), exc)
            return
        if on_commit is not None:
            on_commit(dict(unsent))
        unsent.clear()

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            try:
                commit()
            except Exception as exc:  # the group moved on; the new owner replays
                log.warning("commit on revocation failed: %s", exc)
            for tp in revoked:
                dispatcher.revoke(tp)
                unsent.pop(tp, None)

        def on_partitions_assigned(self, assigned: Any) -> None:
            log.info("assigned %s", sorted(str(tp) for tp in assigned))
            if paused and assigned:  # a new assignment starts unpaused: no fetch before the loop sees it
                consumer.pause(*assigned)

    paused = False
    consumer.subscribe(list(topics), listener=Listener())
    dispatcher.start_workers()
    last_activity = time.monotonic()
    try:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    coords = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
                    dispatcher.accept(TopicPartition(r.topic, r.partition), r.offset, r.value, coords)
                    last_activity = time.monotonic()
            commit()
            in_flight = dispatcher.in_flight()
            if in_flight:
                last_activity = time.monotonic()
            if in_flight >= dispatcher.max_in_flight and not paused:
                consumer.pause(*consumer.assignment())
                paused = True
                log.warning("%d records in flight: paused reading", in_flight)
            elif paused and in_flight < dispatcher.max_in_flight // 2:
                consumer.resume(*consumer.paused())
                paused = False
            if idle_exit_s is not None and time.monotonic() - last_activity > idle_exit_s:
                break
    finally:
        dispatcher.stop_workers()
        try:
            commit()
        finally:
            consumer.close(autocommit=False)
            producer.close(timeout=5)
            if delivered_log is not None:
                delivered_log.close()
    return dispatcher.stats
