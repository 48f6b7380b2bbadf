"""A local runner: the engine over in-memory state with event-time timers, as the Flink job runs it per key.

Used by ``riskctl replay``, by :mod:`riskctl.testing` and by the benchmark. Events are fed in arrival order;
the watermark is ``max ts seen - lateness`` (Flink's bounded out-of-orderness); after each event, the timers
the
engine asked for that are at or before the watermark fire, oldest first. :meth:`LocalRunner.finish` fires
every
remaining timer (Flink's final watermark at the end of a bounded input).
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from riskctl.core.decisions import Alert, Decision, Result
from riskctl.core.engine import Engine
from riskctl.core.state import InMemoryStore, KeyedStore

Record = Decision | Alert


class LocalRunner:
    """Feeds validated events to an :class:`Engine`, one in-memory state per user, and fires its timers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: an InMemoryStore unless a caller puts another behind it (typed by what the runner uses of it: the
        #: compiled core checks a native class's attributes at each assignment)
        self.store: KeyedStore = InMemoryStore()
        self._timers: list[tuple[int, str]] = []
        self._pending: set[tuple[int, str]] = set()
        self.max_ts: int | None = None
        self.timers_fired = 0
        #: timers whose on_timer raised (counted and skipped, as the job does), and the last such error
        self.timer_errors = 0
        self.last_timer_error: str | None = None

    @property
    def watermark(self) -> int | None:
        """The current watermark (None before the first event)."""
        return None if self.max_ts is None else self.max_ts - self.engine.lateness

    def feed(self, event: Mapping[str, Any]) -> Iterator[Record]:
        """Decide one event (already validated), then fire due timers. Returns an iterator over the decision,
        then any alerts (the records of :meth:`accept` then :meth:`advance`, built at once).
        """
        # Eager, not a generator: four nested generators per event cost more than the engine's own
        # bookkeeping of an event (bench/results/engine-issue14.md).
        user = event["user_id"]
        engine = self.engine
        result = engine.process(self.store.for_key(user), event)
        decision = result.decision
        out: list[Record] = [] if decision is None else [decision]
        if result.alerts:
            out.extend(result.alerts)
        if result.cancelled:
            self._cancel(result.cancelled, user)
        if result.timers:
            self._register(result.timers, user)
        ts = event["ts"]
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
            heap = self._timers
            watermark = ts - engine.lateness
            if heap and heap[0][0] <= watermark:
                out.extend(self.fire_until(watermark))
        return iter(out)

    def accept(self, result: Result, user: str) -> Iterator[Record]:
        """The records of ``result`` (an engine result for ``user``); registers the timers it asks for."""
        return self._records(result, user)

    def advance(self, ts: int) -> Iterator[Alert]:
        """Event time has seen ``ts``: move the watermark (never back) and fire the timers it passed."""
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
            yield from self.fire_until(ts - self.engine.lateness)

    def fire_until(self, watermark: int | None) -> Iterator[Alert]:
        """Fire every timer at or before ``watermark`` (None: all of them)."""
        heap = self._timers
        while heap and (watermark is None or heap[0][0] <= watermark):
            item = heapq.heappop(heap)
            if item not in self._pending:
                continue  # cancelled
            self._pending.discard(item)
            ts, user = item
            state = self.store.get_existing(user)
            if state is None:
                continue
            self.timers_fired += 1
            try:
                result = self.engine.on_timer(state, ts)
            except Exception as exc:  # noqa: BLE001 - one key's failing timer never stops the others
                self.timer_errors += 1
                self.last_timer_error = f"user {user!r} at {ts}: {type(exc).__name__}: {exc}"[:1000]
                continue
            for record in self._records(result, user):
                assert isinstance(record, Alert)
                yield record
            self.store.drop_if_empty(user)

    def finish(self) -> Iterator[Alert]:
        """End of input: fire every remaining timer."""
        return self.fire_until(None)

    def run(self, events: Iterable[Mapping[str, Any]], *, finish: bool = True) -> list[Record]:
        """Feed every event (and finish); return all records in order."""
        out: list[Record] = []
        for event in events:
            out.extend(self.feed(event))
        if finish:
            out.extend(self.finish())
        return out

    def _records(self, result: Result, user: str) -> Iterator[Record]:
        if result.decision is not None:
            yield result.decision
        yield from result.alerts
        self._cancel(result.cancelled, user)
        self._register(result.timers, user)

    def _cancel(self, timers: list[int], user: str) -> None:
        # (left in the heap, skipped when popped: a timer registered again is pushed again)
        for ts in timers:
            self._pending.discard((ts, user))

    def _register(self, timers: list[int], user: str) -> None:
        pending = self._pending
        for ts in timers:
            item = (ts, user)
            if item not in pending:
                pending.add(item)
                heapq.heappush(self._timers, item)

    def pending_timers(self) -> int:
        """How many timers are waiting."""
        return len(self._pending)


#: gen0 threshold used by :func:`tune_gc` (CPython's default is 700): the most objects one collection scans
GC_GEN0_THRESHOLD = 10_000


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop":
        gc.freeze()


def tune_gc() -> tuple[int, int, int]:
    """Make CPython's cyclic GC scan each object at most once; returns the previous thresholds.

    Per-key state is a large, acyclic graph of small lists, tuples and dicts, and every event allocates a few
    more. With the default policy the collector keeps re-scanning that state: older generations hold every
    state object ever decoded, so their collections take a large share of the engine's time
    (``bench/results/engine.md``), and a full collection of a large state pauses the process for a long time
    (``bench/flink_profile/README.md``).

    Here every object that survives one collection is moved to the permanent generation (``gc.freeze``), so a
    collection only ever scans the objects allocated since the previous one: at most ``GC_GEN0_THRESHOLD``.
    That pause is short alone but much longer inside a busy Flink TaskManager, which therefore turns the
    collector off instead (``riskctl.flink.risk_function``; the pauses measured: ``bench/flink_profile/``).
    Garbage cycles that form and die between two collections (exceptions with their tracebacks, for
    instance) are still collected; a cycle among objects that survived a collection is not. The engine
    creates no cycles (reference counting frees all of its state), so that is the trade: bounded pauses
    against cycles among old objects, which this code does not make.

    Process-wide policy, so the engine never calls it: applications do (``riskctl replay``, the benchmarks).
    Calling it again changes nothing.
    """
    previous = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
    gc.freeze()  # what exists now (modules, rules, ...) is old already
    return previous  # type: ignore[return-value]
