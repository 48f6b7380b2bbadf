"""The engine: runs a :class:`~riskctl.core.rules.RuleSet` over one key's events and timers.

The engine object holds only compiled, immutable things (features, matchers, conditions); everything per key
lives in the :class:`~riskctl.core.state.KeyedState` passed to each call, so the same engine runs over an
in-memory dict (replay, tests) or Flink keyed state (the job). See ``docs/engine.md`` for the semantics.

::

    engine = Engine(load_rules("rules/"), lateness=5_000)
    result = engine.process(state, event)      # -> Result(decision, alerts, timers, cancelled)
    result = engine.on_timer(state, ts)        # -> Result(None, alerts, timers, cancelled)
    engine.upsert_rule(document)               # a bad rule raises RuleSetError; the old one keeps running

State names in a key's state: each feature's ``spec.state_key``, each sequence's ``spec.state_key``, and
``_engine`` (the engine's bookkeeping: newest and last ts, rule-set version, pending timers, recent events).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

from riskctl.core import dedup
from riskctl.core.decisions import (
    Alert,
    Decision,
    FieldRead,
    FiredRule,
    Result,
    StepReads,
    alert_id,
    field_reads,
    match_evidence,
    when_evidence,
)
from riskctl.core.errors import RuleError, RuleSetError
from riskctl.core.expr import FEATURES_FIELD, CompiledExpression
from riskctl.core.feature_spec import MAX_FEATURE_READS
from riskctl.core.features import WINDOWED_KINDS, Feature, FeatureSpec, compile_feature, field_of
from riskctl.core.patterns import PatternMatcher
from riskctl.core.reply import REPLY_FIELD
from riskctl.core.rules import ACTION_RANK, Rule, RuleSet, parse_rule
from riskctl.core.ruleset import rule_order
from riskctl.core.state import InMemoryKeyedState, KeyedState
from riskctl.core.stored import Projector, make_projector

META = "_engine"
#: the digests of the events the key decided recently (riskctl/core/dedup.py)
SEEN = "_seen"
DEFAULT_STATE_TTL = 24 * 3_600_000
#: events remembered per key for the late re-check of condition rules (those within the lateness)
RECENT_CAP = 32
#: the most stored values one late event's re-check may read in all (each feature value it computes at a
#: later event counted as :attr:`FeatureSpec.reads`, plus the raw events a windowed kind keeps): twice what
#: the features of one rule may read for one event. Without it, a rule at MAX_FEATURE_READS (4.5 ms an event)
#: re-checked at 32 later events made one late event cost 140-170 ms.
LATE_RECHECK_READS = 2 * MAX_FEATURE_READS
#: event types with a cached dispatch plan (more distinct types are planned per event, not cached)
MAX_CACHED_TYPES = 256
#: the event fields the engine itself reads from the events it stores (pattern buffers, recent events)
ENGINE_FIELDS = frozenset({"event_id", "type"})
# Indices into the meta list stored under META (a list pickles smaller than a dict). _TIMER (the newest
# timer time this key has seen) was added after the first layout: a 7-item meta (older state) lacks it.
# (Final literals: the compiled core indexes with constants, not with a global looked up each time.)
_MAX_TS: Final = 0
_LAST_TS: Final = 1
_RS: Final = 2
_CLEANUP: Final = 3
_WAKEUPS: Final = 4
_RECENT: Final = 5
_USER: Final = 6
_TIMER: Final = 7
_NO_TIMER = -(1 << 62)
_RANK_ACTION = {v: k for k, v in ACTION_RANK.items()}


@dataclass(frozen=True, slots=True)
class _RulePlan:
    rule: Rule
    shadow: bool
    applies_to: frozenset[str] | None
    features: tuple[tuple[str, str], ...]  # (local name, state key)
    when: Callable[[Any, Any], Any] | None  # fn(event, features) -> bool; None for a sequence rule
    rank: int
    recheckable: bool  # a condition rule over windowed features only (late re-check, docs/engine.md)
    fields: tuple[FieldRead, ...] = ()  # the event fields its condition reads (its explanation)
    steps: tuple[StepReads, ...] = ()  # a sequence rule: what each positive step reads (its explanation)


@dataclass(frozen=True, slots=True)
class _PatternPlan:
    key: str
    rule_id: str
    matcher: PatternMatcher
    stamp: tuple[tuple[str, str], ...]  # features the steps read: (local name, state key)
    types: frozenset[str] | None  # event types the pattern must see (None: all)
    order: tuple[int, str]  # its rule's place among the rules: (-priority, id)


@dataclass(frozen=True, slots=True)
class _TypePlan:
    """What an event of one type needs: the rest cannot change state nor fire (see ``_Plan.for_type``)."""

    features: tuple[tuple[str, Feature], ...]
    patterns: tuple[_PatternPlan, ...]
    rules: tuple[_RulePlan, ...]
    #: the condition rules of ``rules``, in the same order: all an event needs when no pattern matched
    when_rules: tuple[_RulePlan, ...] = ()


def _filter_types(spec: FeatureSpec) -> frozenset[str] | None:
    if spec.filter_text is None:
        return None
    return CompiledExpression(spec.filter_text).event_types


def _rule_fields(rule: Rule) -> frozenset[str] | None:
    """The event fields one rule needs kept of an event (see _stored_fields); None: whole events."""
    if rule.sequence is not None:
        fields: set[str] = set()
        for step in rule.sequence.steps:
            read = getattr(step.cond, "event_fields", None)
            if not isinstance(read, frozenset):
                return None
            fields.update(read)
        return frozenset(fields)
    if rule.when is not None and all(spec.kind in WINDOWED_KINDS for spec in rule.features.values()):
        # a condition rule the late re-check evaluates again on remembered events
        return rule.when.event_fields
    return frozenset()


def _count(counts: dict[str, int], names: frozenset[str] | None, delta: int) -> int:
    """Add ``delta`` to the count of each of ``names`` (a count at 0 goes); returns ``delta`` when ``names``
    is None (all of them: a rule needing whole events, or re-checked on any event type), else 0."""
    if names is None:
        return delta
    for name in names:
        n = counts.get(name, 0) + delta
        if n:
            counts[name] = n
        else:
            del counts[name]
    return 0


def _plan_order(plan: _RulePlan) -> tuple[int, str]:
    return rule_order(plan.rule)


def _pattern_order(pattern: _PatternPlan) -> tuple[int, str]:
    return pattern.order


_RECHECKABLE = attrgetter("recheckable")


def _feeds(plan: _RulePlan | None, pattern: _PatternPlan | None, etype: str) -> bool:
    """Whether an event of type ``etype`` reaches the rule (``_Plan.for_type``): its condition is checked, or
    its pattern is fed."""
    if plan is None:
        return False
    if plan.when is not None and (plan.rule.event_types is None or etype in plan.rule.event_types):
        return True
    return pattern is not None and (pattern.types is None or etype in pattern.types)


def _rule_plan(rule: Rule, fmap: tuple[tuple[str, str], ...]) -> _RulePlan:
    return _RulePlan(
        rule=rule,
        shadow=rule.status == "shadow",
        applies_to=rule.applies_to,
        features=fmap,
        when=rule.when.fn if rule.when is not None else None,
        rank=ACTION_RANK[rule.action],
        # a condition rule over windowed features only (the late re-check, docs/engine.md)
        recheckable=rule.when is not None
        and all(spec.kind in WINDOWED_KINDS for spec in rule.features.values()),
        fields=field_reads(rule.when.event_paths) if rule.when is not None else (),
        steps=_step_reads(rule),
    )


def _step_reads(rule: Rule) -> tuple[StepReads, ...]:
    """What each positive step of a sequence rule reads (for its explanation); () for a condition rule."""
    if rule.sequence is None:
        return ()
    return tuple(
        StepReads(
            step.name,
            field_reads(getattr(step.cond, "event_paths", ())),
            tuple(sorted(getattr(step.cond, "features_read", ()))),
        )
        for step in rule.sequence.steps
        if not step.negated
    )


class _Plan:
    """Everything compiled from one rule set; replaced as a whole on a rule update (never mutated after).

    A running job changes its rules one at a time, each change a new plan: the plan of a change is derived
    from the previous one (:meth:`_derive`), compiling only the changed rule and patching the lists, so that a
    change costs little more than its own rule. Built from every rule at each change, 10,000 rules written at
    once took minutes to apply (docs/rules-store.md, bench/rule_bulk_job.py).
    """

    # mypyc needs every attribute declared; a derived plan reads these of the previous one
    ruleset: RuleSet
    version: str
    lateness: int
    stored_fields: frozenset[str] | None
    field_shares: dict[str, frozenset[str] | None]  # rule id -> the event fields it needs kept (None: all)
    field_counts: dict[str, int]  # field -> how many rules' shares hold it
    whole_events: int  # how many rules need whole events kept
    memo: list[Any]
    project: Projector
    features: tuple[tuple[str, Feature], ...]
    feature_types: dict[str, frozenset[str] | None]
    feature_by_key: dict[str, Feature]
    feature_refs: dict[str, int]  # state key -> how many (rule, local name) pairs use it
    rules: tuple[_RulePlan, ...]
    patterns: tuple[_PatternPlan, ...]
    pattern_by_rule: dict[str, _PatternPlan]
    rule_by_id: dict[str, _RulePlan]
    names: frozenset[str]
    recheck: tuple[_RulePlan, ...]
    recheck_type_counts: dict[str, int]
    recheck_any: int  # re-checked rules of any event type
    recheck_types: frozenset[str] | None
    by_type: dict[str, _TypePlan]

    def __init__(
        self, ruleset: RuleSet, lateness: int, previous: _Plan | None = None, changed: str | None = None
    ) -> None:
        """The plan of ``ruleset``; with ``previous`` and ``changed`` (the id of the only rule that differs,
        added, replaced or removed), derived from ``previous``."""
        self.ruleset = ruleset
        self.version = ruleset.version
        self.lateness = lateness
        if previous is not None and changed is not None:
            self._derive(previous, changed)
        else:
            self._build_all(previous)

    def _build_all(self, previous: _Plan | None) -> None:
        """Every rule's plan; a feature already compiled by ``previous`` (same state_key, same definition)
        and an unchanged rule's plan (the same Rule object) are taken over."""
        known: dict[str, Feature] = previous.feature_by_key if previous is not None else {}
        known_types: dict[str, frozenset[str] | None] = previous.feature_types if previous is not None else {}
        known_rules: dict[str, _RulePlan] = previous.rule_by_id if previous is not None else {}
        active = [rule for rule in self.ruleset.rules if rule.status != "disabled"]
        known_shares = previous.field_shares if previous is not None else {}
        shares: dict[str, frozenset[str] | None] = {}
        for rule in active:
            same = known_rules.get(rule.id)
            unchanged = same is not None and same.rule is rule
            shares[rule.id] = known_shares[rule.id] if unchanged else _rule_fields(rule)
        self._set_fields(shares)
        same_projection = previous is not None and previous.stored_fields == self.stored_fields
        self._set_projection(previous if same_projection else None)
        known_patterns: dict[str, _PatternPlan] = (
            previous.pattern_by_rule if previous is not None and same_projection else {}
        )
        features: dict[str, Feature] = {}
        feature_types: dict[str, frozenset[str] | None] = {}
        refs: dict[str, int] = {}
        rules: list[_RulePlan] = []
        patterns: list[_PatternPlan] = []
        for rule in active:
            same = known_rules.get(rule.id)
            if same is not None and same.rule is rule:
                plan = same
                for _, key in plan.features:
                    if key not in features:
                        features[key] = known[key]
                        feature_types[key] = known_types[key]
            else:
                fmap = self._compile_features(rule, features, feature_types, known, known_types)
                plan = _rule_plan(rule, fmap)
            for _, key in plan.features:
                refs[key] = refs.get(key, 0) + 1
            if rule.sequence is not None:
                pattern = known_patterns.get(rule.id) if same is plan else None
                patterns.append(pattern or self._pattern(rule, plan.features))
            rules.append(plan)
        self.feature_by_key, self.feature_types, self.feature_refs = features, feature_types, refs
        self.rules = tuple(rules)
        self.rule_by_id = {r.rule.id: r for r in rules}
        self.patterns = tuple(patterns)
        self.pattern_by_rule = {p.rule_id: p for p in patterns}
        self.recheck_type_counts, self.recheck_any = {}, 0
        for r in rules:
            self._count_recheck(r, 1)
        self._finish()
        self.by_type = {}

    def _derive(self, previous: _Plan, rule_id: str) -> None:
        """The plan of the previous one's rule set with one rule added, replaced or removed (``rule_id``)."""
        rule = self.ruleset.get(rule_id)
        new = rule if rule is not None and rule.status != "disabled" else None
        old = previous.rule_by_id.get(rule_id)
        shares = dict(previous.field_shares)
        shares.pop(rule_id, None)
        if new is not None:
            shares[rule_id] = _rule_fields(new)
        self._set_fields(shares, previous, rule_id)
        same_projection = previous.stored_fields == self.stored_fields
        self._set_projection(previous if same_projection else None)
        # features: the new rule's first (compiling only what no rule compiled), then the old rule's released
        features, feature_types = dict(previous.feature_by_key), dict(previous.feature_types)
        refs = dict(previous.feature_refs)
        added = {s.state_key for s in new.features.values()} - features.keys() if new is not None else set()
        plan: _RulePlan | None = None
        if new is not None:
            fmap = self._compile_features(new, features, feature_types, features, feature_types)
            plan = _rule_plan(new, fmap)
            for _, key in fmap:
                refs[key] = refs.get(key, 0) + 1
        removed: list[str] = []
        if old is not None:
            for _, key in old.features:
                n = refs[key] - 1
                if n:
                    refs[key] = n
                else:
                    del refs[key]
                    removed.append(key)
        changed_types = [feature_types[k] for k in added] + [feature_types[k] for k in removed]
        for key in removed:
            del features[key]
            del feature_types[key]
        self.feature_by_key, self.feature_types, self.feature_refs = features, feature_types, refs
        # the rules in their order, patched
        rules = list(previous.rules)
        if old is not None:
            del rules[bisect_left(rules, rule_order(old.rule), key=_plan_order)]
        if plan is not None:
            insort(rules, plan, key=_plan_order)
        self.rules = tuple(rules)
        by_id = dict(previous.rule_by_id)
        by_id.pop(rule_id, None)
        if plan is not None:
            by_id[rule_id] = plan
        self.rule_by_id = by_id
        # the patterns: patched, or all built again on a new projection (what the sequences keep changed)
        old_pattern = previous.pattern_by_rule.get(rule_id)
        new_pattern: _PatternPlan | None = None
        if same_projection:
            patterns = list(previous.patterns)
            by_rule = dict(previous.pattern_by_rule)
            if old_pattern is not None:
                del patterns[bisect_left(patterns, old_pattern.order, key=_pattern_order)]
                del by_rule[rule_id]
            if plan is not None and plan.rule.sequence is not None:
                new_pattern = self._pattern(plan.rule, plan.features)
                insort(patterns, new_pattern, key=_pattern_order)
                by_rule[rule_id] = new_pattern
        else:
            patterns = [self._pattern(r.rule, r.features) for r in rules if r.rule.sequence is not None]
            by_rule = {p.rule_id: p for p in patterns}
        self.patterns = tuple(patterns)
        self.pattern_by_rule = by_rule
        self.recheck_type_counts, self.recheck_any = dict(previous.recheck_type_counts), previous.recheck_any
        if old is not None:
            self._count_recheck(old, -1)
        if plan is not None:
            self._count_recheck(plan, 1)
        self._finish()
        # the event types' plans the change leaves as they were are taken over
        self.by_type = {}
        if same_projection:
            for etype, tp in previous.by_type.items():
                if not (
                    _feeds(old, old_pattern, etype)
                    or _feeds(plan, new_pattern, etype)
                    or any(t is None or etype in t for t in changed_types)
                ):
                    self.by_type[etype] = tp

    def _set_fields(
        self, shares: dict[str, frozenset[str] | None], previous: _Plan | None = None, changed: str = ""
    ) -> None:
        """What is kept of an event in state: the fields the patterns' steps and the re-checked conditions
        read, plus the engine's own (docs/engine.md, "Bounded state"); None when a rule needs whole events.
        Counted per field, so that a change adjusts the counts of its rule's fields only."""
        if previous is None:
            counts: dict[str, int] = {}
            whole = 0
            for share in shares.values():
                whole += _count(counts, share, 1)
        else:
            counts, whole = dict(previous.field_counts), previous.whole_events
            if changed in previous.field_shares:
                whole += _count(counts, previous.field_shares[changed], -1)
            if changed in shares:
                whole += _count(counts, shares[changed], 1)
        self.field_shares, self.field_counts, self.whole_events = shares, counts, whole
        self.stored_fields = None if whole else ENGINE_FIELDS.union(counts)

    def _set_projection(self, same: _Plan | None) -> None:
        if same is not None:  # the same projection: its function, memo and the matchers on them stay valid
            self.memo, self.project = same.memo, same.project
            return
        #: [event, its projection]: one projection per event, shared by the patterns and the late re-check;
        #: Engine.process clears it when the event is done
        self.memo = [None, None]
        self.project = make_projector(self.stored_fields, memo=self.memo)

    def _compile_features(
        self,
        rule: Rule,
        features: dict[str, Feature],
        feature_types: dict[str, frozenset[str] | None],
        known: dict[str, Feature],
        known_types: dict[str, frozenset[str] | None],
    ) -> tuple[tuple[str, str], ...]:
        """The rule's (local name, state key) pairs; each definition not in ``features`` yet is added, taken
        from ``known`` or compiled."""
        fmap = []
        for name, spec in rule.features.items():
            key = spec.state_key
            if key not in features:
                compiled = known.get(key)
                if compiled is None:
                    features[key] = compile_feature(spec, lateness=self.lateness)
                    feature_types[key] = _filter_types(spec)
                else:
                    features[key] = compiled
                    feature_types[key] = known_types[key]
            fmap.append((name, key))
        return tuple(fmap)

    def _count_recheck(self, plan: _RulePlan, delta: int) -> None:
        if not plan.recheckable:
            return
        self.recheck_any += _count(self.recheck_type_counts, plan.rule.event_types, delta)

    def _finish(self) -> None:
        self.features = tuple(self.feature_by_key.items())
        #: what computing each feature's value reads, for the late re-check's bound (LATE_RECHECK_READS)
        self.read_cost = {
            key: f.spec.reads + getattr(f, "raw_cap", 0) for key, f in self.feature_by_key.items()
        }
        self.names = frozenset([*self.feature_by_key, *(p.key for p in self.patterns), META, SEEN])
        self.recheck = tuple(filter(_RECHECKABLE, self.rules))
        # the event types a late event may need to re-check (None: any)
        self.recheck_types = None if self.recheck_any else frozenset(self.recheck_type_counts)

    def _pattern(self, rule: Rule, fmap: tuple[tuple[str, str], ...]) -> _PatternPlan:
        assert rule.sequence is not None
        stamp = tuple((n, k) for n, k in fmap if n in rule.step_features)
        # A pattern with stamped features gets an event already projected (see process).
        project = None if stamp else self.project
        matcher = PatternMatcher(rule.sequence, lateness=self.lateness, project=project)
        return _PatternPlan(
            rule.sequence.state_key, rule.id, matcher, stamp, rule.event_types, rule_order(rule)
        )

    def for_type(self, etype: str) -> _TypePlan:
        """The dispatch plan of an event type (cached).

        A condition rule is checked when the type is in ``rule.event_types`` (applies_to and the condition's
        own
        ``event.type`` tests); a pattern is fed when the type is one its steps test for (all types when a
        step is
        strict or untyped); a feature is evaluated when its filter may record the event, or when a rule or a
        pattern above needs its value. Skipping the rest changes nothing: a feature whose filter rejects an
        event
        does not change its state.
        """
        tp = self.by_type.get(etype)
        if tp is not None:
            return tp
        patterns = tuple(p for p in self.patterns if p.types is None or etype in p.types)
        fed = {p.rule_id for p in patterns}
        rules = tuple(
            r
            for r in self.rules
            if (r.when is not None and (r.rule.event_types is None or etype in r.rule.event_types))
            or r.rule.id in fed
        )
        needed = {k for r in rules if r.when is not None for _, k in r.features}
        needed.update(k for p in patterns for _, k in p.stamp)
        for r in rules:
            if r.when is None:  # a sequence rule's evidence shows its features too
                needed.update(k for _, k in r.features)
        features = tuple(
            (k, f)
            for k, f in self.features
            if k in needed or self.feature_types[k] is None or etype in (self.feature_types[k] or ())
        )
        tp = _TypePlan(features, patterns, rules, tuple(r for r in rules if r.when is not None))
        if len(self.by_type) < MAX_CACHED_TYPES:
            self.by_type[etype] = tp
        return tp


