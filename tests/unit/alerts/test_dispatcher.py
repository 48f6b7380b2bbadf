"""The dispatcher without Kafka: fake senders, a list as the dead-letter topic, offsets from the ledger."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from riskctl.alerts.dispatcher import Dispatcher
from riskctl.alerts.messages import OK, Outcome
from riskctl.alerts.model import MAX_KEY_CHARS, AlertItem, id_key
from riskctl.alerts.settings import Channel, parse_config
from tests.unit.alerts.conftest import alert_doc, raw


class FakeSender:
    """Records every attempt; ``failing`` channels answer 500 (``permanent``: 400) until removed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        self.ok: list[tuple[str, list[str]]] = []
        self.failing: set[str] = set()
        self.permanent: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, ch: Channel, title: str, text: str, sev: str, items: Sequence[AlertItem]) -> Outcome:
        with self.lock:
            self.calls.append((ch.name, text, [i.id for i in items]))
        if ch.name in self.permanent:
            return Outcome(False, "HTTP 400: no", permanent=True)
        if ch.name in self.failing:
            return Outcome(False, "HTTP 500: down")
        with self.lock:
            self.ok.append((ch.name, [i.id for i in items]))
        return OK

    def succeeded(self, channel: str) -> list[list[str]]:
        with self.lock:
            return [ids for name, ids in self.ok if name == channel]

    def delivered(self, channel: str) -> list[list[str]]:
        with self.lock:
            return [ids for name, _, ids in self.calls if name == channel]


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[Dispatcher, FakeSender, list[dict[str, Any]]]]]:
    made: list[Dispatcher] = []

    def build(
        channels: dict[str, Any] | None = None, **over: Any
    ) -> tuple[Dispatcher, FakeSender, list[dict[str, Any]]]:
        doc = {
            "channels": channels
            or {n: {"type": "webhook", "url": f"http://127.0.0.1:9/{n}"} for n in ("up", "down")},
            "default_channels": list(channels or ("up", "down")),
            "delivery": {"attempts": 3, "backoff_ms": 10, "max_backoff_ms": 20},
            **over,
        }
        sender = FakeSender()
        dead: list[dict[str, Any]] = []
        d = Dispatcher(
            parse_config(doc, {}),
            dead_letter_topic="dlq",
            produce=lambda t, k, v: dead.append({**json.loads(v), "to": t, "key": k}),
            sender=sender,
        )
        d.start_workers()
        made.append(d)
        return d, sender, dead

    yield build
    for d in made:
        d.stop_workers(2)


def feed(d: Dispatcher, docs: list[Any], partition: str = "p0", start: int = 0) -> None:
    for i, doc in enumerate(docs):
        value = doc if isinstance(doc, bytes) else raw(doc)
        d.accept(partition, start + i, value, {"topic": "alerts", "partition": 0, "offset": start + i})


def committable_eventually(d: Dispatcher, want: dict[str, int]) -> None:
    got: dict[Any, int] = {}

    def check() -> bool:
        d.finished()
        got.update(d.ledger.committable())
        return got == want

    wait_until(check)


def test_a_channel_that_is_down_does_not_block_the_others_and_delivers_once_after_recovery(make: Any) -> None:
    d, sender, dead = make(delivery={"attempts": 50, "backoff_ms": 20, "max_backoff_ms": 50})
    sender.failing.add("down")
    feed(d, [alert_doc(alert_id=f"a{i}") for i in range(5)])
    wait_until(lambda: len(sender.delivered("up")) == 5)
    d.finished()
    assert d.ledger.in_flight() == 5 and d.ledger.committable() == {}  # nothing committed while "down" owes
    sender.failing.discard("down")
    committable_eventually(d, {"p0": 5})
    # every alert reached "down" once after it recovered, in order; "up" got each once too
    assert sender.succeeded("down") == [[f"a{i}"] for i in range(5)]
    assert sender.succeeded("up") == [[f"a{i}"] for i in range(5)]
    assert len(sender.delivered("down")) > 5  # it was retried meanwhile
    assert d.stats.delivered == 10 and d.stats.retries > 0 and dead == []


class GateSender(FakeSender):
    """A :class:`FakeSender` that holds a delivery of an id in ``hold`` until :meth:`release` (a receiver that
    takes its time); ``started`` lists the ids whose delivery began."""

    def __init__(self, hold: set[str]) -> None:
        super().__init__()
        self.hold = hold
        self.started: list[str] = []
        self.open = threading.Condition(self.lock)

    def release(self, alert_id: str) -> None:
        with self.open:
            self.hold.discard(alert_id)
            self.open.notify_all()

    def __call__(self, ch: Channel, title: str, text: str, sev: str, items: Sequence[AlertItem]) -> Outcome:
        with self.open:
            self.started += [i.id for i in items]
            self.open.wait_for(lambda: not {i.id for i in items} & self.hold, timeout=10)
        return super().__call__(ch, title, text, sev, items)


