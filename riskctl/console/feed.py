"""What the job decided, for the console: the decisions and alerts topics read back into a bounded buffer.

:class:`Feed` is pure (records and their Kafka timestamps in, views out; time is an argument): hits per
rule over the last hour and day, the latest records with filters, review cases (REVIEW decisions and alerts),
counts per minute for the charts. :class:`KafkaTail` fills it from Kafka in a daemon thread, starting one day
back (``offsets_for_times``), with a group-less consumer that commits nothing, like ``riskctl decisions``.
Kafka down: the tail keeps retrying and :attr:`Feed.error` says why, the pages show it; nothing fails.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: records kept in memory (the newest); older ones drop out of the views and counts
MAX_RECORDS = 200_000


@dataclass(frozen=True)
class Case:
    """A record a reviewer can label: a REVIEW decision or an alert, with the rules that hit it."""

    case_id: str
    kind: str
    user_id: str
    ts: int
    rules: tuple[str, ...]
    shadow: tuple[str, ...]
    record: dict[str, Any]


def case_of(record: dict[str, Any]) -> Case | None:
    """The review case of a record, or None (a decision that is not REVIEW, a malformed record)."""
    kind = record.get("kind")
    try:
        if kind == "decision" and record.get("action") == "REVIEW":
            rules = tuple(str(r["id"]) for r in record.get("rules") or [])
            shadow = tuple(str(r["id"]) for r in record.get("shadow") or [])
            return Case(
                f"decision:{record['event_id']}",
                kind,
                str(record["user_id"]),
                int(record["ts"]),
                rules,
                shadow,
                record,
            )
        if kind == "alert":
            rule = record["rule"]["id"]
            in_shadow = bool(record.get("shadow"))
            rules, shadows = ((), (str(rule),)) if in_shadow else ((str(rule),), ())
            return Case(
                f"alert:{record['alert_id']}",
                kind,
                str(record["user_id"]),
                int(record["ts"]),
                rules,
                shadows,
                record,
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _rule_ids(record: dict[str, Any]) -> list[str]:
    if record.get("kind") == "alert":
        rule = record.get("rule")
        return [str(rule.get("id"))] if isinstance(rule, dict) else []
    found = (record.get("rules") or []) + (record.get("shadow") or [])
    return [str(r.get("id")) for r in found if isinstance(r, dict)]


class Feed:
    """The newest :data:`MAX_RECORDS` decisions and alerts, with their Kafka timestamps (ms)."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._records: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max_records)
        self._lock = threading.Lock()
        self.error: str | None = None
        self.connected = False

    def add(self, records: Iterable[tuple[dict[str, Any], int]]) -> None:
        """Append records (record, Kafka timestamp in ms)."""
        with self._lock:
            for record, ts in records:
                if isinstance(record, dict):
                    self._records.append((int(ts), record))

    def _snapshot(self) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return list(self._records)

    def hits(self, now_ms: int) -> dict[str, dict[str, int]]:
        """rule id -> {"hour": hits in the last hour, "day": in the last day} (fired, shadow, alerts)."""
        out: dict[str, dict[str, int]] = {}
        for ts, record in self._snapshot():
            age = now_ms - ts
            if age > DAY_MS:
                continue
            for rule in _rule_ids(record):
                counts = out.setdefault(rule, {"hour": 0, "day": 0})
                counts["day"] += 1
                if age <= HOUR_MS:
                    counts["hour"] += 1
        return out

    def latest(
        self, *, action: str | None = None, rule: str | None = None, user: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """The newest records first, filtered by action (an alert's is ``ALERT``), rule and user."""
        out: list[dict[str, Any]] = []
        for _ts, record in reversed(self._snapshot()):
            kind_action = "ALERT" if record.get("kind") == "alert" else record.get("action")
            if action and kind_action != action:
                continue
            if user and record.get("user_id") != user:
                continue
            if rule and rule not in _rule_ids(record):
                continue
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def cases(self, limit: int = 500) -> list[Case]:
        """The newest review cases first."""
        out: list[Case] = []
        for _ts, record in reversed(self._snapshot()):
            case = case_of(record)
            if case is not None:
                out.append(case)
                if len(out) >= limit:
                    break
        return out

    def case(self, case_id: str) -> Case | None:
        """One case by id (None when it is no longer, or never was, in the buffer)."""
        for _ts, record in reversed(self._snapshot()):
            case = case_of(record)
            if case is not None and case.case_id == case_id:
                return case
        return None

    def per_minute(self, now_ms: int, minutes: int = 60, rule: str | None = None) -> dict[str, list[int]]:
        """Counts per minute over the last ``minutes``, oldest first: by action (all records), or, with
        ``rule``, that rule's hits only (key ``hits``)."""
        series: dict[str, list[int]] = {}
        start = now_ms - minutes * 60_000
        for ts, record in self._snapshot():
            if ts < start or ts > now_ms:
                continue
            slot = min(minutes - 1, (ts - start) // 60_000)
            if rule is not None:
                if rule not in _rule_ids(record):
                    continue
                key = "hits"
            else:
                key = "ALERT" if record.get("kind") == "alert" else str(record.get("action"))
            series.setdefault(key, [0] * minutes)[int(slot)] += 1
        return series

    def counts(self) -> Counter[str]:
        """Records by kind (for the status line)."""
        return Counter(str(r.get("kind")) for _t, r in self._snapshot())


class KafkaTail:
    """Fill a :class:`Feed` from the decisions and alerts topics, in a daemon thread."""

    def __init__(self, feed: Feed, bootstrap: str, topics: list[str], *, since_ms: int = DAY_MS) -> None:
        self.feed = feed
        self.bootstrap = bootstrap
        self.topics = topics
        self.since_ms = since_ms
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="console-kafka-tail", daemon=True)

    def start(self) -> KafkaTail:
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tail()
            except Exception as exc:  # noqa: BLE001 - Kafka down or a topic missing: say so, retry
                self.feed.connected = False
                self.feed.error = f"{type(exc).__name__}: {exc}"[:500]
                self._stop.wait(5.0)

    def _tail(self) -> None:
        from kafka import TopicPartition

        from riskctl.sim.kafka_io import consumer, poll

        c = consumer(self.bootstrap, self.topics, from_beginning=True)
        try:
            c.unsubscribe()
            parts = [
                TopicPartition(t, p) for t in self.topics for p in sorted(c.partitions_for_topic(t) or [])
            ]
            c.assign(parts)
            since = int(time.time() * 1000) - self.since_ms
            starts = c.offsets_for_times(dict.fromkeys(parts, since))
            ends = c.end_offsets(parts)
            for tp in parts:
                found = starts.get(tp)
                c.seek(tp, found.offset if found is not None else ends[tp])
            self.feed.connected, self.feed.error = True, None
            while not self._stop.is_set():
                self.feed.add((m.value, m.timestamp) for m in poll(c, 500))
        finally:
            c.close()