def _accessors(state: KeyedState) -> tuple[Any, Any, Any]:
    """get, put and pop(name, default) for a state; the in-memory one is used through its dict (hot path)."""
    if type(state) is InMemoryKeyedState:
        data = state.data
        return data.get, data.__setitem__, data.pop

    def pop(name: str, default: Any = None) -> Any:
        state.remove(name)
        return default

    return state.get, state.put, pop


class Engine:
    """Decides events of one key at a time over a :class:`KeyedState` (see the module docstring)."""

    def __init__(
        self,
        rules: RuleSet | Iterable[Rule] = (),
        *,
        lateness: int = 0,
        state_ttl: int | None = DEFAULT_STATE_TTL,
        cleanup_timers: bool = True,
        dedup_window: int = 0,
        dedup_all: bool = False,
        too_late_action: str = "PASS",
    ) -> None:
        """``cleanup_timers=False`` (needs a ``state_ttl``): no clean-up timer per key; a key silent for the
        TTL is still started from zero at its next event, and freeing the state of keys that never come
        back is left to the caller's own state TTL (the Flink job's; see docs/engine.md, "State, timers and
        TTL").

        ``dedup_window`` (ms of event time, 0: off): an event with the same content as one the key decided
        within it (or within the ``lateness``, if longer) is a duplicate, decided with the first one's action
        and changing nothing (riskctl/core/dedup.py, docs/engine.md "Duplicate events"). Only the events
        sent through ``riskctl serve`` (those with a ``reply_to``) are remembered and checked, unless
        ``dedup_all``.

        ``too_late_action`` (PASS, REVIEW or REJECT): the least action of a too-late event, which no feature
        and no sequence counts (docs/engine.md, "Out-of-order events"). PASS leaves it to its condition
        rules; REVIEW holds every event its user's producer stamped that far behind, which is how a client
        that sets its own events' ``ts`` would keep its transfers out of every sum.
        """
        if too_late_action not in ACTION_RANK:
            msg = f"too_late_action must be one of {', '.join(ACTION_RANK)}, got {too_late_action!r}"
            raise ValueError(msg)
        if dedup_window < 0:
            msg = f"dedup_window must be >= 0 ms, got {dedup_window}"
            raise ValueError(msg)
        if lateness < 0:
            msg = f"lateness must be >= 0 ms, got {lateness}"
            raise ValueError(msg)
        if state_ttl is not None and state_ttl <= 0:
            msg = f"state_ttl must be > 0 ms (or None), got {state_ttl}"
            raise ValueError(msg)
        if not cleanup_timers and state_ttl is None:
            msg = "cleanup_timers=False needs a state_ttl (nothing else would free a silent key's state)"
            raise ValueError(msg)
        self.lateness = lateness
        self.too_late_rank = ACTION_RANK[too_late_action]
        self.dedup_window = dedup_window
        self.dedup_all = dedup_all
        # how long behind the newest event an event is remembered: never less than the lateness, within which
        # a forgotten event sent again would not be too late, and would count again
        self._dedup_keep = max(dedup_window, lateness)
        self.state_ttl = state_ttl
        self.cleanup_timers = cleanup_timers
        ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules)
        self._plan = _Plan(ruleset, lateness)
        #: partial matches (or buffered events) dropped by the pattern bounds, over all keys
        self.pattern_overflow = 0
        #: the rule whose pattern or condition process() is evaluating: after process() raised, the rule
        #: that failed (None when it failed elsewhere); read by the guards of the job and of replay
        self.current_rule: str | None = None
        #: events decided too late to be recorded (docs/engine.md, "Out-of-order events"), over all keys
        self.too_late = 0
        #: events decided as duplicates of an event decided before (dedup_window), over all keys
        self.duplicates = 0
        #: re-checks of a rule at a later event that a late event's re-check skipped for its read bound
        #: (LATE_RECHECK_READS)
        self.rechecks_skipped = 0

    # ------------------------------------------------------------------------------------------ rules
    @property
    def ruleset(self) -> RuleSet:
        """The rule set in force."""
        return self._plan.ruleset

    @property
    def state_names(self) -> frozenset[str]:
        """Every state name the rule set in force may read or write in a key's state, the engine's own
        included: a name outside it is released at the key's next event (see :meth:`update_rules`)."""
        return self._plan.names

    def update_rules(self, rules: RuleSet | Iterable[Rule]) -> RuleSet:
        """Replace the whole rule set (validated rules). Returns the new set.

        State of features and sequences whose definition is unchanged is kept (same ``state_key``); state that
        no rule uses any more is released lazily, per key, on that key's next event or timer.
        """
        ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules)
        self._plan = self._build(ruleset, ruleset.rules[0].id if len(ruleset) == 1 else None, None)
        return ruleset

    def upsert_rule(self, rule: Rule | Mapping[str, Any]) -> Rule:
        """Add a rule or replace the rule of the same id; a document is validated first.

        A bad document raises :class:`RuleSetError` (with every problem) and the rules in force are unchanged.
        """
        parsed = rule if isinstance(rule, Rule) else parse_rule(rule, source="update")
        self._plan = self._build(self._plan.ruleset.with_rule(parsed), parsed.id, parsed.id)
        return parsed

    def delete_rule(self, rule_id: str) -> bool:
        """Remove a rule; True if it existed. Its state is released lazily per key."""
        if rule_id not in self._plan.ruleset:
            return False
        self._plan = self._build(self._plan.ruleset.without(rule_id), rule_id, rule_id)
        return True

    def _build(self, ruleset: RuleSet, rule_id: str | None, changed: str | None) -> _Plan:
        """The plan of ``ruleset``; ``changed``: the id of the one rule it changes from the plan in force."""
        try:
            return _Plan(ruleset, self.lateness, self._plan, changed)
        except RuleSetError:
            raise
        except (ValueError, TypeError) as exc:  # a runtime refusing a spec: report it, keep the old plan
            raise RuleSetError([RuleError(str(exc), rule_id=rule_id)]) from exc

    # ------------------------------------------------------------------------------------------ events
    def process(self, state: KeyedState, event: Mapping[str, Any], clock: int | None = None) -> Result:
        """Decide one (validated) event of the key whose state is ``state``.

        ``clock``: the time the event arrived at (ms since the epoch; the engine reads no clock of its own),
        or None. An event stamped ahead of it is taken at ``clock`` (it cannot have happened after it
        arrived): its features, sequences, timers and the key's newest time use that, its decision keeps
        its own ``ts`` and says by how much it was ahead (``ahead_ms``). So no event stamped ahead of the
        clock makes its user's next events too late (docs/engine.md, "Out-of-order events").
        """
        plan = self._plan
        self.current_rule = None
        plan.memo[0] = None  # (also cleared at the end; here too in case a previous call raised)
        # An in-memory state (replay, tests, benchmarks) is read and written through its dict, which the
        # compiled core calls directly; any other (the Flink job's) through its KeyedState methods.
        data = state.data if type(state) is InMemoryKeyedState else None
        stated: int = event["ts"]
        ts = stated if clock is None or stated <= clock else clock
        user_id = event["user_id"]
        event_id = event["event_id"]
        stored_meta = data.get(META) if data is not None else state.get(META)
        timers: list[int] = []
        cancelled: list[int] = []
        meta: list[Any]  # (typed: the compiled core indexes it natively)
        if stored_meta is None:
            meta = [ts, ts, plan.version, None, [], [], user_id, _NO_TIMER]
        else:
            meta = stored_meta
            if meta[_RS] != plan.version:
                self._release_stale(state, plan, meta)
            ttl = self.state_ttl
            last_seen: int = meta[_LAST_TS]
            newest: int = meta[_MAX_TS]
            if ttl is not None and ts >= last_seen + ttl and ts >= newest:
                # Silent for longer than the TTL (its timer may not have fired yet): start from zero.
                self._clear(state)
                meta = [ts, ts, plan.version, None, [], [], user_id, _NO_TIMER]
        # (typed locals: the compiled core compares them natively; compared with ``meta[...]`` itself, an
        # ``Any``, ``ts`` would become a new int object at each comparison)
        max_ts: int = meta[_MAX_TS]
        late = ts < max_ts
        # Too late (docs/engine.md, "Out-of-order events"): more than `lateness` behind the key's newest
        # event, or behind a timer the key has already seen. Decided, but recorded nowhere.
        too_late = late and (ts < max_ts - self.lateness or (len(meta) > _TIMER and ts < meta[_TIMER]))
        etype = field_of(event, "type")
        seen_key: bytes | None = None
        if self.dedup_window and (self.dedup_all or REPLY_FIELD in event):
            seen = state.get(SEEN)
            seen_key = dedup.digest(event)
            seen_as = -1 if seen is None else dedup.seen_rank(seen, seen_key)
            if seen_as >= 0:  # delivered again: the first one's action, and nothing recorded
                self.duplicates += 1
                action = _RANK_ACTION[seen_as]
                kind = etype if isinstance(etype, str) else str(etype)
                again = Decision(
                    event_id,
                    user_id,
                    kind,
                    stated,
                    action,
                    [],
                    [],
                    plan.version,
                    late,
                    too_late,
                    True,
                    stated - ts,
                )
                return Result(again, [], [], [])
        tp = plan.by_type.get(etype) or plan.for_type(etype if isinstance(etype, str) else "")  # type: ignore[arg-type]

        # Features: each definition once, shared by every rule using it.
        # An unchanged value is not written back (in Flink, every put pickles and writes to RocksDB).
        values: dict[str, Any] = {}
        if too_late:
            self.too_late += 1
            for key, feature in tp.features:
                values[key] = feature.peek(state.get(key), event, ts)
        for key, feature in () if too_late else tp.features:
            stored = data.get(key) if data is not None else state.get(key)
            value, new, changed = feature.update(stored, event, ts)
            if new is None:
                if stored is not None:
                    if data is not None:
                        del data[key]
                    else:
                        state.remove(key)
            elif changed or new is not stored:
                if data is not None:
                    data[key] = new
                else:
                    state.put(key, new)
            values[key] = value

        # Patterns (each keeps only the projection of the events it stores); never fed a too-late event.
        # One whose steps read features gets a copy of the projection with the values stamped on it.
        matches: dict[str, tuple[Any, ...]] = {}
        for pp in () if too_late else tp.patterns:
            self.current_rule = pp.rule_id
            ev = event
            if pp.stamp:
                ev = dict(plan.project(event))
                stamped = {}
                for name, key in pp.stamp:
                    stamped[name] = values[key]
                ev[FEATURES_FIELD] = stamped
            pkey = pp.key
            stored = data.get(pkey) if data is not None else state.get(pkey)
            new, hits, wakeup, overflow, _ = pp.matcher.feed(stored, ev, ts, etype)
            if new is None:
                if stored is not None:
                    if data is not None:
                        del data[pkey]
                    else:
                        state.remove(pkey)
            elif data is not None:
                data[pkey] = new
            else:
                state.put(pkey, new)
            if hits:
                matches[pp.rule_id] = hits
            if wakeup is not None:
                self._want_wakeup(meta, wakeup, pp.key, timers, cancelled)
            elif meta[_WAKEUPS]:
                self._drop_wakeup(meta, pp.key, cancelled)
            if overflow:
                self.pattern_overflow += overflow

        # Rules, by priority.
        fired: list[FiredRule] = []
        shadow: list[FiredRule] = []
        alerts: list[Alert] = []
        rank = 0
        # A sequence rule can only fire with a match of its pattern: without any, its turn is skipped.
        for rp in tp.rules if matches else tp.when_rules:
            self.current_rule = rp.rule.id
            if rp.when is not None:
                feats = {}  # a plain loop: a comprehension is one more call per rule and event (3.11)
                for name, key in rp.features:
                    feats[name] = values[key]
                if not rp.when(event, feats):
                    continue
                hit = FiredRule(
                    rp.rule.id, rp.rule.version, rp.rule.action, when_evidence(event, feats, rp.fields)
                )
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
                        alert_id=alert_id(rp.rule.id, rp.rule.version, "rule_alert", [event_id]),
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

        self.current_rule = None
        if too_late and self.too_late_rank > rank:  # (job.too_late_action)
            rank = self.too_late_rank
        # Late events: re-check condition rules on later events already decided (see docs/engine.md).
        if self.lateness and plan.recheck and not too_late:
            if late:
                alerts.extend(self._recheck(state.get, plan, meta, event, ts))
            if plan.recheck_types is None or etype in plan.recheck_types:
                self._remember(meta, plan.project(event), ts, fired, shadow)

        last_ts: int = meta[_LAST_TS]
        if ts > max_ts or ts > last_ts:
            ts_obj: object = ts  # one object for both places
            if ts > max_ts:
                meta[_MAX_TS] = ts_obj
            if ts > last_ts:
                meta[_LAST_TS] = ts_obj
        # (too late: changes no state, decided again if sent again), before the clean-up timer reads it
        if seen_key is not None and not too_late:
            state.put(SEEN, dedup.remember(seen, seen_key, ts, rank, meta[_MAX_TS] - self._dedup_keep))
        if meta[_CLEANUP] is None and self.cleanup_timers:
            self._schedule_cleanup(state.get, plan, meta, timers)
        if data is not None:
            data[META] = meta
        else:
            state.put(META, meta)
        plan.memo[0] = None  # the caller may reuse this dict for its next event
        decision = Decision(  # positional (event_id, user_id, type, ts, action, rules, shadow, version, ...)
            event_id,
            user_id,
            etype if isinstance(etype, str) else str(etype),
            stated,
            _RANK_ACTION[rank],
            fired,
            shadow,
            plan.version,
            late,
            too_late,
            False,
            stated - ts,
        )
        return Result(decision, alerts, timers, cancelled)

    # ------------------------------------------------------------------------------------------ timers
    def on_timer(self, state: KeyedState, ts: int) -> Result:
        """Event time reached ``ts`` for this key: absences due, cleanup, state TTL. Returns alerts and
        timers.

        The caller calls it for every timer the engine asked for (``Result.timers``), once the watermark is
        at or
        past it; a call at another time is harmless (nothing due: nothing happens).
        """
        plan = self._plan
        get, put, pop = _accessors(state)
        meta = get(META)
        if meta is None:
            return Result(None, [], [], [])
        if meta[_RS] != plan.version:
            self._release_stale(state, plan, meta)
        alerts: list[Alert] = []
        timers: list[int] = []
        cancelled: list[int] = []
        ttl = self.state_ttl
        if ttl is not None and ts >= meta[_LAST_TS] + ttl:
            self._clear(state)
            return Result(None, [], [], [])
        # Event time reached ts for this key: an event older than ts is too late from now on (as the
        # patterns' own watermark says), for the features as well.
        if len(meta) <= _TIMER:
            meta.append(ts)
        elif ts > meta[_TIMER]:
            meta[_TIMER] = ts
        cleanup = meta[_CLEANUP] is not None and ts >= meta[_CLEANUP]
        due = {key for at, key in meta[_WAKEUPS] if at <= ts}
        meta[_WAKEUPS] = [w for w in meta[_WAKEUPS] if w[0] > ts]
        for pp in plan.patterns:
            if not cleanup and pp.key not in due:
                continue
            stored = get(pp.key)
            if stored is None:
                continue
            new, hits, wakeup, _, _ = pp.matcher.feed_timer(stored, ts)
            if new is None:
                pop(pp.key, None)
            else:
                put(pp.key, new)
            rp = plan.rule_by_id[pp.rule_id]
            for m in hits:
                alerts.append(self._match_alert(rp, {}, m, m.completed_by, ts, meta[_USER], None, plan))
            if wakeup is not None:
                self._want_wakeup(meta, wakeup, pp.key, timers, cancelled)
            elif meta[_WAKEUPS]:
                self._drop_wakeup(meta, pp.key, cancelled)
        if cleanup:
            meta[_CLEANUP] = None
            for key, feature in plan.features:
                stored = get(key)
                if stored is None:
                    continue
                new = feature.expire(stored, ts)
                if new is None:
                    pop(key, None)
                else:
                    put(key, new)
            if meta[_RECENT]:
                horizon = meta[_MAX_TS] - self.lateness
                meta[_RECENT] = [r for r in meta[_RECENT] if r[0] >= horizon]
            seen = get(SEEN)
            if seen is not None:  # a user silent for the window: what event time left behind is forgotten
                kept = dedup.forget_before(seen, ts - self._dedup_keep)
                if kept is None:
                    pop(SEEN, None)
                elif len(kept) != len(seen):
                    put(SEEN, kept)
            if not meta[_WAKEUPS] and all(name == META for name in state.names()):
                self._clear(state)  # nothing left: the key costs nothing until its next event
                return Result(None, alerts, timers, cancelled)
            if self.cleanup_timers:  # (without: a timer armed before, e.g. restored from a checkpoint)
                self._schedule_cleanup(get, plan, meta, timers)
        put(META, meta)
        return Result(None, alerts, timers, cancelled)

    # ------------------------------------------------------------------------------------------ helpers
    def _want_wakeup(
        self, meta: list[Any], ts: int, key: str, timers: list[int], cancelled: list[int]
    ) -> None:
        """Remember a pattern's wake-up: one entry per pattern, its earliest pending deadline (bounded state).

        A pattern always reports its earliest pending deadline, so an older entry of the same pattern is
        stale: its timer is cancelled (unless another entry or the clean-up wants the same time), and a later
        deadline of the pattern is reported again once this one has passed.
        """
        wakeups = meta[_WAKEUPS]
        for at, k in wakeups:
            if k == key and at == ts:
                return
        self._drop_wakeup(meta, key, cancelled)
        wakeups.append([ts, key])
        timers.append(ts)

    def _drop_wakeup(self, meta: list[Any], key: str, cancelled: list[int]) -> None:
        """The pattern ``key`` has no deadline pending any more (e.g. the absent event came): forget its
        wake-up and cancel its timer, which would otherwise fire for nothing (in Flink, a call into Python
        and a state read and write; and every pending timer is written by each checkpoint).
        """
        wakeups = meta[_WAKEUPS]
        for i, (at, k) in enumerate(wakeups):
            if k == key:
                del wakeups[i]
                self._cancel(meta, at, cancelled)
                return

    @staticmethod
    def _cancel(meta: list[Any], at: int, cancelled: list[int]) -> None:
        # Timers are per key and time: keep the one another pattern or the clean-up still waits for.
        if at == meta[_CLEANUP]:
            return
        for w in meta[_WAKEUPS]:
            if w[0] == at:
                return
        cancelled.append(at)

    def _schedule_cleanup(self, get: Any, plan: _Plan, meta: list[Any], timers: list[int]) -> None:
        """Arm the key's one cleanup timer.

        With a state TTL: at last ts + TTL (like Flink's state TTL). While a key is active its features and
        patterns prune themselves on each event, so the timer only has to release idle keys; firing on a
        key that was active since, it expires what is due and re-arms at the new last ts + TTL: about one
        timer per key and TTL period, never one per event. Without a TTL: when every feature and partial
        match of the key can be freed (the latest of their own horizons).
        """
        if self.state_ttl is not None:
            at = meta[_LAST_TS] + self.state_ttl
        else:
            candidates: list[int] = []
            for key, feature in plan.features:
                stored = get(key)
                if stored is not None:
                    nxt = feature.next_cleanup(stored)
                    if nxt is not None:
                        candidates.append(nxt)
            for pp in plan.patterns:
                if get(pp.key) is not None:  # partial matches and buffers expire within the pattern's span
                    candidates.append(meta[_MAX_TS] + pp.matcher.spec.within + self.lateness)
            if get(SEEN) is not None:  # the events remembered as decided (dedup), once the window has passed
                candidates.append(meta[_MAX_TS] + self._dedup_keep + 1)
            if not candidates:
                return
            at = max(candidates)
        at = max(at, meta[_MAX_TS] - self.lateness + 1)
        meta[_CLEANUP] = at
        timers.append(at)

    def _clear(self, state: KeyedState) -> None:
        for name in list(state.names()):
            state.remove(name)

    def _release_stale(self, state: KeyedState, plan: _Plan, meta: list[Any]) -> None:
        """Drop state that no rule of the current set uses (a deleted or disabled rule, a changed feature)."""
        for name in list(state.names()):
            if name not in plan.names:
                state.remove(name)
        meta[_WAKEUPS] = [w for w in meta[_WAKEUPS] if w[1] in plan.names]
        meta[_RS] = plan.version

    def _sequence_hit(self, rp: _RulePlan, values: Mapping[str, Any], match: Any) -> FiredRule:
        # The features a sequence reads are shown per matched event, as they were when it was matched
        # (``match.events``): their values now, at the completing event, may say nothing about the step.
        evidence: dict[str, Any] = {"match": match_evidence(match, rp.steps)}
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
        steps = hit.evidence["match"]["steps"]
        flat = [str(i) for ids in steps.values() for i in ids]
        return Alert(
            alert_id=alert_id(rp.rule.id, rp.rule.version, reason, flat),
            user_id=user_id,
            rule=hit,
            reason=reason,
            ts=ts,
            ruleset_version=plan.version,
            event_id=flat[0] if flat else None,
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
        """Keep the events of the last ``lateness`` ms (at most RECENT_CAP) for the late re-check."""
        recent = meta[_RECENT]
        horizon = max(meta[_MAX_TS], ts) - self.lateness
        if recent and recent[0][0] < horizon:
            i = 1
            while i < len(recent) and recent[i][0] < horizon:
                i += 1
            del recent[:i]
        if ts >= horizon:
            ids = [h.id for h in fired] if fired else []
            if shadow:
                ids += [h.id for h in shadow]
            entry = [ts, event, ids]
            if not recent or recent[-1][0] <= ts:
                recent.append(entry)
            else:
                insort(recent, entry, key=lambda r: r[0])
            if len(recent) > RECENT_CAP:
                del recent[0]

    def _recheck(
        self, get: Any, plan: _Plan, meta: list[Any], event: Mapping[str, Any], ts: int
    ) -> list[Alert]:
        """A late event may make a condition rule true for a later, already decided event: raise an alert."""
        alerts: list[Alert] = []
        budget = LATE_RECHECK_READS
        cost = plan.read_cost
        recent = meta[_RECENT]
        for entry in recent:
            r_ts, r_event, r_fired = entry
            if r_ts <= ts:
                continue
            r_type = r_event.get("type")
            # each feature's value at r_ts once, whatever the number of rules reading it: a distinct_count
            # at the read bound (MAX_FEATURE_READS) costs ~4.5 ms, and every rule sharing it paid it again
            at: dict[str, Any] = {}
            for rp in plan.recheck:
                types = rp.rule.event_types
                if rp.rule.id in r_fired or (types is not None and r_type not in types):
                    continue
                need = 0
                for _, key in rp.features:
                    if key not in at:
                        need += cost[key]
                if need > budget:
                    # Out of reads for this rule here: skipped and counted, while the rules whose features
                    # are computed already (or read nothing) are still re-checked, here and at later events.
                    self.rechecks_skipped += 1
                    continue
                budget -= need
                feats: dict[str, Any] = {}
                for name, key in rp.features:
                    if key in at:
                        feats[name] = at[key]
                    else:
                        value = plan.feature_by_key[key].value_at(get(key), r_ts)  # type: ignore[attr-defined]
                        feats[name] = at[key] = value
                assert rp.when is not None
                if not rp.when(r_event, feats):
                    continue
                r_fired.append(rp.rule.id)
                hit = FiredRule(
                    rp.rule.id, rp.rule.version, rp.rule.action, when_evidence(r_event, feats, rp.fields)
                )
                alerts.append(
                    Alert(
                        alert_id=alert_id(
                            rp.rule.id, rp.rule.version, "late_threshold", [r_event["event_id"]]
                        ),
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