def _gated(hold: set[str]) -> tuple[Dispatcher, GateSender]:
    doc = {
        "channels": {"slow": {"type": "webhook", "url": "http://127.0.0.1:9/s"}},
        "default_channels": ["slow"],
    }
    sender = GateSender(hold)
    d = Dispatcher(
        parse_config(doc, {}), dead_letter_topic="dlq", produce=lambda t, k, v: None, sender=sender
    )
    d.start_workers()
    return d, sender


def test_a_revoked_partitions_records_are_abandoned_but_counted_until_the_channel_lets_them_go() -> None:
    """A rebalance takes p0 away while the channel is busy with its first record: the ledger forgets p0, but
    the 5 records still sit in the channel's queue, so they still count as in flight (what bounds memory;
    counted by the ledger alone, a consumer kept reading while rebalances came). Once the channel is free, the
    records it had not started are dropped, not sent: the partition's new owner reads them again."""
    d, sender = _gated({"a0"})
    try:
        feed(d, [alert_doc(alert_id=f"a{i}") for i in range(5)])
        wait_until(lambda: sender.started == ["a0"])
        d.revoke("p0")
        assert d.ledger.in_flight() == 0 and d.in_flight() == 5
        feed(d, [alert_doc(alert_id=f"a{i}") for i in range(2)], partition="p1")
        assert d.in_flight() == 7
        sender.release("a0")
        done: list[tuple[Any, int]] = []
        wait_until(lambda: not done.extend(d.finished()) and d.in_flight() == 0)
        assert sender.succeeded("slow") == [["a0"], ["a1"]]  # p1's a0 was a duplicate
        assert d.stats.abandoned == 4 and d.stats.deduplicated == 1
        assert done == [("p1", 0), ("p1", 1)]  # the revoked p0 finished nothing
    finally:
        d.stop_workers(2)


def test_a_revoked_record_that_finishes_late_does_not_finish_its_offset_read_again() -> None:
    """p0 comes back to this instance after a rebalance and offset 0 is read again while the channel still
    delivers the copy read before. That copy's end must not mark offset 0 finished: the new read is not
    delivered yet, and committing it would lose it if the instance died then."""
    d, sender = _gated({"a0", "b0"})
    try:
        feed(d, [alert_doc(alert_id="a0")])
        wait_until(lambda: sender.started == ["a0"])
        d.revoke("p0")
        feed(d, [alert_doc(alert_id="b0")])  # offset 0 again (another id: which copy finished is visible)
        sender.release("a0")
        wait_until(lambda: sender.started == ["a0", "b0"])
        d.finished()
        assert d.ledger.committable() == {}
        sender.release("b0")
        committable_eventually(d, {"p0": 1})
    finally:
        d.stop_workers(2)


def test_a_finish_reported_before_a_revocation_does_not_finish_the_offset_read_again() -> None:
    """Offset 0 of p0 finished (a record that is not JSON: dead-lettered at once), but the Kafka loop had not
    collected it when a rebalance revoked p0 and gave it back; offset 0, read again, is still being
    delivered. The earlier finish must not mark it."""
    d, sender = _gated({"a0"})
    dead: list[bytes] = []
    d.produce = lambda t, k, v: dead.append(v)
    try:
        feed(d, [b"not json"])
        d.revoke("p0")
        feed(d, [alert_doc(alert_id="a0")])
        wait_until(lambda: sender.started == ["a0"])
        assert d.finished() == [] and d.ledger.committable() == {} and len(dead) == 1
        sender.release("a0")
        committable_eventually(d, {"p0": 1})
    finally:
        d.stop_workers(2)


def test_an_alert_still_undeliverable_after_n_attempts_is_dead_lettered_with_the_reason(make: Any) -> None:
    d, sender, dead = make()
    sender.failing.add("down")
    feed(d, [alert_doc(alert_id="a1")])
    committable_eventually(d, {"p0": 1})
    assert len(sender.delivered("down")) == 3 and len(sender.delivered("up")) == 1
    (letter,) = dead
    assert letter["to"] == "dlq" and letter["kind"] == "dead_letter" and letter["key"] == b"down/2:u1:a1"
    assert letter["reason"] == "channel down: undeliverable after 3 attempt(s): HTTP 500: down"
    got = (letter["channel"], letter["alert_id"], letter["user_id"], letter["offset"])
    assert got == ("down", "a1", "u1", 0)
    assert json.loads(letter["raw"])["alert_id"] == "a1"


