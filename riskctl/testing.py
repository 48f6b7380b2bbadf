"""Helpers to test your own rules, without Kafka or Flink (like ``bytewax.testing``).

::

    from riskctl.testing import EventFactory, RuleRunner

    ev = EventFactory(user_id="alice")
    run = RuleRunner("rules/", lateness="5s")
    result = run.run([ev.login(0, success=False), ev.login(2, success=False), ev.login(4, success=False),
                      ev.login(6, success=True)])
    assert result.decision(ev.last_id).action == "REJECT"
    assert result.fired(ev.last_id) == ["brute_force_login"]

Times given to :class:`EventFactory` are seconds after its ``start`` (event time); ``ts=`` gives an exact
millisecond timestamp instead. Events are validated exactly as the job validates them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riskctl.core.decisions import Alert, Decision
from riskctl.core.engine import DEFAULT_STATE_TTL, Engine
from riskctl.core.events import normalize_event
from riskctl.core.expr import duration_ms
from riskctl.core.rules import Rule, RuleSet, load_rules, load_rules_text, parse_rule
from riskctl.core.runner import LocalRunner, Record

__all__ = ["EventFactory", "RuleRunner", "RunResult", "T0", "shuffle_within"]

#: 2023-11-14T22:13:20Z, a round default start for generated events.
T0 = 1_700_000_000_000


class EventFactory:
    """Builds valid events for one user, with sequential ids (``<user>-1``, ``<user>-2``, ...)."""

    def __init__(self, user_id: str = "u1", *, start: int = T0, id_prefix: str | None = None) -> None:
        self.user_id = user_id
        self.start = start
        self._ids = itertools.count(1)
        self._prefix = id_prefix if id_prefix is not None else user_id
        self.last_id = ""

    def event(self, type: str, at: float = 0.0, *, ts: int | None = None, **fields: Any) -> dict[str, Any]:
        """An event of any type, ``at`` seconds after the start (or at ``ts`` ms)."""
        self.last_id = fields.pop("event_id", None) or f"{self._prefix}-{next(self._ids)}"
        when = ts if ts is not None else self.start + round(at * 1000)
        raw = {"event_id": self.last_id, "user_id": self.user_id, "type": type, "ts": when, **fields}
        return normalize_event(raw)

    def login(self, at: float = 0.0, *, success: bool = True, **fields: Any) -> dict[str, Any]:
        """A login (``success`` true or false)."""
        return self.event("login", at, success=success, **fields)

    def transfer(self, at: float = 0.0, *, amount: float, **fields: Any) -> dict[str, Any]:
        """A transfer of ``amount``."""
        return self.event("transfer", at, amount=amount, **fields)

    def password_change(self, at: float = 0.0, **fields: Any) -> dict[str, Any]:
        """A password change."""
        return self.event("password_change", at, **fields)

    def two_fa(self, at: float = 0.0, *, success: bool = True, **fields: Any) -> dict[str, Any]:
        """A 2FA check."""
        return self.event("2fa", at, success=success, **fields)

    def register(self, at: float = 0.0, **fields: Any) -> dict[str, Any]:
        """A registration."""
        return self.event("register", at, **fields)

    def order(self, at: float = 0.0, **fields: Any) -> dict[str, Any]:
        """An order."""
        return self.event("order", at, **fields)


@dataclass
class RunResult:
    """Everything a run produced, with lookups by event id."""

    records: list[Record]
    decisions: dict[str, Decision] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    def __post_init__(self) -> None:
        for record in self.records:
            if isinstance(record, Decision):
                self.decisions[record.event_id] = record
            else:
                self.alerts.append(record)

    def decision(self, event_id: str) -> Decision:
        """The decision of one event."""
        return self.decisions[event_id]

    def action(self, event_id: str) -> str:
        """The action decided for one event."""
        return self.decisions[event_id].action

    def fired(self, event_id: str) -> list[str]:
        """Ids of the active rules that fired on one event."""
        return [r.id for r in self.decisions[event_id].rules]

    def shadow_hits(self, event_id: str) -> list[str]:
        """Ids of the shadow rules that fired on one event."""
        return [r.id for r in self.decisions[event_id].shadow]

    def alerts_for(self, rule_id: str) -> list[Alert]:
        """The alerts raised by one rule."""
        return [a for a in self.alerts if a.rule.id == rule_id]


class RuleRunner:
    """Runs rules (a folder, a file, YAML text, documents or a RuleSet) over events, with in-memory state."""

    def __init__(
        self,
        rules: str | Path | RuleSet | Iterable[Rule | Mapping[str, Any]],
        *,
        lateness: int | str = 0,
        state_ttl: int | str | None = DEFAULT_STATE_TTL,
    ) -> None:
        ruleset = _ruleset(rules)
        ttl = None if state_ttl is None else duration_ms(state_ttl)
        self.engine = Engine(ruleset, lateness=duration_ms(lateness), state_ttl=ttl)
        self.runner = LocalRunner(self.engine)

    def run(self, events: Iterable[Mapping[str, Any]], *, finish: bool = True) -> RunResult:
        """Feed events in the given order (then fire every remaining timer unless ``finish=False``)."""
        return RunResult(self.runner.run(events, finish=finish))

    def feed(self, event: Mapping[str, Any]) -> RunResult:
        """Feed one more event (state carries over between calls)."""
        return RunResult(list(self.runner.feed(event)))

    def finish(self) -> RunResult:
        """Fire every remaining timer."""
        return RunResult(list(self.runner.finish()))


def _ruleset(rules: str | Path | RuleSet | Iterable[Rule | Mapping[str, Any]]) -> RuleSet:
    if isinstance(rules, RuleSet):
        return rules
    if isinstance(rules, Path) or (isinstance(rules, str) and "\n" not in rules and Path(rules).exists()):
        return load_rules(rules)
    if isinstance(rules, str):
        return RuleSet(load_rules_text(rules, source="<test>"))
    return RuleSet(r if isinstance(r, Rule) else parse_rule(r) for r in rules)


def shuffle_within(events: Sequence[Mapping[str, Any]], lateness_ms: int, *, seed: int = 0) -> list[Any]:
    """A random arrival order where no event comes more than ``lateness_ms`` after a newer one (per the
    watermark).

    Each event is delayed by a random amount below ``lateness_ms`` and the stream is sorted by arrival time,
    which is what a source with bounded out-of-orderness produces.
    """
    rng = random.Random(seed)
    delayed = [(e["ts"] + rng.randrange(max(lateness_ms, 1)), i, e) for i, e in enumerate(events)]
    delayed.sort(key=lambda x: (x[0], x[1]))
    return [e for _, _, e in delayed]
