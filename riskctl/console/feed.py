"""What the job decided, for the console: the decisions and alerts topics read back into a bounded buffer.

:class:`Feed` is pure (records and their Kafka timestamps in, views out; time is an argument): hits per
rule over the last hour and day (to the minute), the latest records with filters, review cases (REVIEW
decisions and alerts), counts per minute for the charts. :class:`KafkaTail` fills it from Kafka in a daemon
thread, starting one day back (``offsets_for_times``), with a group-less consumer that commits nothing,
like ``riskctl decisions``. Kafka down: the tail keeps retrying and :attr:`Feed.error` says why, the pages
show it; nothing fails.

Memory is bounded whatever the topics hold (another producer's records too): a record over the job's own
limit (:data:`~riskctl.core.decisions.MAX_RECORD_BYTES`) is left out, the buffers are cut by bytes as well as
by count, and the counts per minute hold at most :data:`MAX_COUNTS` entries (a producer naming ever new rule
ids fills no more).

So is the CPU, whatever the topics hold and whatever their Kafka timestamps (a producer sets them):

- a record added costs in proportion to its size (at most ``MAX_RECORD_BYTES``), worked out before the lock
  is taken; under the lock, one look per distinct action or rule id it names;
- the counts live in the minutes of the feed's clock's last day (and :data:`MAX_AHEAD_MS` ahead of it): a
  record outside them is shown but not counted, and the clock is the wall clock (:class:`KafkaTail`), not
  the records' timestamps. Before, the minutes older than a day were looked for among all the kept minutes
  each time a record opened a new one: records each in a minute of their own, back in time, kept up to a
  million minutes and cost a scan of all of them each (10,000 such records: 8 s, holding the lock every
  page waits for), and one record stamped a day ahead dropped every count;
- the clock moves a minute at a time: one look at each of the day's 1,440 minutes, and each count enters
  and leaves the running totals of the last hour and day once;
- a page: :meth:`Feed.hits` one look per rule it shows (it was every count of the day: 3.3 s on the event
  loop for a million), :meth:`Feed.per_minute` one per minute and action, :meth:`Feed.latest` one per kept
  record (:data:`MAX_RECORDS`, each filter in constant time), :meth:`Feed.cases` one per case returned.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from riskctl.core.decisions import MAX_RECORD_BYTES
from riskctl.store.migrations import case_key

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000
#: records kept in memory for the live view and user pages (the newest); counts are kept per minute apart
MAX_RECORDS = 20_000
#: review cases kept in memory (the newest)
MAX_CASES = 10_000
#: the memory the kept records may take (:func:`footprint`), whatever their number: a decision of the job is
#: about 4 KiB in memory (400 bytes of JSON), so 20,000 of them take about 85 MB; 20,000 records of 1 MB
#: (another producer's) would have taken 20 GB
MAX_RECORD_MEMORY = 256 << 20
#: the memory the kept review cases' records may take (they are kept apart from the records: a case may be
#: older than the oldest kept record)
MAX_CASE_MEMORY = 128 << 20
#: (minute, action or rule id) counts kept for the last day, about 100 bytes each: 1,000,000 is ~694 rules
#: hitting every minute all day; a record naming ever new rule ids (another producer's) grew them for ever
MAX_COUNTS = 1_000_000
#: how far ahead of the wall clock a record's Kafka timestamp may be and still be counted (in its minute,
#: shown once the clock gets there): the job's sink stamps its records with its own clock, a few seconds off
#: the console's at most; one further ahead is another producer's, and no window would show it for hours
MAX_AHEAD_MS = 5 * MINUTE_MS
DAY_MINUTES = DAY_MS // MINUTE_MS
HOUR_MINUTES = HOUR_MS // MINUTE_MS
#: the actions counted by name (an alert's is ALERT); any other a record names is counted as OTHER
ACTIONS = ("PASS", "REVIEW", "REJECT", "ALERT")


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
    #: the case's bounded key (:func:`~riskctl.store.migrations.case_key` of its user and id: at most 255
    #: characters, ``<len(user)>:<user>:<id>`` when short): what a page and a label name the case by. The id
    #: alone names a case only within its user (event ids are the sender's): two users' cases with one id
    #: were one case, and a label for either landed on the newest. A record from another producer may carry
    #: an id of up to 1 MB, and the review page wrote each id whole into its form (and its row's attribute):
    #: one such case put 2 MB in the page
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", case_key(self.user_id, self.case_id))


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


def well_formed(record: Any) -> bool:
    """Whether ``record`` has the shape the views read: a JSON object whose ``rules`` and ``shadow`` (a
    decision's) are lists of objects and whose ``rule`` (an alert's) is an object, when present, and whose
    strings are all UTF-8 (:func:`_encodable`). Anything else on the topics (another producer's, a damaged
    record) is left out of the feed."""
    return isinstance(record, dict) and _encodable(record) and _shaped(record)


def _shaped(record: dict[str, Any]) -> bool:
    """The shape part of :func:`well_formed` (``rules``, ``shadow``, ``rule``)."""
    for key in ("rules", "shadow"):
        found = record.get(key)
        if record.get("kind") == "alert" and key == "shadow":
            continue  # an alert's shadow is a flag
        if found is not None and not (isinstance(found, list) and all(isinstance(r, dict) for r in found)):
            return False
    rule = record.get("rule")
    return rule is None or isinstance(rule, dict)


def _encodable(record: dict[str, Any]) -> bool:
    """Whether every string of ``record`` can be sent as UTF-8: JSON may escape a lone surrogate
    (``"\\ud800"``), which ``json.loads`` takes, and a page showing it failed to encode (a 500 on
    /decisions and /review for everyone, as long as the record was in the buffer). The job's door refuses such
    strings in events; a record holding one is another producer's."""
    return json_size(record) is not None