def test_a_dead_letter_is_keyed_by_what_it_is_one_of_so_that_its_consumers_can_deduplicate(make: Any) -> None:
    """Keyed by the alert id alone, the dead letters of one alert on two channels had one key (a consumer
    deduplicating by it dropped one), and unreadable records by ``<topic>:<offset>`` (two partitions' records
    at one offset had one key). The same failure written again (a crash before its id was remembered: here a
    second dispatcher, which remembers nothing) has the same key."""
    keys: list[bytes] = []
    for _ in range(2):
        d, sender, dead = make()
        sender.permanent.update({"up", "down"})
        feed(d, [alert_doc(alert_id="a1"), b"not json"])
        d.accept("p1", 1, b"[1]", {"topic": "alerts", "partition": 1, "offset": 1})  # at p0's offset 1
        committable_eventually(d, {"p0": 2, "p1": 2})
        keys.append(sorted(x["key"] for x in dead))
    assert keys[0] == keys[1] == [b"alerts:0:1", b"alerts:1:1", b"down/2:u1:a1", b"up/2:u1:a1"]


def test_an_alerts_dead_letter_key_is_never_a_records() -> None:
    # With ':' as the separator, a channel named like the alerts topic failing the alert id "0:5" wrote the
    # key of that topic's unreadable record at partition 0, offset 5: a consumer deduplicating by key dropped
    # one.
    from riskctl.alerts.dispatcher import dead_letter_key

    alert = dead_letter_key(
        {"alert_id": "0:5", "user_id": "u", "channel": "alerts", "topic": "alerts", "partition": 3}
    )
    record = dead_letter_key({"topic": "alerts", "partition": 0, "offset": 5})
    assert alert != record and record == "alerts:0:5"


def test_a_permanent_refusal_is_dead_lettered_without_retries(make: Any) -> None:
    d, sender, dead = make()
    sender.permanent.add("down")
    feed(d, [alert_doc(alert_id="a1")])
    committable_eventually(d, {"p0": 1})
    assert len(sender.delivered("down")) == 1
    assert dead[0]["reason"] == "channel down: refused: HTTP 400: no"


def test_an_alert_id_seen_twice_is_delivered_once_per_channel(make: Any) -> None:
    d, sender, dead = make()
    feed(d, [alert_doc(alert_id="same"), alert_doc(alert_id="same"), alert_doc(alert_id="other")])
    committable_eventually(d, {"p0": 3})
    feed(d, [alert_doc(alert_id="same")], start=3)  # replayed later: still remembered
    committable_eventually(d, {"p0": 4})
    assert sorted(i[0] for i in sender.delivered("up")) == ["other", "same"]
    assert sorted(i[0] for i in sender.delivered("down")) == ["other", "same"]
    assert d.stats.deduplicated == 4


def test_another_users_alert_of_the_same_id_is_not_a_duplicate(make: Any) -> None:
    """Event ids are the sender's and unique only per user: keyed by the alert id alone, an attacker's event
    carrying a victim's event id fired the rule first, was delivered, and the victim's alert of the same id
    was dropped as its duplicate (so were a REVIEW decision's, and the dead letter's Kafka key was one)."""
    d, sender, dead = make()
    sender.permanent.add("down")
    review = {
        "kind": "decision",
        "event_id": "e1",
        "ts": 1,
        "action": "REVIEW",
        "rules": [{"id": "r", "version": 1, "action": "REVIEW", "evidence": {}}],
    }
    feed(
        d,
        [
            alert_doc(user_id="attacker"),
            alert_doc(user_id="victim"),
            alert_doc(user_id="victim"),  # the victim's own copy (the job's sink is at least once)
            {**review, "user_id": "attacker"},
            {**review, "user_id": "victim"},
        ],
    )
    committable_eventually(d, {"p0": 5})
    alert_id = alert_doc()["alert_id"]
    assert sender.succeeded("up") == [[alert_id], [alert_id], ["review:e1"], ["review:e1"]]
    assert d.stats.deduplicated == 2  # the copy, on both channels
    keys = sorted((x["user_id"], x["key"]) for x in dead)
    assert keys == [
        ("attacker", b"down/8:attacker:review:e1"),
        ("attacker", f"down/8:attacker:{alert_id}".encode()),
        ("victim", b"down/6:victim:review:e1"),
        ("victim", f"down/6:victim:{alert_id}".encode()),
    ]


def test_a_user_id_cannot_forge_another_users_deduplication_key() -> None:
    """With a bare separator, (``u1``, ``a:b``) and (``u1:a``, ``b``) would share a key: the user id's
    length says where it ends. Keys stay bounded whatever the ids' lengths."""
    assert id_key("u1", "a:b") != id_key("u1:a", "b")
    assert id_key("u1", "a:b") == "2:u1:a:b"
    longest = id_key("u" * 256, "x" * 512)  # the longest ids of the job: kept as they are
    assert longest == f"256:{'u' * 256}:{'x' * 512}" and len(longest) == MAX_KEY_CHARS
    hashed = id_key("u" * 257, "x" * 512)
    assert hashed.startswith("sha256:") and len(hashed) == 71
    assert id_key("u" * 258, "x" * 511) != hashed  # the same length, cut elsewhere


