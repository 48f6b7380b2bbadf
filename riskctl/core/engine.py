"""The engine: runs a :class:`~riskctl.core.rules.RuleSet` over one key's events and timers.

The engine object holds only compiled, immutable things (features, matchers, conditions); everything per key
lives in the :class:`~riskctl.core.state.KeyedState` passed to each call, so the same engine runs over an
in-memory dict (replay, tests) or Flink keyed state (the job). See ``docs/engine.md`` for the semantics.

::

    engine = Engine(load_rules("rules/"), lateness=5_000)
    result = engine.process(state, event)      # -> Result(decision, alerts, timers)
    result = engine.on_timer(state, ts)        # -> Result(None, alerts, timers)
    engine.upsert_rule(document)               # a bad rule raises RuleSetError; the old one keeps running

State names used in a key's state: each feature's ``spec.state_key``, the pattern's ``spec.state_key`` per sequence
rule, and ``_engine`` (the engine's own bookkeeping: newest ts, last ts, pending timers, recent events).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from riskctl.core.decisions import (
    Alert,
    Decision,
    FiredRule,
    Result,
    match_evidence,
)
from riskctl.core.errors import RuleSetError
from riskctl.core.expr import FEATURES_FIELD
from riskctl.core.features import WINDOWED_KINDS, Feature, compile_feature
from riskctl.core.patterns import PatternMatcher
from riskctl.core.rules import ACTION_RANK, Rule, RuleSet, parse_rule
from riskctl.core.state import KeyedState

META = "_engine"
DEFAULT_STATE_TTL = 24 * 3_600_000
RECENT_CAP = 32
# Indices into the meta list stored under META (a list pickles smaller than a dict).
_MAX_TS, _LAST_TS, _RS, _CLEANUP, _WAKEUPS, _RECENT, _USER = range(7)
_RANK_ACTION = {v: k for k, v in ACTION_RANK.items()}


@dataclass(frozen=True, slots=True)
class _RulePlan:
    rule: Rule
    shadow: bool
    applies_to: frozenset[str] | None
    features: tuple[tuple[str, str], ...]  # (local name, state key)
    when: Any  # closure fn(event, features) -> bool, or None for a sequence rule
    pattern_key: str | None
    rank: int
    # for the late re-check (scenario 14): the rule's features are all windowed (value_at available)
    recheckable: bool


@dataclass(frozen=True, slots=True)
class _PatternPlan:
    key: str
    rule_id: str
    matcher: Any
    stamp: tuple[tuple[str, str], ...]  # features the steps read: (local name, state key)


class _Plan:
    """Everything compiled from one rule set; replaced as a whole on a rule update (never mutated)."""

    def __init__(self, ruleset: RuleSet, lateness: int) -> None:
        self.ruleset = ruleset
        self.version = ruleset.version
        features: dict[str, Feature] = {}
        rules: list[_RulePlan] = []
        patterns: list[_PatternPlan] = []
        for rule in ruleset.rules:
            if rule.status == "disabled":
                continue
            fmap = []
            for name, spec in rule.features.items():
                key = spec.state_key
                if key not in features:
                    features[key] = compile_feature(spec, lateness=lateness)
                fmap.append((name, key))
            pattern_key = None
            if rule.sequence is not None:
                pattern_key = rule.sequence.state_key
                stamp = tuple((n, k) for n, k in fmap if n in rule.step_features)
                matcher = PatternMatcher(rule.sequence, lateness=lateness)
                patterns.append(_PatternPlan(pattern_key, rule.id, matcher, stamp))
            rules.append(
                _RulePlan(
                    rule=rule,
                    shadow=rule.status == "shadow",
                    applies_to=rule.applies_to,
                    features=tuple(fmap),
                    when=rule.when.fn if rule.when is not None else None,
                    pattern_key=pattern_key,
                    rank=ACTION_RANK[rule.action],
                    recheckable=rule.when is not None
                    and all(spec.kind in WINDOWED_KINDS for spec in rule.features.values()),
                )
            )
        self.features: tuple[tuple[str, Feature], ...] = tuple(features.items())
        self.rules = tuple(rules)
        self.patterns = tuple(patterns)
        self.names = frozenset([*features, *(p.key for p in patterns), META])
        self.recheck = tuple(r for r in self.rules if r.recheckable)
        self.feature_by_key = dict(features)


class Engine:
    """Decides events of one key at a time over a :class:`KeyedState` (see the module docstring)."""

    def __init__(
        self,
        rules: RuleSet | Iterable[Rule] = (),
        *,
        lateness: int = 0,
        state_ttl: int | None = DEFAULT_STATE_TTL,
    ) -> None:
        if lateness < 0:
            msg = f"lateness must be >= 0 ms, got {lateness}"
            raise ValueError(msg)
        if state_ttl is not None and state_ttl <= 0:
            msg = f"state_ttl must be > 0 ms (or None), got {state_ttl}"
            raise ValueError(msg)
        self.lateness = lateness
        self.state_ttl = state_ttl
        ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules)
        self._plan = _Plan(ruleset, lateness)
        self.overflow_reported = 0

    # ------------------------------------------------------------------------------------------ rules
    @property
    def ruleset(self) -> RuleSet:
        """The rule set in force."""
        return self._plan.ruleset

    def update_rules(self, rules: RuleSet | Iterable[Rule]) -> RuleSet:
        """Replace the whole rule set (already validated rules). Returns the new set.

        State of features whose definition is unchanged is kept (same ``state_key``); state no rule uses any
        more is released lazily, per key, on that key's next event or timer.
        """
        ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules)
        self._plan = _Plan(ruleset, self.lateness)
        return ruleset

    def upsert_rule(self, rule: Rule | Mapping[str, Any]) -> Rule:
        """Add a rule or replace the rule of the same id; a document is validated first.

        A bad document raises :class:`RuleSetError` (with every problem) and the rule set in force is unchanged.
        """
        parsed = rule if isinstance(rule, Rule) else parse_rule(rule, source="update")
        ruleset = self._plan.ruleset.with_rule(parsed)
        try:
            plan = _Plan(ruleset, self.lateness)
        except (ValueError, TypeError) as exc:  # a runtime that refuses the spec: report, keep the old set
            if isinstance(exc, RuleSetError):
                raise
            from riskctl.core.errors import RuleError

            raise RuleSetError([RuleError(str(exc), rule_id=parsed.id)]) from exc
        self._plan = plan
        return parsed

    def delete_rule(self, rule_id: str) -> bool:
        """Remove a rule; True if it existed. Its state is released lazily per key."""
        if rule_id not in self._plan.ruleset:
            return False
        self._plan = _Plan(self._plan.ruleset.without(rule_id), self.lateness)
        return True

    # ------------------------------------------------------------------------------------------ events
    def process(self, state: KeyedState, event: Mapping[str, Any]) -> Result:
        """Decide one (validated) event of the key whose state is ``state``."""
        plan = self._plan
        ts: int = event["ts"]
        meta = state.get(META)
        timers: list[int] = []
        if meta is None:
            meta = [ts, ts, plan.version, None, [], [], event["user_id"]]
        else:
            if meta[_RS] != plan.version:
                self._release_stale(state, plan, meta)
            ttl = self.state_ttl
            if ttl is not None and ts >= meta[_LAST_TS] + ttl and ts >= meta[_MAX_TS]:
                # Silent for longer than the TTL (its timer may not have fired yet): start from zero.
                self._clear(state)
                meta = [ts, ts, plan.version, None, [], [], event["user_id"]]
        late = ts < meta[_MAX_TS]

        # Features: each definition once, shared by every rule using it.
        values: dict[str, Any] = {}
        for key, feature in plan.features:
            stored = state.get(key)
            value, new = feature.evaluate(stored, event, ts)
            if new is None:
                if stored is not None:
                    state.remove(key)
            else:
                state.put(key, new)
            values[key] = value

        # Patterns.
        matches: dict[str, list[Any]] = {}
        if plan.patterns:
            for pp in plan.patterns:
                ev = event
                if pp.stamp:
                    ev = dict(event)
                    ev[FEATURES_FIELD] = {name: values[key] for name, key in pp.stamp}
                res = pp.matcher.process(state.get(pp.key), ev, ts)
                if res.new_stored is None:
                    state.remove(pp.key)
                else:
                    state.put(pp.key, res.new_stored)
                if res.matches:
                    matches[pp.rule_id] = list(res.matches)
                if res.wakeup is not None:
                    self._want_timer(meta, res.wakeup, timers)

        # Rules.
        etype = event.get("type")
        fired: list[FiredRule] = []
        shadow: list[FiredRule] = []
        alerts: list[Alert] = []
        rank = 0
        user_id = event["user_id"]
        event_id = event["event_id"]
        for rp in plan.rules:
            if rp.when is not None:
                if rp.applies_to is not None and etype not in rp.applies_to:
                    continue
                feats = {name: values[key] for name, key in rp.features}
                if not rp.when(event, feats):
                    continue
                hit = FiredRule(rp.rule.id, rp.rule.version, rp.rule.action, {"features": feats})
            else:
                found = matches.get(rp.rule.id)
                if not found:
                    continue
                seq_hit: FiredRule | None = None
                for m in found:
                    how = m.completed_by
                    if how == "event" and (rp.applies_to is None or etype in rp.applies_to):
                        if seq_hit is None:
                            seq_hit = self._sequence_hit(rp, values, m)
                    else:
                        alerts.append(self._match_alert(rp, values, m, how, ts, user_id, event_id, plan))
                if seq_hit is None:
                    continue
                hit = seq_hit
            if rp.shadow:
                shadow.append(hit)
            else:
                fired.append(hit)
                if rp.rank > rank:
                    rank = rp.rank
            if rp.rule.alert:
                alerts.append(
                    Alert(
                        alert_id=f"{rp.rule.id}:{rp.rule.version}:{event_id}",
                        user_id=user_id,
                        rule=hit,
                        reason="rule_alert",
                        ts=ts,
                        ruleset_version=plan.version,
                        event_id=event_id,
                        trigger_event_id=event_id,
                        shadow=rp.shadow,
                    )
                )

        # Late events: re-check condition rules on later events already decided (see docs/engine.md).
        if self.lateness:
            if late and plan.recheck:
                alerts.extend(self._recheck(state, plan, meta, event, ts, values))
            self._remember(meta, event, ts, fired, shadow)

        if ts > meta[_MAX_TS]:
            meta[_MAX_TS] = ts
        if ts > meta[_LAST_TS]:
            meta[_LAST_TS] = ts
        self._schedule_cleanup(state, plan, meta, timers)
        state.put(META, meta)
        decision = Decision(
            event_id=event_id,
            user_id=user_id,
            type=etype if isinstance(etype, str) else str(etype),
            ts=ts,
            action=_RANK_ACTION[rank],
            rules=fired,
            shadow=shadow,
            ruleset_version=plan.version,
            late=late,
        )
        return Result(decision, alerts, timers)

    # ------------------------------------------------------------------------------------------ timers
    def on_timer(self, state: KeyedState, ts: int) -> Result:
        """Event time reached ``ts`` for this key: absence patterns, cleanup, TTL. Returns alerts and timers."""
        plan = self._plan
        meta = state.get(META)
        if meta is None:
            return Result(None, [], [])
        if meta[_RS] != plan.version:
            self._release_stale(state, plan, meta)
        alerts: list[Alert] = []
        timers: list[int] = []
        ttl = self.state_ttl
        if ttl is not None and ts >= meta[_LAST_TS] + ttl:
            self._clear(state)
            return Result(None, [], [])
        meta[_WAKEUPS] = [w for w in meta[_WAKEUPS] if w > ts]
        if plan.patterns:
            by_rule = {rp.rule.id: rp for rp in plan.rules}
            for pp in plan.patterns:
                stored = state.get(pp.key)
                if stored is None:
                    continue
                res = pp.matcher.on_timer(stored, ts)
                if res.new_stored is None:
                    state.remove(pp.key)
                else:
                    state.put(pp.key, res.new_stored)
                rp = by_rule[pp.rule_id]
                for m in res.matches:
                    values = {key: None for _, key in rp.features}
                    alerts.append(self._match_alert(rp, values, m, "timer", ts, meta[_USER], None, plan))
                if res.wakeup is not None:
                    self._want_timer(meta, res.wakeup, timers)
        cleanup = meta[_CLEANUP]
        if cleanup is not None and ts >= cleanup:
            meta[_CLEANUP] = None
            for key, feature in plan.features:
                stored = state.get(key)
                if stored is None:
                    continue
                new = feature.expire(stored, ts)
                if new is None:
                    state.remove(key)
                else:
                    state.put(key, new)
            if meta[_RECENT]:
                horizon = meta[_MAX_TS] - self.lateness
                meta[_RECENT] = [r for r in meta[_RECENT] if r[0] >= horizon]
        if self._is_empty(state, plan) and not meta[_WAKEUPS]:
            self._clear(state)
            return Result(None, alerts, timers)
        self._schedule_cleanup(state, plan, meta, timers)
        state.put(META, meta)
        return Result(None, alerts, timers)

    # ------------------------------------------------------------------------------------------ helpers
    def _want_timer(self, meta: list[Any], ts: int, timers: list[int]) -> None:
        wakeups = meta[_WAKEUPS]
        if ts not in wakeups:
            wakeups.append(ts)
            timers.append(ts)

    def _schedule_cleanup(self, state: KeyedState, plan: _Plan, meta: list[Any], timers: list[int]) -> None:
        """Keep exactly one pending cleanup timer per key (re-armed when it fires on an active key)."""
        if meta[_CLEANUP] is not None:
            return
        candidates: list[int] = []
        for key, feature in plan.features:
            stored = state.get(key)
            if stored is not None:
                at = feature.next_cleanup(stored)
                if at is not None:
                    candidates.append(at)
        if self.state_ttl is not None:
            ttl_at = meta[_LAST_TS] + self.state_ttl
            at = min(max(candidates), ttl_at) if candidates else ttl_at
        elif candidates:
            at = max(candidates)
        else:
            return
        if at <= meta[_MAX_TS] - self.lateness:
            at = meta[_MAX_TS] - self.lateness + 1
        meta[_CLEANUP] = at
        timers.append(at)

    def _is_empty(self, state: KeyedState, plan: _Plan) -> bool:
        for name in state.names():
            if name != META:
                return False
        return True

    def _clear(self, state: KeyedState) -> None:
        for name in list(state.names()):
            state.remove(name)

    def _release_stale(self, state: KeyedState, plan: _Plan, meta: list[Any]) -> None:
        """Drop state that no rule of the current set uses (a deleted rule, a changed feature)."""
        for name in list(state.names()):
            if name not in plan.names:
                state.remove(name)
        meta[_RS] = plan.version

    def _sequence_hit(self, rp: _RulePlan, values: Mapping[str, Any], match: Any) -> FiredRule:
        evidence: dict[str, Any] = {"match": match_evidence(match)}
        if rp.features:
            evidence["features"] = {name: values.get(key) for name, key in rp.features}
        return FiredRule(rp.rule.id, rp.rule.version, rp.rule.action, evidence)

    def _match_alert(
        self,
        rp: _RulePlan,
        values: Mapping[str, Any],
        match: Any,
        reason: str,
        ts: int,
        user_id: str,
        trigger: str | None,
        plan: _Plan,
    ) -> Alert:
        hit = self._sequence_hit(rp, values, match)
        ids = hit.evidence["match"]["steps"]
        flat = [i for v in (ids.values() if isinstance(ids, Mapping) else ids) for i in v]
        first = flat[0] if flat else None
        return Alert(
            alert_id=f"{rp.rule.id}:{rp.rule.version}:{reason}:{':'.join(flat)}",
            user_id=user_id,
            rule=hit,
            reason=reason,
            ts=ts,
            ruleset_version=plan.version,
            event_id=first,
            trigger_event_id=trigger,
            shadow=rp.shadow,
        )

    def _remember(
        self,
        meta: list[Any],
        event: Mapping[str, Any],
        ts: int,
        fired: list[FiredRule],
        shadow: list[FiredRule],
    ) -> None:
        """Keep recent events (within lateness of the newest) so a late event can re-check them."""
        horizon = max(meta[_MAX_TS], ts) - self.lateness
        recent = [r for r in meta[_RECENT] if r[0] >= horizon]
        if ts >= horizon:
            recent.append([ts, dict(event), [h.id for h in fired] + [h.id for h in shadow]])
            recent.sort(key=lambda r: r[0])
            if len(recent) > RECENT_CAP:
                del recent[: len(recent) - RECENT_CAP]
        meta[_RECENT] = recent

    def _recheck(
        self,
        state: KeyedState,
        plan: _Plan,
        meta: list[Any],
        event: Mapping[str, Any],
        ts: int,
        values: Mapping[str, Any],
    ) -> list[Alert]:
        """A late event may make a condition rule true for a later event already decided: raise an alert."""
        alerts: list[Alert] = []
        for entry in meta[_RECENT]:
            r_ts, r_event, r_fired = entry
            if r_ts <= ts:
                continue
            r_type = r_event.get("type")
            for rp in plan.recheck:
                if rp.rule.id in r_fired or (rp.applies_to is not None and r_type not in rp.applies_to):
                    continue
                feats: dict[str, Any] = {}
                for name, key in rp.features:
                    feature = plan.feature_by_key[key]
                    feats[name] = _value_at(feature, state.get(key), r_ts)
                if not rp.when(r_event, feats):
                    continue
                r_fired.append(rp.rule.id)
                hit = FiredRule(rp.rule.id, rp.rule.version, rp.rule.action, {"features": feats})
                alerts.append(
                    Alert(
                        alert_id=f"{rp.rule.id}:{rp.rule.version}:late_threshold:{r_event['event_id']}",
                        user_id=event["user_id"],
                        rule=hit,
                        reason="late_threshold",
                        ts=ts,
                        ruleset_version=plan.version,
                        event_id=r_event["event_id"],
                        trigger_event_id=event["event_id"],
                        shadow=rp.shadow,
                    )
                )
        return alerts


def _value_at(feature: Feature, stored: Any, ts: int) -> Any:
    """A windowed feature's value at ``ts`` over what is stored now, recording nothing.

    The contract (docs/design/core-contracts.md) asks windowed features for ``value_at(stored, ts)``; until
    features.py has it, the engine falls back on the windowed runtime's own query over ``(ts - window, ts]``.
    """
    value_at = getattr(feature, "value_at", None)
    if value_at is not None:
        return value_at(stored, ts)
    if stored is None:
        return feature._empty  # type: ignore[attr-defined]
    return feature._query(stored, ts)  # type: ignore[attr-defined]
