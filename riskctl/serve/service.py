"""The decision service behind ``POST /v1/decisions``: produce, wait, fall back, remember (no HTTP, no Kafka).

A :class:`Bus` produces events and hands the decisions that come back to :meth:`DecisionService.on_decision`
(the Kafka one is :mod:`riskctl.serve.kafka_bus`; the unit tests use an in-memory one).

Idempotency by ``event_id``: the first request of an event produces it and creates an entry in a bounded
LRU (``serve.idempotency_max_entries`` entries, each kept ``serve.idempotency_ttl_ms``). A retry of the same
event (same content) never produces it again: it gets the decision if it came, or waits on the same future
for up to its own timeout. A request that reuses an event_id with different content gets 409. The memory is
per instance: a retry that reaches another instance is a new event there (docs/api.md: route retries to the
same instance, e.g. by hashing event_id or user_id at the load balancer).

On timeout the configured fallback answers (PASS marked ``"degraded": "timeout"``, or REVIEW/REJECT); the
event is still decided by the job, and the decision, when it arrives, replaces the fallback in the entry, so a
later retry gets the job's decision. A failed produce (Kafka unreachable for ``produce_timeout_ms``) forgets
the entry, so a retry produces again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from riskctl.core.decisions import PASS, REJECT, REVIEW
from riskctl.core.door import Limits
from riskctl.serve.request import ApiError, DecisionRequest, encode_event

FALLBACKS = {"open": PASS, "review": REVIEW, "reject": REJECT}


class Bus(Protocol):
    """Where events go and where their decisions come from."""

    reply_key: str

    def produce(self, key: bytes, value: bytes, on_failure: Callable[[str], None]) -> None:
        """Send one event (never blocks); ``on_failure(reason)`` is called, on the loop, if it is lost."""


@dataclass(slots=True)
class Entry:
    fingerprint: str
    created: float
    future: asyncio.Future[dict[str, Any]]
    decision: dict[str, Any] | None = None
    fell_back: bool = False  # a request got the fallback before the decision came


@dataclass(slots=True)
class Stats:
    requests: int = 0
    decided: int = 0
    timeouts: int = 0
    replays: int = 0
    produce_failures: int = 0
    late_decisions: int = 0
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
        max_in_flight: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fallback not in FALLBACKS:
            msg = f"serve.fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}"
            raise ValueError(msg)
        if ttl_ms < 1 or max_entries < 1 or max_in_flight < 1:
            msg = "serve.idempotency_ttl_ms, idempotency_max_entries and max_in_flight must be positive"
            raise ValueError(msg)
        self.bus = bus
        self.limits = limits
        self.fallback = FALLBACKS[fallback]
        self.ttl = ttl_ms / 1000
        self.max_entries = max_entries
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.in_flight = 0
        self.stats = Stats()

    # -- requests --------------------------------------------------------------------------------------------
    async def decide(self, request: DecisionRequest) -> dict[str, Any]:
        """The response body for one valid request (raises ApiError 409/413/503)."""
        start = self.clock()
        self.stats.requests += 1
        entry = self._lookup(request.event_id, start)
        replay = entry is not None
        if entry is not None:
            if entry.fingerprint != request.fingerprint:
                msg = "this event_id was already sent with a different content"
                raise ApiError(409, msg, "event_id")
            self.stats.replays += 1
        else:
            if self.in_flight >= self.max_in_flight:
                msg = f"too many requests waiting for a decision ({self.max_in_flight})"
                raise ApiError(503, msg)
            value = encode_event(request, self.bus.reply_key, self.limits)
            entry = Entry(request.fingerprint, start, asyncio.get_running_loop().create_future())
            self._remember(request.event_id, entry)
            self.bus.produce(
                request.user_id.encode("utf-8"), value, lambda reason: self._lost(request.event_id, reason)
            )
        decision = entry.decision
        degraded = None
        if decision is None:
            self.in_flight += 1
            try:
                decision = await asyncio.wait_for(asyncio.shield(entry.future), request.timeout_ms / 1000)
            except TimeoutError:
                decision = None
                degraded = "timeout"
                self.stats.timeouts += 1
            except ProduceFailed as exc:
                decision = None
                degraded = f"produce_failed: {exc}"[:300]
                self.stats.timeouts += 1
            finally:
                self.in_flight -= 1
        elapsed_ms = round((self.clock() - start) * 1000, 3)
        if decision is None:
            entry.fell_back = True
            return self._fallback_body(request, elapsed_ms, degraded or "timeout", replay)
        self.stats.decided += 1
        return {**decision, "elapsed_ms": elapsed_ms, "degraded": None, "replay": replay, "source": "job"}

    def _fallback_body(
        self, request: DecisionRequest, elapsed_ms: float, degraded: str, replay: bool
    ) -> dict[str, Any]:
        return {
            "kind": "decision",
            "event_id": request.event_id,
            "user_id": request.user_id,
            "action": self.fallback,
            "rules": [],
            "shadow": [],
            "ruleset_version": None,
            "elapsed_ms": elapsed_ms,
            "degraded": degraded,
            "replay": replay,
            "source": "fallback",
        }

    # -- memory ---------------------------------------------------------------------------------------------
    def _lookup(self, event_id: str, now: float) -> Entry | None:
        self._expire(now)
        entry = self.entries.get(event_id)
        if entry is not None:
            self.entries.move_to_end(event_id)
        return entry

    def _remember(self, event_id: str, entry: Entry) -> None:
        self.entries[event_id] = entry
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        # the oldest first (insertion order, refreshed on use): stop at the first one still fresh
        while self.entries:
            event_id, entry = next(iter(self.entries.items()))
            if now - entry.created <= self.ttl:
                break
            del self.entries[event_id]

    # -- from the bus ---------------------------------------------------------------------------------------
    def on_decision(self, decision: dict[str, Any]) -> bool:
        """A decision read from the replies; True when it answered (or will answer) a request of ours."""
        event_id = decision.get("event_id")
        if not isinstance(event_id, str):
            return False
        entry = self.entries.get(event_id)
        if entry is None:
            return False
        now = self.clock()
        self.stats.last_roundtrip = now
        if entry.decision is None:
            entry.decision = decision
            if entry.fell_back:
                self.stats.late_decisions += 1
            if not entry.future.done():
                entry.future.set_result(decision)
        return True

    def _lost(self, event_id: str, reason: str) -> None:
        """The event was not delivered to Kafka: fail the waiters, forget it (a retry produces again)."""
        self.stats.produce_failures += 1
        entry = self.entries.pop(event_id, None)
        if entry is not None and not entry.future.done():
            entry.future.set_exception(ProduceFailed(reason))
            entry.future.exception()  # retrieved: no "exception never retrieved" warning without waiters


class ProduceFailed(Exception):
    """The event could not be delivered to Kafka."""