def test_hostile_records_are_dead_lettered_and_the_dispatcher_goes_on(make: Any) -> None:
    d, sender, dead = make()
    feed(
        d,
        [
            b"not json",
            b"\xff\xfe",
            b"x" * 1_100_000,
            raw(alert_doc(alert_id=None)),
            alert_doc(alert_id="fine"),
        ],
    )
    committable_eventually(d, {"p0": 5})
    reasons = [(x["field"], x["reason"]) for x in dead]
    assert reasons[0][1].startswith("the record is not JSON")
    assert reasons[1][1] == "the record is not valid UTF-8 (byte 0)" and dead[1]["raw_base64"] == "//4="
    assert reasons[2][1] == "the record is too large (1100000 bytes, limit 1048576)"
    assert reasons[3] == ("alert_id", "missing")
    assert [i[0] for i in sender.delivered("up")] == ["fine"]


def test_beyond_the_rate_limit_alerts_go_out_as_one_digest_when_the_window_ends(make: Any) -> None:
    channels = {"limited": {"type": "slack", "url": "https://h/x", "rate_limit": {"max": 2, "window_s": 0.5}}}
    d, sender, dead = make(channels)
    feed(d, [alert_doc(alert_id=f"a{i}", user_id=f"user{i}") for i in range(6)])
    wait_until(lambda: len(sender.delivered("limited")) == 2)
    d.finished()
    assert d.ledger.in_flight() == 4
    committable_eventually(d, {"p0": 6})
    sent = sender.delivered("limited")
    assert sent == [["a0"], ["a1"], ["a2", "a3", "a4", "a5"]]
    digest_text = sender.calls[2][1]
    assert digest_text.startswith("4 alerts arrived beyond the rate limit of limited:")
    assert all(f"user{i}" in digest_text for i in range(2, 6))
    assert d.stats.digests == 1 and d.stats.digested_items == 4


def test_review_decisions_and_skipped_decisions_finish_their_offsets(make: Any) -> None:
    d, sender, dead = make()
    review = {
        "kind": "decision",
        "event_id": "e1",
        "user_id": "u",
        "ts": 1,
        "action": "REVIEW",
        "rules": [{"id": "r", "version": 1, "action": "REVIEW", "evidence": {}}],
    }
    feed(d, [review, {**review, "action": "PASS", "event_id": "e2"}])
    committable_eventually(d, {"p0": 2})
    assert sender.delivered("up") == [["review:e1"]] and d.stats.skipped == 1


def test_stopping_during_retries_leaves_the_record_uncommitted(make: Any) -> None:
    d, sender, dead = make(delivery={"attempts": 100, "backoff_ms": 50, "max_backoff_ms": 50})
    sender.failing.add("down")
    feed(d, [alert_doc(alert_id="a1")])
    wait_until(lambda: len(sender.delivered("down")) >= 2)
    d.stop_workers(2)
    d.finished()
    assert d.ledger.committable() == {} and dead == []


def test_a_channel_down_for_long_sheds_its_backlog_to_the_dead_letter_topic(make: Any) -> None:
    d, sender, dead = make(max_backlog=2, delivery={"attempts": 100, "backoff_ms": 20, "max_backoff_ms": 20})
    sender.failing.add("down")
    feed(d, [alert_doc(alert_id="a0")])
    wait_until(lambda: len(sender.delivered("down")) >= 1)  # "down" has failed: it is retrying a0
    feed(d, [alert_doc(alert_id=f"a{i}") for i in range(1, 5)], start=1)
    wait_until(lambda: len(sender.succeeded("up")) == 5)
    assert [x["alert_id"] for x in dead] == ["a2", "a3", "a4"]
    assert dead[0]["reason"].startswith("channel down: backlog full (2 waiting)")
    assert dead[0]["channel"] == "down"
    sender.failing.discard("down")
    committable_eventually(d, {"p0": 5})
    assert sender.succeeded("down") == [["a0"], ["a1"]]


