"""The decision service behind ``POST /v1/decisions``: produce, wait, fall back, remember (no HTTP, no Kafka).

A :class:`Bus` produces events and hands the decisions that come back to :meth:`DecisionService.on_decision`
(the Kafka one is :mod:`riskctl.serve.kafka_bus`; the unit tests use an in-memory one).

Idempotency by ``event_id``: the first request of an event produces it and creates an entry in a bounded
LRU (``serve.idempotency_max_entries`` entries and ``serve.idempotency_max_bytes`` bytes, each kept
``serve.idempotency_ttl_ms``). A retry of the same
event (same content, same caller) never produces it again: it gets the decision if it came, or waits on the
same future for up to its own timeout. A request that reuses an event_id with different content, or another
caller's (riskctl.serve.callers), gets 409. The memory is
per instance: a retry that reaches another instance is a new event there (docs/api.md: route retries to the
same instance, e.g. by hashing event_id or user_id at the load balancer).

On timeout the configured fallback answers (PASS marked ``"degraded": "timeout"``, or REVIEW/REJECT); the
event is still decided by the job, and the decision, when it arrives, replaces the fallback in the entry, so a
later retry gets the job's decision. A failed produce (Kafka unreachable for ``produce_timeout_ms``) forgets
the entry, so a retry produces again.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from riskctl.core.decisions import PASS, REJECT, REVIEW
from riskctl.core.door import Limits
from riskctl.serve.request import ApiError, DecisionRequest, encode_event

FALLBACKS = {"open": PASS, "review": REVIEW, "reject": REJECT}


class Bus(Protocol):
    """Where events go and where their decisions come from."""

    reply_key: str

    def produce(self, key: bytes, value: bytes, on_failure: Callable[[str], None]) -> None:
        """Send one event (never blocks); ``on_failure(reason)`` is called, on the loop, if it is lost: later
        (a delivery that failed) or at once, inside ``produce`` (a full queue, a record Kafka refuses)."""


#: One event in the idempotency memory: (fingerprint, created, the job's decision as JSON once it came,
#: whether a request got the fallback before it came, the event's user_id and ts, which the decision must
#: repeat to be taken). A plain tuple of text, numbers, bytes and a boolean: CPython stops tracking such a
#: tuple (an exact tuple, not a subclass) in its cyclic collector, so a memory of 100,000 events costs a
#: full collection nothing. As dataclasses holding the decisions' dicts, full collections took 85-227 ms
#: and stalled every request of the instance (bench/results/api.md).
Remembered = tuple[str, float, bytes | None, bool, str, int]

#: what an entry of the memory holds beyond the sizes of its event_id, fingerprint, user_id and decision: its
#: tuple, float and int, and its share of the OrderedDict (tracemalloc: 180 bytes an entry, 2026-12-05)
ENTRY_OVERHEAD = 200


def entry_bytes(event_id: str, entry: Remembered) -> int:
    """The memory an entry holds, as counted against ``serve.idempotency_max_bytes``. A decision carries the
    event's fields that its rules read (their evidence, whole lists included, once per rule): its size is the
    caller's to choose, up to the job's record limit (1 MB), unlike that of the ids."""
    size = ENTRY_OVERHEAD + sys.getsizeof(event_id) + sys.getsizeof(entry[0]) + sys.getsizeof(entry[4])
    return size if entry[2] is None else size + sys.getsizeof(entry[2])


@dataclass(slots=True)
class Stats:
    requests: int = 0
    decided: int = 0
    timeouts: int = 0
    replays: int = 0
    produce_failures: int = 0
    late_decisions: int = 0
    #: replies naming one of our event_ids but another user_id or ts (or nested too deep to be answered): not
    #: the decision of our event, ignored
    foreign_decisions: int = 0
    last_roundtrip: float = 0.0


class DecisionService:
    """One instance's requests: their futures, the idempotency memory, the fallback."""

    def __init__(
        self,
        bus: Bus,
        limits: Limits,
        *,
        fallback: str = "open",
        ttl_ms: int = 600_000,
        max_entries: int = 100_000,
        max_bytes: int = 256 << 20,
        max_in_flight: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fallback not in FALLBACKS:
            msg = f"serve.fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}"
            raise ValueError(msg)
        if ttl_ms < 1 or max_entries < 1 or max_bytes < 1 or max_in_flight < 1:
            msg = (
                "serve.idempotency_ttl_ms, idempotency_max_entries, idempotency_max_bytes and max_in_flight "
                "must be positive"
            )
            raise ValueError(msg)
        self.bus = bus
        self.limits = limits
        self.fallback = FALLBACKS[fallback]
        self.ttl = ttl_ms / 1000
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.entries: OrderedDict[str, Remembered] = OrderedDict()
        #: what the entries hold (:func:`entry_bytes`), kept within max_bytes like their number
        self.bytes = 0
        #: the requests waiting for an event's decision (the first one and its retries), each with its own
        #: timeout: a future each, resolved by on_decision or _lost, failed by its own timer
        self.waiters: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}
        self.in_flight = 0
        self.stats = Stats()

    # -- requests --------------------------------------------------------------------------------------------
    async def decide(self, request: DecisionRequest, caller: str = "") -> dict[str, Any]:
        """The response body for one valid request of ``caller`` (raises ApiError 409/413/503).

        An event_id belongs to the caller that sent it first: the caller is part of the fingerprint, so
        another caller's request with the same event_id is a conflict (409), never a retry that would get the
        first caller's decision."""
        start = self.clock()
        loop = asyncio.get_running_loop()
        self.stats.requests += 1
        event_id = request.event_id
        fingerprint = f"{caller}/{request.fingerprint}"
        entry = self._lookup(event_id, start)
        replay = entry is not None
        if entry is not None and entry[0] != fingerprint:
            msg = "this event_id was already sent with a different content, or by another caller"
            raise ApiError(409, msg, "event_id")
        # every request that will wait counts, a retry of an event still undecided included: retries must not
        # pile up beyond the bound (and keep every new event out with 503)
        if (entry is None or entry[2] is None) and self.in_flight >= self.max_in_flight:
            msg = f"too many requests waiting for a decision ({self.max_in_flight})"
            raise ApiError(503, msg)
        if entry is not None:
            self.stats.replays += 1
        else:
            value = encode_event(request, self.bus.reply_key, self.limits)
            self._remember(event_id, (fingerprint, start, None, False, request.user_id, request.ts))
            key = request.user_id.encode("utf-8")

            def failed(reason: str) -> None:
                # deferred: a failure reported inside produce() (the producer's queue full, a record Kafka
                # refuses) must find this request's waiter, created below, and fail it at once
                loop.call_soon(self._lost, event_id, reason, start)

            self.bus.produce(key, value, failed)
        decision = orjson.loads(entry[2]) if entry is not None and entry[2] is not None else None
        degraded = None
        if decision is None:
            # one future and one timer per waiting request (asyncio.wait_for over a shielded shared future
            # made four objects and as many callbacks per request)
            waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
            self.waiters.setdefault(event_id, set()).add(waiter)
            timer = loop.call_later(request.timeout_ms / 1000, _time_out, waiter)
            self.in_flight += 1
            try:
                decision = await waiter
            except TimeoutError:
                decision = None
                degraded = "timeout"
                self.stats.timeouts += 1
            except ProduceFailed as exc:
                decision = None
                degraded = f"produce_failed: {exc}"[:300]
                self.stats.timeouts += 1
            except GaveUp as exc:
                decision = None
                degraded = str(exc)
                self.stats.timeouts += 1
            finally:
                timer.cancel()
                self.in_flight -= 1
                self._forget_waiter(event_id, waiter)  # timed out or cancelled (the client went away)
        elapsed_ms = round((self.clock() - start) * 1000, 3)
        if decision is None:
            self._fell_back(event_id)
            return self._fallback_body(request, elapsed_ms, degraded or "timeout", replay)
        self.stats.decided += 1
        return {**decision, "elapsed_ms": elapsed_ms, "degraded": None, "replay": replay, "source": "job"}

    def _fallback_body(
        self, request: DecisionRequest, elapsed_ms: float, degraded: str, replay: bool
    ) -> dict[str, Any]:
        # every field of the job's decision record (riskctl.core.decisions.Decision), so that a caller reads
        # an answer the same way whoever made it; late, too_late, duplicate and ahead_ms are the job's to say
        return {
            "kind": "decision",
            "event_id": request.event_id,
            "user_id": request.user_id,
            "type": str(request.document.get("type")),  # as the job normalises it (an integer: its digits)
            "ts": request.ts,
            "action": self.fallback,
            "rules": [],
            "shadow": [],
            "ruleset_version": None,
            "late": False,
            "too_late": False,
            "duplicate": False,
            "ahead_ms": 0,
            "elapsed_ms": elapsed_ms,
            "degraded": degraded,
            "replay": replay,
            "source": "fallback",
        }

    # -- memory ---------------------------------------------------------------------------------------------
    def _forget_waiter(self, event_id: str, waiter: asyncio.Future[dict[str, Any]]) -> None:
        waiting = self.waiters.get(event_id)
        if waiting is not None:
            waiting.discard(waiter)
            if not waiting:
                del self.waiters[event_id]

    def _fell_back(self, event_id: str) -> None:
        entry = self.entries.get(event_id)
        if entry is not None and entry[2] is None and not entry[3]:
            self.entries[event_id] = (*entry[:3], True, *entry[4:])  # keeps its place in the order

    def _lookup(self, event_id: str, now: float) -> Remembered | None:
        self._expire(now)
        entry = self.entries.get(event_id)
        if entry is not None:
            self.entries.move_to_end(event_id)
        return entry

    def _remember(self, event_id: str, entry: Remembered) -> None:
        """Remember a new event, within the bounds of the memory (:meth:`_shrink`)."""
        self.entries[event_id] = entry
        self.bytes += entry_bytes(event_id, entry)
        self._shrink(event_id)

    def _shrink(self, keep: str) -> None:
        """Forget the least recently used entries beyond ``max_entries`` or ``max_bytes``: never one that
        requests still wait for (nor ``keep``, whose request waits next or whose decision just came), or its
        decision would find no entry and wake nobody. Those go to the end; the memory exceeds the bounds by
        as many."""
        entries, waiters = self.entries, self.waiters
        kept = 0
        while (len(entries) > self.max_entries or self.bytes > self.max_bytes) and kept < len(entries):
            oldest = next(iter(entries))
            if oldest == keep or oldest in waiters:
                entries.move_to_end(oldest)
                kept += 1
            else:
                self._forget(oldest)

    def _forget(self, event_id: str) -> None:
        entry = self.entries.pop(event_id, None)
        if entry is not None:
            self.bytes -= entry_bytes(event_id, entry)

    def _expire(self, now: float) -> None:
        # the oldest first (insertion order, refreshed on use): stop at the first one still fresh, or at one
        # that requests still wait for, which stays until they have their decision or their fallback (those
        # behind it expire then, at most serve.max_timeout_ms late). Moving it to the end instead made every
        # lookup walk all the waited entries once the TTL was shorter than the wait: 1.4 ms per request more
        # with 10,000 waiting.
        entries, waiters = self.entries, self.waiters
        while entries:
            event_id, entry = next(iter(entries.items()))
            if now - entry[1] <= self.ttl or event_id in waiters:
                break
            self._forget(event_id)

    # -- from the bus ---------------------------------------------------------------------------------------
    def on_decision(self, decision: dict[str, Any]) -> bool:
        """A decision read from the replies; True when it answered (or will answer) a request of ours.

        Anyone who can write the events topic can send an event with one of our pending event_ids and our
        ``reply_to``: a reply is taken only when it also repeats the event's user_id and ts (the job's
        decision always does), else it is ignored and counted (``foreign_decisions``); so is one that cannot
        be written back as JSON (nested too deep), which would fail the answer of every request waiting."""
        event_id = decision.get("event_id")
        if not isinstance(event_id, str):
            return False
        entry = self.entries.get(event_id)
        if entry is None:
            return False
        fingerprint, created, remembered, fell_back, user_id, ts = entry
        if decision.get("user_id") != user_id or decision.get("ts") != ts:
            self.stats.foreign_decisions += 1
            return False
        if remembered is None:
            try:
                # an exact copy: orjson's own bytes keep the whole buffer it wrote into (4 KB for a decision
                # of 120 bytes, 32 KB for one of 3 KB), and the memory holds up to idempotency_max_entries
                encoded = bytes(memoryview(orjson.dumps(decision)))
            except TypeError:  # orjson.JSONEncodeError: nested beyond the 255 levels orjson writes
                self.stats.foreign_decisions += 1  # not the job's (it never writes one): no answer of ours
                return False
        self.stats.last_roundtrip = self.clock()
        if remembered is None:
            self.entries[event_id] = (fingerprint, created, encoded, fell_back, user_id, ts)
            self.bytes += sys.getsizeof(encoded)
            if fell_back:
                self.stats.late_decisions += 1
            for waiter in self.waiters.pop(event_id, ()):
                if not waiter.done():
                    waiter.set_result(decision)
            self._shrink(event_id)
        return True

    def _lost(self, event_id: str, reason: str, created: float | None = None) -> None:
        """The event was not delivered to Kafka: fail the waiters, forget it (a retry produces again).

        ``created``: when the entry of the production that failed was made. The report can come up to
        ``serve.produce_timeout_ms`` late, after that entry was forgotten and a retry produced the event
        again: the newer entry and its requests are not this failure's."""
        self.stats.produce_failures += 1
        entry = self.entries.get(event_id)
        if created is not None and (entry is None or entry[1] != created):
            return
        self._forget(event_id)
        for waiter in self.waiters.pop(event_id, ()):
            if not waiter.done():
                waiter.set_exception(ProduceFailed(reason))

    def give_up(self, reason: str) -> int:
        """Answer every request still waiting with the fallback marked ``degraded: reason`` (shutting down:
        the server would otherwise close their connections without an answer); how many there were."""
        waiting = [w for ws in self.waiters.values() for w in ws if not w.done()]
        for waiter in waiting:
            waiter.set_exception(GaveUp(reason))
        return len(waiting)


def _time_out(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class GaveUp(Exception):
    """The instance stopped waiting for the decision (shutting down): the fallback answers."""


class ProduceFailed(Exception):
    """The event could not be delivered to Kafka."""