def json_size(record: Any) -> int | None:
    """The bytes of ``record`` as compact UTF-8 JSON, as the job writes it (``dumpb``), or None when it has
    no UTF-8 form (:func:`_encodable`)."""
    try:
        return len(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    except (UnicodeEncodeError, TypeError, ValueError):
        return None


def footprint(record: Any) -> int:
    """The bytes ``record`` (a decoded JSON value) takes in memory, every object counted where it is met: a
    key or a number shared by ``json.loads`` is counted each time, so this is an upper bound. Not its JSON
    size: 1 MB of empty objects (``[{},{},...]``) takes 24 MB once decoded."""
    total = 0
    todo = [record]
    while todo:
        obj = todo.pop()
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            total += sum(sys.getsizeof(k) for k in obj)
            todo.extend(obj.values())
        elif isinstance(obj, list):
            todo.extend(obj)
    return total


def _rule_ids(record: dict[str, Any]) -> list[str]:
    if record.get("kind") == "alert":
        rule = record.get("rule")
        return [str(rule.get("id"))] if isinstance(rule, dict) else []
    found = (record.get("rules") or []) + (record.get("shadow") or [])
    return [str(r.get("id")) for r in found if isinstance(r, dict)]


def action_of(record: dict[str, Any]) -> str:
    """The action a record is counted and filtered under: an alert's is ``ALERT``; one that is none of
    :data:`ACTIONS` (another producer's) is ``OTHER``, so the actions are a fixed few whatever the topics
    hold."""
    action = "ALERT" if record.get("kind") == "alert" else record.get("action")
    return action if action in ACTIONS else "OTHER"


@dataclass(frozen=True)
class _Kept:
    """A kept record with what the views read of it, worked out once when it is added (outside the lock):
    a filter then costs the same for every record, however many rules it names."""

    ts: int
    record: dict[str, Any]
    memory: int
    action: str
    rules: frozenset[str]


class Feed:
    """Counts per minute of every record of the last day (by action and by rule: at most ``max_counts``
    of them, about rules x 1,440 minutes, whatever the traffic), the newest ``max_records`` records for the
    live view and user pages (as many as ``max_record_memory`` bytes hold), and the newest ``max_cases``
    review cases (as many as ``max_case_memory`` bytes hold). Time is the record's Kafka timestamp (ms).

    The counts are kept relative to the feed's clock: the newest ``now_ms`` given to :meth:`add` or asked
    about (:meth:`hits`), or, when :meth:`add` is given none, the newest record's timestamp. A record more
    than a day older than the clock, or (``now_ms`` given) more than :data:`MAX_AHEAD_MS` ahead of it, is
    shown but not counted (:attr:`outside`): no window would ever show its count. The hits of the last hour
    and day are running totals, moved when the clock passes a minute, so the CPU of every call is bounded
    whatever the topics hold (module docstring)."""

    def __init__(
        self,
        max_records: int = MAX_RECORDS,
        max_cases: int = MAX_CASES,
        *,
        max_record_bytes: int = MAX_RECORD_BYTES,
        max_record_memory: int = MAX_RECORD_MEMORY,
        max_case_memory: int = MAX_CASE_MEMORY,
        max_counts: int = MAX_COUNTS,
    ) -> None:
        # kept records and (case, its record's footprint): cut by count and bytes
        self._records: deque[_Kept] = deque()
        self._cases: deque[tuple[Case, int]] = deque()
        #: minute -> counts ("action:X", "rule:Y") of the minutes after the clock's day (a few ahead of it)
        self._minutes: dict[int, Counter[str]] = {}
        #: the feed's clock, in minutes (None: nothing added or asked yet)
        self._clock: int | None = None
        #: rule id -> hits in the clock's last hour and day (sums of the minutes' "rule:" counts)
        self._hour: Counter[str] = Counter()
        self._day: Counter[str] = Counter()
        self._limits = (max_records, max_cases, max_record_memory, max_case_memory)
        self.max_record_bytes = max_record_bytes
        self.max_counts = max_counts
        self._lock = threading.Lock()
        self.error: str | None = None
        self.connected = False
        #: records left out because they are not :func:`well_formed` or are larger than ``max_record_bytes``
        self.skipped = 0
        #: the memory the kept records and cases take (:func:`footprint`)
        self.record_memory = 0
        self.case_memory = 0
        #: (minute, key) counts kept, and hits not counted because ``max_counts`` were kept already
        self.counts = 0
        self.uncounted = 0
        #: records shown but not counted: their timestamp is more than a day before the clock, or more than
        #: :data:`MAX_AHEAD_MS` after it
        self.outside = 0

    def add(self, records: Iterable[tuple[dict[str, Any], int]], now_ms: int | None = None) -> None:
        """Append records (record, Kafka timestamp in ms); one that is not :func:`well_formed`, or is larger
        than ``max_record_bytes`` as JSON (the job never writes one), is counted in :attr:`skipped` and left
        out. ``now_ms``: the wall clock (:class:`KafkaTail` gives it); without it the records' timestamps
        move the clock.

        What a record costs (its JSON size, its memory, its rule ids: all in proportion to its size, at most
        ``max_record_bytes``) is worked out before the lock is taken, and the lock is taken for one record at
        a time: a page waits for one record's counts at most, never for a whole batch of large ones."""
        max_records, max_cases, max_record_memory, max_case_memory = self._limits
        now = None if now_ms is None else now_ms // MINUTE_MS
        for record, ts in records:
            # well_formed, its JSON encoded once for both the UTF-8 check and the size
            size = json_size(record) if isinstance(record, dict) else None
            if size is None or size > self.max_record_bytes or not _shaped(record):
                with self._lock:
                    self.skipped += 1
                continue
            ids = _rule_ids(record)
            rules = frozenset(ids)
            memory = footprint(record) + sys.getsizeof(rules) + sum(sys.getsizeof(r) for r in rules)
            action = action_of(record)
            kept = _Kept(int(ts), record, memory, action, rules)
            case = case_of(record)
            keys = Counter([f"action:{action}", *(f"rule:{rule}" for rule in ids)])
            with self._lock:
                self._records.append(kept)
                self.record_memory += memory
                while len(self._records) > max_records or self.record_memory > max_record_memory:
                    self.record_memory -= self._records.popleft().memory
                if case is not None:
                    self._cases.append((case, memory))
                    self.case_memory += memory
                    while len(self._cases) > max_cases or self.case_memory > max_case_memory:
                        self.case_memory -= self._cases.popleft()[1]
                self._count(keys, int(ts) // MINUTE_MS, now)

    def _count(self, keys: Counter[str], minute: int, now: int | None) -> None:
        """Count ``keys`` in ``minute`` (under the lock); a count that would be a new entry past
        ``max_counts`` is left out (:attr:`uncounted`) until minutes older than a day make room."""
        self._advance(minute if now is None else now)
        clock = self._clock
        assert clock is not None
        if minute <= clock - DAY_MINUTES or minute > clock + MAX_AHEAD_MS // MINUTE_MS:
            self.outside += 1
            return
        counts = self._minutes.get(minute)
        if counts is None:
            counts = Counter()
        in_hour, in_day = clock - HOUR_MINUTES < minute <= clock, minute <= clock
        for key, n in keys.items():
            if key in counts:
                counts[key] += n
            elif self.counts < self.max_counts:
                counts[key] = n
                self.counts += 1
            else:
                self.uncounted += n
                continue
            if in_day and key.startswith("rule:"):
                self._day[key[5:]] += n
                if in_hour:
                    self._hour[key[5:]] += n
        if counts and minute not in self._minutes:
            self._minutes[minute] = counts

    def _advance(self, minute: int) -> None:
        """Move the clock (under the lock) to ``minute`` if it is later: the minutes that enter or leave the
        last hour and day move the totals, the minutes older than a day are dropped. One look at each of
        the day's 1,440 minutes (and the ones skipped) per minute the clock moves, and each count enters and
        leaves each total once; a clock moved by more than the kept minutes span starts afresh."""
        old = self._clock
        if old is not None and minute <= old:
            return
        self._clock = minute
        if old is None:
            return
        if minute - old > DAY_MINUTES + MAX_AHEAD_MS // MINUTE_MS:  # every kept minute is older than a day
            self._minutes.clear()
            self._hour.clear()
            self._day.clear()
            self.counts = 0
            return
        for m in range(old - DAY_MINUTES + 1, minute + 1):
            counts = self._minutes.get(m)
            if counts is None:
                continue
            for total, span in ((self._day, DAY_MINUTES), (self._hour, HOUR_MINUTES)):
                was, now = old - span < m <= old, minute - span < m <= minute
                if was != now:
                    sign = 1 if now else -1
                    for key, n in counts.items():
                        if key.startswith("rule:"):
                            total[key[5:]] += sign * n
                            if total[key[5:]] <= 0:
                                del total[key[5:]]
            if m <= minute - DAY_MINUTES:
                self.counts -= len(self._minutes.pop(m))

    def _snapshot(self) -> list[_Kept]:
        with self._lock:
            return list(self._records)

    def hits(self, now_ms: int, rules: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """rule id -> {"hour": hits in the last hour, "day": in the last day} (fired, shadow, alerts), to the
        minute, of ``rules`` (a rule without hits: zeros) or of every rule hit in the last day (None). As of
        ``now_ms`` or the feed's clock if that is later (the clock moves to ``now_ms``). Running totals: the
        cost is one look per rule asked about."""
        with self._lock:
            self._advance(now_ms // MINUTE_MS)
            wanted = self._day if rules is None else rules
            return {r: {"hour": self._hour.get(r, 0), "day": self._day.get(r, 0)} for r in wanted}

    def latest(
        self, *, action: str | None = None, rule: str | None = None, user: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """The newest records first, filtered by action (an alert's is ``ALERT``), rule and user: a look at
        each kept record at most (:data:`MAX_RECORDS`), the same whatever it holds."""
        out: list[dict[str, Any]] = []
        for kept in reversed(self._snapshot()):
            if action and kept.action != action:
                continue
            if user and kept.record.get("user_id") != user:
                continue
            if rule and rule not in kept.rules:
                continue
            out.append(kept.record)
            if len(out) >= limit:
                break
        return out

    def cases(self, limit: int = 500) -> list[Case]:
        """The newest review cases first."""
        with self._lock:
            return [case for case, _ in itertools.islice(reversed(self._cases), limit)]

    def case(self, key: str) -> Case | None:
        """One case by its key (:attr:`Case.key`, what the review page posts; ``case_key(user, id)`` for a
        case known by its user and id); None when it is no longer, or never was, among the kept cases. Not by
        its id alone: another user's case may have the same."""
        with self._lock:
            return next((c for c, _ in reversed(self._cases) if c.key == key), None)

    def per_minute(self, now_ms: int, minutes: int = 60, rule: str | None = None) -> dict[str, list[int]]:
        """Counts per minute over the last ``minutes``, oldest first: by action (all records), or, with
        ``rule``, that rule's hits only (key ``hits``). One look per minute and action (or the rule)."""
        series: dict[str, list[int]] = {}
        names = {f"action:{a}": a for a in (*ACTIONS, "OTHER")}
        keys = {f"rule:{rule}": "hits"} if rule is not None else names
        last = now_ms // MINUTE_MS
        with self._lock:
            for slot in range(minutes):
                counts = self._minutes.get(last - minutes + 1 + slot)
                if not counts:
                    continue
                for key, name in keys.items():
                    n = counts.get(key)
                    if n:
                        series.setdefault(name, [0] * minutes)[slot] += n
        return series


class KafkaTail:
    """Fill a :class:`Feed` from the decisions and alerts topics, in a daemon thread."""

    def __init__(self, feed: Feed, bootstrap: str, topics: list[str], *, since_ms: int = DAY_MS) -> None:
        self.feed = feed
        self.bootstrap = bootstrap
        self.topics = topics
        self.since_ms = since_ms
        #: (topic, partition) -> the offset after the last record added: where a restarted read resumes, so
        #: a failure does not add the day's records to the feed a second time
        self.positions: dict[tuple[str, int], int] = {}
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
                resume = self.positions.get((tp.topic, tp.partition))
                c.seek(tp, resume if resume is not None else found.offset if found is not None else ends[tp])
            self.feed.connected, self.feed.error = True, None
            while not self._stop.is_set():
                batch = list(poll(c, 500))
                self.feed.add(((m.value, m.timestamp) for m in batch), now_ms=int(time.time() * 1000))
                for m in batch:
                    self.positions[(m.topic, m.partition)] = m.offset + 1
        finally:
            c.close()