def test_an_alert_is_dead_lettered_once_per_channel_after_a_long_outage(make: Any) -> None:
    """A channel down for long, its backlog full: a copy of a shed alert (the job's sink is at-least-once),
    a copy of the alert the channel still retries, and both read again later (a replay) each gave another
    dead letter (4 for 2 alerts before the change: a1 twice 'backlog full', a0 'backlog full' and then
    'undeliverable' when its attempts ran out; and a1 a third time, undeliverable, when read again)."""
    d, sender, dead = make(max_backlog=1, delivery={"attempts": 4, "backoff_ms": 100, "max_backoff_ms": 100})
    remembered: list[tuple[str, str]] = []
    d.remember = lambda channel, key: remembered.append((channel, key))
    sender.failing.add("down")
    feed(d, [alert_doc(alert_id="a0")])
    wait_until(lambda: d._failing["down"])  # "down" has failed: it retries a0, its backlog (1) is full
    feed(d, [alert_doc(alert_id="a1"), alert_doc(alert_id="a1"), alert_doc(alert_id="a0")], start=1)
    committable_eventually(d, {"p0": 4})
    down = [(x["alert_id"], x["reason"].split(":")[1].strip()) for x in dead if x["channel"] == "down"]
    assert down == [("a1", "backlog full (1 waiting)"), ("a0", "undeliverable after 4 attempt(s)")]
    assert sorted(k for c, k in remembered if c == "down") == ["2:u1:a0", "2:u1:a1"]
    feed(d, [alert_doc(alert_id="a1"), alert_doc(alert_id="a0")], start=4)  # read again (a replay)
    committable_eventually(d, {"p0": 6})
    assert [x["alert_id"] for x in dead] == ["a1", "a0"]
    assert sender.succeeded("up") == [["a0"], ["a1"]] and sender.succeeded("down") == []
    assert d.stats.dead_lettered == 2 and d._holding == {}


def test_an_alert_another_instance_finished_during_the_attempts_is_not_dead_lettered_again(make: Any) -> None:
    """A rebalance gave the partition to another dispatcher of the group, which dead-lettered (or delivered)
    the alert while this one still retried it; its id arrived through the delivered log. This one's attempts
    running out must not write a second dead letter."""
    d, sender, dead = make(delivery={"attempts": 3, "backoff_ms": 100, "max_backoff_ms": 100})
    sender.failing.add("down")
    feed(d, [alert_doc(alert_id="a0")])
    wait_until(lambda: d._failing["down"])
    with d._lock:  # what DeliveredLog's reader does with the other instance's key
        d.delivered.add(("down", "2:u1:a0"))
    committable_eventually(d, {"p0": 1})
    assert len(sender.delivered("down")) == 3 and dead == []


def _failing_gate(
    hold: set[str], channel: dict[str, Any] | None = None, max_backlog: int = 100, **delivery: Any
) -> tuple[Dispatcher, GateSender, list[dict[str, Any]], list[tuple[str, str]]]:
    """One channel ``slow`` that is down (every attempt fails, after :class:`GateSender` lets it go); its
    dead letters and the (channel, id) pairs it remembers."""
    doc = {
        "channels": {"slow": {"type": "slack", "url": "https://h/x", **(channel or {})}},
        "default_channels": ["slow"],
        "max_backlog": max_backlog,
        "delivery": {"attempts": 3, "backoff_ms": 10, "max_backoff_ms": 10, **delivery},
    }
    sender = GateSender(hold)
    sender.failing.add("slow")
    dead: list[dict[str, Any]] = []
    d = Dispatcher(
        parse_config(doc, {}),
        dead_letter_topic="dlq",
        produce=lambda t, k, v: dead.append({**json.loads(v), "key": k}),
        sender=sender,
    )
    remembered: list[tuple[str, str]] = []
    d.remember = lambda channel, key: remembered.append((channel, key))
    d.start_workers()
    return d, sender, dead, remembered


def test_a_record_whose_partition_is_revoked_during_its_delivery_is_not_dead_lettered_by_the_old_owner() -> (
    None
):
    """The rebalance takes p0 away while the channel's attempt at a0 is under way, and that attempt fails.
    The new owner reads a0 again and retries or dead-letters it: dead-lettered here too (and remembered), it
    reached the dead-letter topic twice. It is not retried either; b0 of p1, still assigned, is dead-lettered
    after its attempts as before."""
    d, sender, dead, remembered = _failing_gate({"a0"})
    try:
        feed(d, [alert_doc(alert_id="a0")])
        feed(d, [alert_doc(alert_id="b0")], partition="p1")
        wait_until(lambda: sender.started == ["a0"])
        d.revoke("p0")
        sender.release("a0")
        done: list[tuple[Any, int]] = []
        wait_until(lambda: not done.extend(d.finished()) and d.in_flight() == 0)
        assert [x["alert_id"] for x in dead] == ["b0"] and done == [("p1", 0)]
        assert [ids for _, _, ids in sender.calls] == [["a0"], ["b0"], ["b0"], ["b0"]]  # a0 not retried
        assert remembered == [("slow", "2:u1:b0")] and ("slow", "2:u1:a0") not in d.delivered
        assert d.stats.abandoned == 1 and d.stats.dead_lettered == 1 and d._holding == {}
    finally:
        d.stop_workers(2)


def test_a_record_whose_partition_is_revoked_while_it_is_retried_is_not_dead_lettered() -> None:
    # revoked between two attempts (during the backoff): no attempt is under way, and none is started after
    # the revocation (the new owner delivers it: one more here was a duplicate, should the channel be back)
    d, sender, dead, remembered = _failing_gate(set(), attempts=100, backoff_ms=400, max_backoff_ms=400)
    try:
        feed(d, [alert_doc(alert_id="a0")])
        wait_until(lambda: d._failing["slow"])  # the first attempt failed; the next is 400 ms away
        time.sleep(0.05)
        d.revoke("p0")
        wait_until(lambda: d.in_flight() == 0)
        assert dead == [] and remembered == [] and d.finished() == []
        assert len(sender.calls) == 1 and d.stats.abandoned == 1 and d.stats.retries == 1
    finally:
        d.stop_workers(2)


def test_a_digest_that_fails_after_a_revocation_dead_letters_only_the_items_of_partitions_still_held() -> (
    None
):
    """a0 goes alone; a1 (p0) and b1 (p1) are held for the digest, which is under way when p0 is revoked and
    then refused: b1 is dead-lettered, a1 is its new owner's."""
    d, sender, dead, remembered = _failing_gate(
        {"a1"}, {"rate_limit": {"max": 1, "window_s": 0.3}}, attempts=1
    )
    try:
        feed(d, [alert_doc(alert_id="a0"), alert_doc(alert_id="a1")])
        feed(d, [alert_doc(alert_id="b1")], partition="p1")
        wait_until(lambda: "a1" in sender.started)
        d.revoke("p0")
        sender.release("a1")
        committable_eventually(d, {"p1": 1})
        wait_until(lambda: d.in_flight() == 0)
        assert [ids for _, _, ids in sender.calls] == [["a0"], ["a1", "b1"]]
        assert [x["alert_id"] for x in dead] == ["a0", "b1"]
        assert remembered == [("slow", "2:u1:a0"), ("slow", "2:u1:b1")] and d.stats.abandoned == 1
    finally:
        d.stop_workers(2)


def test_a_copy_read_again_while_the_channel_retries_the_revoked_one_is_not_lost() -> None:
    """p0 comes back to this instance while the channel (down, its backlog of 1 full) still retries a0 read
    before the revocation. That copy will not be dead-lettered here (its partition was revoked), so the copy
    read again must not be taken for a duplicate of it: it was finished, committed, and a0 reached neither
    the channel nor the dead-letter topic. It is shed ("backlog full") instead."""
    d, sender, dead, remembered = _failing_gate(set(), max_backlog=1, backoff_ms=2000, max_backoff_ms=2000)
    try:
        feed(d, [alert_doc(alert_id="a0")])
        wait_until(lambda: d._failing["slow"])  # a0 failed once; the next attempt is 2 s away
        d.revoke("p0")
        feed(d, [alert_doc(alert_id="a0")])
        committable_eventually(d, {"p0": 1})
        assert [(x["alert_id"], x["reason"].split(":")[1].strip()) for x in dead] == [
            ("a0", "backlog full (1 waiting)")
        ]
        assert remembered == [("slow", "2:u1:a0")] and len(sender.calls) == 1
    finally:
        d.stop_workers(2)


def test_reading_pauses_beyond_max_in_flight() -> None:
    from riskctl.alerts.settings import parse_config as parse

    cfg = parse(
        {
            "channels": {"h": {"type": "slack", "url": "https://x/y"}},
            "default_channels": ["h"],
            "max_in_flight": 7,
        },
        {},
    )
    d = Dispatcher(cfg, dead_letter_topic="dlq", produce=lambda *a: None, sender=FakeSender())
    assert d.max_in_flight == 7


def test_a_healthy_but_busy_channel_is_never_shed(make: Any) -> None:
    d, sender, dead = make({"slow": {"type": "slack", "url": "https://x/y"}}, max_backlog=2)
    feed(d, [alert_doc(alert_id=f"a{i}") for i in range(20)])
    committable_eventually(d, {"p0": 20})
    assert len(sender.succeeded("slow")) == 20 and dead == []


def test_a_sender_or_template_that_raises_dead_letters_and_the_worker_goes_on(make: Any) -> None:
    d, sender, dead = make()

    def boom(*args: Any) -> Outcome:
        raise RuntimeError("boom")

    d.sender = boom
    feed(d, [alert_doc(alert_id="a1")])
    committable_eventually(d, {"p0": 1})
    assert {x["reason"] for x in dead} == {
        "channel up: undeliverable after 3 attempt(s): internal error: RuntimeError: boom",
        "channel down: undeliverable after 3 attempt(s): internal error: RuntimeError: boom",
    }

    def bad_render(*args: Any) -> Any:
        raise KeyError("x")

    d.sender = sender
    d._render = bad_render  # type: ignore[method-assign]
    feed(d, [alert_doc(alert_id="a2")], start=1)
    committable_eventually(d, {"p0": 2})
    assert dead[-1]["reason"].endswith("refused: internal error: KeyError: 'x'")
    assert sender.calls == []
    d._render = Dispatcher._render.__get__(d)  # type: ignore[method-assign]
    feed(d, [alert_doc(alert_id="a3")], start=2)
    committable_eventually(d, {"p0": 3})
    assert sorted(ids[0] for ids in sender.succeeded("up") + sender.succeeded("down")) == ["a3", "a3"]


MAIL = {"m": {"type": "email", "host": "h", "from": "a@b.example", "to": ["ok@y", "bad@y"]}}


def run_one(cfg: Any, doc: dict[str, Any], sender: Any) -> list[dict[str, Any]]:
    """``doc`` through a dispatcher with ``sender``; its dead letters once the record is finished."""
    dead: list[dict[str, Any]] = []
    d = Dispatcher(
        cfg, dead_letter_topic="dlq", produce=lambda t, k, v: dead.append(json.loads(v)), sender=sender
    )
    d.start_workers()
    try:
        feed(d, [doc])
        committable_eventually(d, {"p0": 1})
    finally:
        d.stop_workers(2)
    return dead


def test_a_line_separator_in_a_user_id_does_not_stop_the_email(monkeypatch: pytest.MonkeyPatch) -> None:
    from riskctl.alerts import senders
    from riskctl.alerts.dispatcher import network_sender

    sent: list[Any] = []
    monkeypatch.setattr(senders, "send_mail", lambda ch, msg, t: sent.append(msg) or OK)
    delivery = {"attempts": 3, "backoff_ms": 1, "max_backoff_ms": 1}
    cfg = parse_config({"channels": MAIL, "default_channels": ["m"], "delivery": delivery}, {})
    dead = run_one(cfg, alert_doc(user_id="mallory\u2028x"), network_sender(1))
    assert dead == [] and len(sent) == 1 and "mallory?x" in sent[0]["Subject"]


def test_a_message_that_cannot_be_built_is_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from riskctl.alerts import senders
    from riskctl.alerts.dispatcher import network_sender

    sent: list[Any] = []
    monkeypatch.setattr(senders, "send_mail", lambda ch, msg, t: sent.append(msg) or OK)
    cfg = parse_config({"channels": MAIL, "default_channels": ["m"]}, {})
    # a title the e-mail library refuses as a header (message() never makes one: it is one line)
    outcome = network_sender(1)(cfg.channels["m"], "a\u2028b", "body", "high", [])
    assert (outcome.ok, outcome.permanent) == (False, True) and sent == []
    assert outcome.reason.startswith("the e-mail cannot be built: ValueError: Header values may not contain")
    # through the dispatcher: dead-lettered after one attempt, not retried
    import riskctl.alerts.dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "message", lambda template, values, limit: ("a\u2028b", "body"))
    delivery = {"attempts": 5, "backoff_ms": 1, "max_backoff_ms": 1}
    cfg = parse_config({"channels": MAIL, "default_channels": ["m"], "delivery": delivery}, {})
    (letter,) = run_one(cfg, alert_doc(), network_sender(1))
    assert (
        letter["reason"].startswith("channel m: refused: the e-mail cannot be built: ValueError")
        and sent == []
    )


def test_an_alert_with_a_very_long_id_is_delivered_once_and_dead_lettered_with_a_short_key(make: Any) -> None:
    d, sender, dead = make()
    long_id = "brute_force_login:1:late:" + ":".join("%064x" % i for i in range(100))
    feed(d, [alert_doc(alert_id=long_id), alert_doc(alert_id=long_id)])
    committable_eventually(d, {"p0": 2})
    assert sender.delivered("up") == [[long_id]] and sender.delivered("down") == [[long_id]]
    assert ("up", id_key("u1", long_id)) in d.delivered and len(id_key("u1", long_id)) == 71
    sender.permanent.add("down")
    other = long_id[:-1] + "f"
    feed(d, [alert_doc(alert_id=other)], start=2)
    committable_eventually(d, {"p0": 3})
    (letter,) = dead
    assert letter["key"] == f"down/{id_key('u1', other)}".encode() and letter["alert_id"] == other[:300]


@pytest.mark.parametrize(
    ("rcpt", "attempts", "sessions", "delivered_to", "reason"),
    [
        # one recipient refused: smtplib returns it, the message went to the other: delivered, not resent
        ({"bad@y": b"550 5.1.1 no such user"}, 5, 1, ["ok@y"], None),
        # every recipient refused with 5xx: permanent, one attempt
        (
            {"bad@y": b"550 5.1.1 no such user", "ok@y": b"553 5.7.1 relay denied"},
            5,
            1,
            None,
            "channel m: refused: the SMTP server refused the recipient(s): bad@y 550, ok@y 553",
        ),
        # every recipient refused, one with 4xx: temporary, retried
        (
            {"bad@y": b"550 5.1.1 no such user", "ok@y": b"450 4.2.1 try later"},
            3,
            3,
            None,
            "channel m: undeliverable after 3 attempt(s): "
            "the SMTP server refused the recipient(s): bad@y 550, ok@y 450",
        ),
    ],
)
def test_smtp_refusals_of_recipients(
    smtp_server: Any,
    rcpt: dict[str, bytes],
    attempts: int,
    sessions: int,
    delivered_to: list[str] | None,
    reason: str | None,
) -> None:
    from riskctl.alerts.dispatcher import network_sender

    server = smtp_server(rcpt)
    channel = {**MAIL["m"], "host": "127.0.0.1", "port": server.port}
    delivery = {"attempts": attempts, "backoff_ms": 1, "max_backoff_ms": 1}
    cfg = parse_config({"channels": {"m": channel}, "default_channels": ["m"], "delivery": delivery}, {})
    dead = run_one(cfg, alert_doc(), network_sender(2))
    assert server.sessions == sessions
    assert [to for to, _ in server.messages] == ([delivered_to] if delivered_to else [])
    assert [x["reason"] for x in dead] == ([reason] if reason else [])


def test_a_dingtalk_digest_of_emoji_ids_stays_within_dingtalks_20000_bytes(make: Any) -> None:
    # DingTalk refuses a markdown text over 20,000 bytes: a digest cut at 16,000 characters of 4-byte emoji
    # (user and event ids an attacker chooses) was 53,000 bytes, so the whole digest ended dead-lettered
    channels = {"ding": {"type": "dingtalk", "url": "https://h/x", "rate_limit": {"max": 1, "window_s": 0.3}}}
    d, sender, dead = make(channels)
    emoji = "\U0001f600"
    rule = {"id": emoji * 256, "version": 1, "action": "REVIEW", "evidence": {"fields": {"f": emoji * 300}}}
    docs = [
        alert_doc(alert_id=f"a{i}", user_id=emoji * 256, event_id=emoji * 256, rule=rule) for i in range(40)
    ]
    feed(d, docs)
    committable_eventually(d, {"p0": 40})
    sent = [text for name, text, _ in sender.calls if name == "ding"]
    assert len(sent) == 2 and dead == []  # one alert, then one digest of 39
    assert all(len(text.encode()) <= 18_000 for text in sent)
    assert sent[1].startswith("39 alerts arrived beyond the rate limit of ding:") and sent[1].endswith("...")


def test_items_held_for_a_digest_are_abandoned_when_their_partition_is_revoked(make: Any) -> None:
    # held for the digest = not started: the partition's new owner reads them again and sends them; sending
    # them in this instance's digest too gave reviewers each of them twice (after every rebalance of a flood)
    channels = {"limited": {"type": "slack", "url": "https://h/x", "rate_limit": {"max": 1, "window_s": 0.5}}}
    d, sender, dead = make(channels)
    feed(d, [alert_doc(alert_id=f"a{i}") for i in range(3)])
    feed(d, [alert_doc(alert_id="b0")], partition="p1")

    def held() -> bool:  # a0 sent; a1, a2 and b0 taken from the queue and held in the window
        d.finished()
        return d.in_flight() == 3 and d._queues["limited"].empty()

    wait_until(held)
    time.sleep(0.05)
    d.revoke("p0")
    committable_eventually(d, {"p1": 1})
    wait_until(lambda: d.in_flight() == 0)
    assert sender.succeeded("limited") == [["a0"], ["b0"]] and dead == []
    assert d.stats.abandoned == 2 and d.stats.digests == 0


def test_an_alert_id_cannot_forge_a_log_line(make: Any, caplog: Any) -> None:
    """An alert routed nowhere was logged with its id as is: an event id holding a line break (the job
    accepts any string) wrote a line of the attacker's into the dispatcher's log. The id is quoted (repr)."""
    import logging

    d, _sender, _dead = make(
        channels={"up": {"type": "webhook", "url": "http://127.0.0.1:9/up"}},
        default_channels=[],
        routes=[{"match": {"rules": ["no_such_rule"]}, "channels": ["up"]}],
    )
    forged = "r:1:rule_alert:e1\nERROR riskctl.alerts: channel up: SMTP login refused"
    with caplog.at_level(logging.INFO, logger="riskctl.alerts"):
        feed(d, [alert_doc(alert_id=forged)])
        wait_until(lambda: d.stats.unrouted == 1)
    lines = [r.getMessage() for r in caplog.records if "matched no route" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "\\nERROR" in lines[0], lines
