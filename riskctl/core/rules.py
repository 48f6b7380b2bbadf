"""Rule documents: parse, validate and compile them (once) into immutable :class:`Rule` objects and a
:class:`RuleSet`.

A rule document is a mapping, written in YAML in ``rules/`` (one or more rules per file, as several YAML
documents or a list) and stored as the same document in JSON in MySQL::

    id: transfer_velocity            # [A-Za-z0-9_.-], unique in the rule set
    version: 3                       # int >= 1; optional in files (1)
    description: 5-minute transfer sum above 50,000
    status: active                   # active | shadow | disabled (default active)
    action: REVIEW                   # PASS | REVIEW | REJECT
    priority: 50                     # int, higher first in the decision's list (default 0)
    alert: false                     # also send an alert record when it fires (default false)
    applies_to: [transfer]           # event types the rule decides on (default: all)
    features:                        # named features, visible to `when` and to sequence steps
      sum_5m: {kind: sum, field: amount, window: 5m, filter: 'event.type == "transfer"'}
    when: sum_5m > 50000             # a condition ...
    # sequence: {...}                # ... or a sequence pattern (see docs/engine.md)

Every problem is reported as a :class:`~riskctl.core.errors.RuleError` with the rule id, the field path
(``sequence.steps[2].when``), the reason and a "did you mean" where a name is close to a known one; loading a
folder collects the errors of every rule of every file into one :class:`~riskctl.core.errors.RuleSetError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from riskctl.core.errors import ExpressionError, RuleError, RuleSetError, suggest
from riskctl.core.expr import (
    CompiledExpression,
    compile_condition,
    compile_filter,
    compile_step_condition,
    duration_ms,
    expression_cost,
)
from riskctl.core.features import FeatureSpec
from riskctl.core.jsondoc import load_json_document
from riskctl.core.patterns import AFTER_MATCH_POLICIES, MAX_TIMES, PatternSpec, Step

ACTIONS = ("PASS", "REVIEW", "REJECT")
STATUSES = ("active", "shadow", "disabled")
ACTION_RANK = {"PASS": 0, "REVIEW": 1, "REJECT": 2}
RULE_KEYS = (
    "id",
    "version",
    "description",
    "status",
    "action",
    "priority",
    "alert",
    "applies_to",
    "features",
    "when",
    "sequence",
    "tags",
)
FEATURE_KEYS = (
    "kind",
    "field",
    "window",
    "horizon",
    "filter",
    "n",
    "stat",
    "min_events",
    "granularity",
    "max_values",
    "description",
)
SEQUENCE_KEYS = ("within", "steps", "after_match", "max_partial", "description")
STEP_KEYS = (
    "name",
    "when",
    "times",
    "at_least",
    "quantifier",
    "contiguity",
    "max_gap",
    "min_gap",
    "absent",
    "description",
)
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_RESERVED_NAMES = frozenset({"event", "and", "or", "not", "in", "true", "false", "null"})
MAX_FEATURES_PER_RULE = 32
#: condition evaluations a sequence rule may need for one event (see _sequence_cost); ~0.1 s of Python
MAX_SEQUENCE_COST = 1_000_000
#: versions are a MySQL INT
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True, eq=False)
class Rule:
    """One compiled rule. Immutable: per-key runtime state lives in the engine's :class:`KeyedState`."""

    id: str
    version: int
    description: str
    status: str
    action: str
    priority: int
    alert: bool
    applies_to: frozenset[str] | None
    #: rule-local feature name -> spec; two rules with equal specs share state through ``spec.state_key``
    features: Mapping[str, FeatureSpec]
    when: CompiledExpression | None
    #: the pattern when the rule is a sequence (its id is the rule id)
    sequence: PatternSpec | None
    #: names of the features that the sequence's step conditions read (the engine stamps them on events)
    step_features: frozenset[str]
    #: the rule can only fire on (a condition rule) or only needs to see (a sequence without strict
    #: contiguity) events of these types; None: any type. Derived from applies_to and the conditions.
    event_types: frozenset[str] | None
    #: the normalised document (JSON-ready), from which the rule can be rebuilt
    document: Mapping[str, Any] = field(repr=False)
    source: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """A hash of the normalised document: equal documents, equal digests."""
        return document_digest(self.document)

    @property
    def is_sequence(self) -> bool:
        """True for a sequence rule, False for a condition rule."""
        return self.sequence is not None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle the document and recompile it: compiled closures are not picklable, text is small and safe.
        return (_rule_from_document, (dict(self.document), self.source))


def _rule_from_document(document: dict[str, Any], source: str | None) -> Rule:
    return parse_rule(document, source=source)


def document_digest(document: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of the canonical JSON of a rule document."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class RuleSet:
    """An immutable, ordered set of rules with a version string derived from their contents.

    Rules are ordered by priority (highest first) then id. ``version`` changes whenever any rule's document
    changes, so a decision can name exactly the rule set that made it.
    """

    __slots__ = ("_rules", "_by_id", "version")

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        by_id: dict[str, Rule] = {}
        dupes: list[RuleError] = []
        for rule in rules:
            if rule.id in by_id:
                other = by_id[rule.id].source or "another document"
                msg = f"duplicate rule id (also defined in {other})"
                dupes.append(RuleError(msg, rule_id=rule.id, field="id", source=rule.source))
            by_id[rule.id] = rule
        if dupes:
            raise RuleSetError(dupes)
        self._rules = tuple(sorted(by_id.values(), key=lambda r: (-r.priority, r.id)))
        self._by_id: Mapping[str, Rule] = MappingProxyType(by_id)
        digest = hashlib.sha256()
        for rule in sorted(self._rules, key=lambda r: r.id):
            digest.update(f"{rule.id}\0{rule.version}\0{rule.digest}\n".encode())
        self.version = digest.hexdigest()[:12]

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, disabled ones included, by priority then id."""
        return self._rules

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, or None."""
        return self._by_id.get(rule_id)

    def with_rule(self, rule: Rule) -> RuleSet:
        """A new rule set where ``rule`` is added or replaces the rule of the same id."""
        return RuleSet([*(r for r in self._rules if r.id != rule.id), rule])

    def without(self, rule_id: str) -> RuleSet:
        """A new rule set without the rule ``rule_id`` (unchanged if absent)."""
        return RuleSet(r for r in self._rules if r.id != rule_id)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._by_id

    def __repr__(self) -> str:
        return f"RuleSet(version={self.version!r}, rules={[r.id for r in self._rules]!r})"


# --------------------------------------------------------------------------------------------- parsing


class _Collector:
    """Collects the errors of one rule document, each located by its field path."""

    def __init__(self, rule_id: str | None, source: str | None) -> None:
        self.rule_id = rule_id
        self.source = source
        self.errors: list[RuleError] = []

    def add(self, reason: str, path: str, suggestion: str | None = None) -> None:
        self.errors.append(
            RuleError(reason, rule_id=self.rule_id, field=path, suggestion=suggestion, source=self.source)
        )

    def wrap(self, err: RuleError, path: str) -> None:
        self.errors.append(err.located(rule_id=self.rule_id, field_prefix=path, source=self.source))


def _check_keys(doc: Mapping[str, Any], allowed: Sequence[str], path: str, errs: _Collector) -> None:
    for key in doc:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            errs.add(f"unknown field {key!r}", where, suggest(str(key), allowed))


def parse_rule(document: Any, *, source: str | None = None) -> Rule:
    """Validate and compile one rule document; raises :class:`RuleSetError` holding *every* problem found."""
    if not isinstance(document, Mapping):
        msg = f"a rule must be a mapping (id, action, when/sequence, ...), got {type(document).__name__}"
        raise RuleSetError([RuleError(msg, source=source)])
    raw_id = document.get("id")
    rule_id = raw_id if isinstance(raw_id, str) and raw_id and len(raw_id) <= 64 else None
    _check_structure(document, rule_id, source)
    errs = _Collector(rule_id, source)
    _check_keys(document, RULE_KEYS, "", errs)

    if raw_id is None:
        errs.add("a rule needs an id", "id")
    elif not isinstance(raw_id, str) or not _ID_RE.fullmatch(raw_id):
        shown = repr(raw_id) if len(repr(raw_id)) <= 80 else repr(raw_id)[:70] + "..."
        errs.add(f"id must be 1-64 characters of letters, digits, '_', '.', '-', got {shown}", "id")

    version = document.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        shown = repr(version) if not isinstance(version, int) or abs(version) < 10**30 else "a huge number"
        errs.add(f"version must be an integer >= 1 and <= {MAX_VERSION}, got {shown}", "version")
        version = 1

    description = document.get("description", "")
    if not isinstance(description, str):
        errs.add("description must be text", "description")
        description = str(description)

    status = document.get("status", "active")
    if status not in STATUSES:
        errs.add(
            f"status must be one of {', '.join(STATUSES)}, got {status!r}", "status", _hint(status, STATUSES)
        )
        status = "disabled"

    action = document.get("action")
    if action is None:
        errs.add(f"a rule needs an action: one of {', '.join(ACTIONS)}", "action")
    elif action not in ACTIONS:
        hint = _hint(action, ACTIONS)
        errs.add(f"action must be one of {', '.join(ACTIONS)}, got {action!r}", "action", hint)

    priority = document.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 1_000_000:
        errs.add(f"priority must be an integer, got {priority!r}", "priority")
        priority = 0

    alert = document.get("alert", False)
    if not isinstance(alert, bool):
        errs.add(f"alert must be true or false, got {alert!r}", "alert")
        alert = False

    applies_to = _parse_applies_to(document.get("applies_to"), errs)
    tags = document.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        errs.add("tags must be a list of strings", "tags")
        tags = []

    features = _parse_features(document.get("features"), errs)

    when_text = document.get("when")
    sequence_doc = document.get("sequence")
    when: CompiledExpression | None = None
    sequence: PatternSpec | None = None
    step_features: frozenset[str] = frozenset()
    event_types: frozenset[str] | None = None
    if when_text is None and sequence_doc is None:
        errs.add("a rule needs either 'when' (a condition) or 'sequence' (a pattern)", "when")
    elif when_text is not None and sequence_doc is not None:
        errs.add("a rule has either 'when' or 'sequence', not both (put conditions in the steps)", "sequence")
    elif when_text is not None:
        if isinstance(when_text, bool):
            when_text = "true" if when_text else "false"
        if not isinstance(when_text, str):
            errs.add(f"when must be a condition text, got {type(when_text).__name__}", "when")
        else:
            try:
                when = compile_condition(when_text, features=features)
            except ExpressionError as exc:
                errs.wrap(exc, "when")
            else:
                unused = sorted(set(features) - when.features)
                if unused:
                    errs.add(f"feature(s) defined but never used: {', '.join(unused)}", "features")
                event_types = when.event_types
                if applies_to is not None:
                    event_types = applies_to if event_types is None else event_types & applies_to
    else:
        sequence, step_features, event_types = _parse_sequence(
            sequence_doc, rule_id or "rule", features, errs
        )
        unused = sorted(set(features) - step_features)
        if unused and sequence is not None:
            errs.add(f"feature(s) defined but never used: {', '.join(unused)}", "features")

    if errs.errors:
        raise RuleSetError(errs.errors)
    assert rule_id is not None and isinstance(action, str)
    normalised = _normalise(document, version)
    return Rule(
        id=rule_id,
        version=version,
        description=description,
        status=status,
        action=action,
        priority=priority,
        alert=alert,
        applies_to=applies_to,
        features=MappingProxyType(dict(features)),
        when=when,
        sequence=sequence,
        step_features=step_features,
        event_types=event_types,
        document=MappingProxyType(normalised),
        source=source,
        tags=tuple(tags),
    )


def _check_structure(document: Mapping[str, Any], rule_id: str | None, source: str | None) -> None:
    """Refuse a document (built in Python, not read by the bounded loaders) that nests deeper than
    :data:`MAX_YAML_DEPTH`, contains itself (a cycle nests without end), or holds more than
    :data:`MAX_YAML_NODES` values (shared sub-structures count each time they are reached). Iterative.
    """
    todo: list[tuple[Any, int]] = [(document, 1)]
    seen = 0
    while todo:
        value, depth = todo.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            msg = f"the rule document has too many values (more than {MAX_YAML_NODES})"
            raise RuleSetError([RuleError(msg, rule_id=rule_id, source=source)])
        if isinstance(value, Mapping | list | tuple):
            if depth > MAX_YAML_DEPTH:
                msg = f"the rule document is nested deeper than {MAX_YAML_DEPTH} levels (or contains itself)"
                raise RuleSetError([RuleError(msg, rule_id=rule_id, source=source)])
            items = value.values() if isinstance(value, Mapping) else value
            todo.extend((item, depth + 1) for item in items)
            if isinstance(value, Mapping) and not all(isinstance(k, str) for k in value):
                msg = "keys must be text"
                raise RuleSetError([RuleError(msg, rule_id=rule_id, source=source)])


def _hint(value: Any, choices: Sequence[str]) -> str | None:
    return suggest(str(value), choices) if isinstance(value, str) else None


def _normalise(document: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The document with defaults made explicit, JSON-ready (what MySQL stores, what the digest hashes)."""
    doc = json.loads(json.dumps(dict(document), default=str))
    doc["version"] = version
    doc.setdefault("status", "active")
    doc.setdefault("priority", 0)
    return doc


def _parse_applies_to(value: Any, errs: _Collector) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        errs.add("applies_to must be an event type or a non-empty list of event types", "applies_to")
        return None
    return frozenset(value)


def _parse_features(value: Any, errs: _Collector) -> dict[str, FeatureSpec]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errs.add("features must be a mapping of name -> definition", "features")
        return {}
    if len(value) > MAX_FEATURES_PER_RULE:
        errs.add(f"too many features ({len(value)}, limit {MAX_FEATURES_PER_RULE})", "features")
        return {}
    specs: dict[str, FeatureSpec] = {}
    for name, definition in value.items():
        path = f"features.{name}"
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in _RESERVED_NAMES:
            errs.add(
                "a feature name must start with a letter, hold letters, digits and '_', and not be a keyword",
                path,
            )
            continue
        spec = parse_feature(definition, path, errs)
        if spec is not None:
            specs[name] = spec
    return specs


def parse_feature(definition: Any, path: str, errs: _Collector) -> FeatureSpec | None:
    """Turn one feature definition of a rule document into a :class:`FeatureSpec` (errors go to ``errs``)."""
    if not isinstance(definition, Mapping):
        errs.add("a feature definition must be a mapping (kind, field, window, filter, ...)", path)
        return None
    before = len(errs.errors)
    _check_keys(definition, FEATURE_KEYS, path, errs)
    kwargs: dict[str, Any] = {}
    for key in ("kind", "field", "n", "stat", "min_events", "max_values"):
        if key in definition:
            kwargs[key] = definition[key]
    if "window" in definition and "horizon" in definition:
        errs.add("give either window or horizon (they are the same setting)", f"{path}.horizon")
    for key in ("window", "horizon", "granularity"):
        if key in definition:
            try:
                kwargs["granularity" if key == "granularity" else "window"] = duration_ms(definition[key])
            except ExpressionError as exc:
                errs.add(exc.reason, f"{path}.{key}")
    if "filter" in definition:
        text = definition["filter"]
        if not isinstance(text, str):
            errs.add("filter must be a condition text over the event", f"{path}.filter")
        else:
            try:
                kwargs["filter"] = compile_filter(text)
                kwargs["filter_text"] = text
            except ExpressionError as exc:
                errs.wrap(exc, f"{path}.filter")
    if len(errs.errors) > before:
        return None
    try:
        return FeatureSpec(**kwargs)
    except RuleError as exc:
        errs.wrap(exc, path)
    except (TypeError, ValueError) as exc:
        errs.add(str(exc), path)
    return None


def _parse_sequence(
    doc: Any, rule_id: str, features: Mapping[str, FeatureSpec], errs: _Collector
) -> tuple[PatternSpec | None, frozenset[str], frozenset[str] | None]:
    """Turn the ``sequence`` part of a rule document into a :class:`PatternSpec` (errors go to ``errs``)."""
    if not isinstance(doc, Mapping):
        errs.add("sequence must be a mapping with 'steps' and 'within'", "sequence")
        return None, frozenset(), None
    before = len(errs.errors)
    _check_keys(doc, SEQUENCE_KEYS, "sequence", errs)
    within: int | None = None
    if "within" not in doc:
        errs.add(
            "a sequence needs 'within', the longest time from its first to its last event", "sequence.within"
        )
    else:
        within = _duration(doc["within"], "sequence.within", errs)
    after_match = doc.get("after_match", "skip_past_last_event")
    if after_match not in AFTER_MATCH_POLICIES:
        hint = _hint(after_match, AFTER_MATCH_POLICIES)
        errs.add(
            f"after_match must be one of {', '.join(AFTER_MATCH_POLICIES)}", "sequence.after_match", hint
        )
    max_partial = doc.get("max_partial", 64)
    if isinstance(max_partial, bool) or not isinstance(max_partial, int) or not 1 <= max_partial <= 10_000:
        errs.add(
            f"max_partial must be an integer from 1 to 10000, got {max_partial!r}", "sequence.max_partial"
        )
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        errs.add("a sequence needs a non-empty list of steps", "sequence.steps")
        return None, frozenset(), None
    names: list[str] = []
    for i, step in enumerate(raw_steps):
        name = step.get("name") if isinstance(step, Mapping) else None
        if isinstance(name, str) and _NAME_RE.fullmatch(name) and name not in _RESERVED_NAMES:
            if name in features:
                errs.add(f"step name {name!r} is also a feature name", f"sequence.steps[{i}].name")
            elif name in names:
                errs.add(f"two steps are named {name!r}", f"sequence.steps[{i}].name")
            names.append(name)
        else:
            errs.add(
                "each step needs a name (letters, digits, '_'; not a keyword), e.g. name: fails",
                f"sequence.steps[{i}].name",
            )
    steps: list[Step] = []
    used: set[str] = set()
    step_types: list[frozenset[str] | None] = []
    for i, raw in enumerate(raw_steps):
        path = f"sequence.steps[{i}]"
        if not isinstance(raw, Mapping):
            errs.add("a step must be a mapping (name, when, times, ...)", path)
            continue
        step = _parse_step(raw, path, names, features, used, step_types, errs)
        if step is not None:
            steps.append(step)
    if len(errs.errors) > before or within is None:
        return None, frozenset(used), None
    try:
        spec = PatternSpec(
            id=rule_id, steps=tuple(steps), within=within, after_match=after_match, max_partial=max_partial
        )
    except RuleError as exc:
        errs.wrap(_step_path(exc, names), "sequence")
        return None, frozenset(used), None
    cost = _sequence_cost(raw_steps, steps, max_partial)
    if cost > MAX_SEQUENCE_COST:
        errs.add(
            f"the sequence may do about {cost:,} evaluations per event (limit {MAX_SEQUENCE_COST:,}): "
            "max_partial x the step conditions' size, where sum/avg/min/max/distinct read every event of "
            "a step; lower max_partial, times, or the aggregates",
            "sequence.max_partial",
        )
        return None, frozenset(used), None
    # Events of other types cannot take part unless a step is strict (any event breaks a strict run).
    event_types: frozenset[str] | None = None
    if all(t is not None for t in step_types) and all(st.contiguity != "strict" for st in steps):
        event_types = frozenset().union(*(t for t in step_types if t is not None))
    return spec, frozenset(used), event_types


def _sequence_cost(raw_steps: list[Any], steps: list[Step], max_partial: int) -> int:
    """An upper estimate of the condition work of one event: each of ``max_partial`` partial matches tries
    (at most) every step's condition, and an aggregate over a step reads up to ``times`` events of it
    (:data:`~riskctl.core.patterns.MAX_TIMES` when a step loops with ``at_least``).
    """
    scan = max(
        (MAX_TIMES if st.quantifier == "at_least" else st.times for st in steps),
        default=1,
    )
    per_run = 0
    for raw in raw_steps:
        nodes, scans = expression_cost(raw["when"])
        per_run += nodes + scans * scan
    return max_partial * per_run


def _step_path(err: RuleError, names: list[str]) -> RuleError:
    """Rewrite a pattern error's ``steps.<name>.x`` field as ``steps[i].x`` (the document's own path)."""
    fld = err.field or ""
    m = re.match(r"steps\.([A-Za-z0-9_]+)(.*)", fld)
    if m and m.group(1) in names:
        new = err.located()
        new.field = f"steps[{names.index(m.group(1))}]{m.group(2)}"
        new.args = (str(new),)
        return new
    return err


def _parse_step(
    raw: Mapping[str, Any],
    path: str,
    names: list[str],
    features: Mapping[str, FeatureSpec],
    used: set[str],
    step_types: list[frozenset[str] | None],
    errs: _Collector,
) -> Step | None:
    before = len(errs.errors)
    _check_keys(raw, STEP_KEYS, path, errs)
    name = raw.get("name")
    text = raw.get("when")
    cond: CompiledExpression | None = None
    if not isinstance(text, str):
        errs.add("each step needs a condition, when: <expression>", f"{path}.when")
    else:
        try:
            cond = compile_step_condition(text, steps=names, features=features)
        except ExpressionError as exc:
            errs.wrap(exc, f"{path}.when")
        else:
            used.update(cond.features)
            step_types.append(cond.event_types)
    kwargs: dict[str, Any] = {}
    if "at_least" in raw:
        if "times" in raw or "quantifier" in raw:
            errs.add("give either at_least: N or times: N (with quantifier), not both", f"{path}.at_least")
        kwargs["times"] = raw["at_least"]
        kwargs["quantifier"] = "at_least"
    else:
        if "times" in raw:
            kwargs["times"] = raw["times"]
        if "quantifier" in raw:
            kwargs["quantifier"] = raw["quantifier"]
    if "contiguity" in raw:
        kwargs["contiguity"] = raw["contiguity"]
    for key in ("max_gap", "min_gap"):
        if key in raw:
            value = _duration(raw[key], f"{path}.{key}", errs)
            if value is not None:
                kwargs[key] = value
    absent = raw.get("absent", False)
    if not isinstance(absent, bool):
        errs.add(f"absent must be true or false, got {absent!r}", f"{path}.absent")
    kwargs["negated"] = absent is True
    if len(errs.errors) > before or cond is None or not isinstance(name, str):
        return None
    try:
        return Step(name, cond.as_step_condition(), text, **kwargs)  # type: ignore[arg-type]
    except RuleError as exc:
        fld = exc.field or ""
        prefix = f"steps.{name}"
        tail = fld[len(prefix) :].lstrip(".") if fld.startswith(prefix) else fld
        located = exc.located(rule_id=errs.rule_id, source=errs.source)
        located.field = f"{path}.{tail}" if tail else path
        located.args = (str(located),)
        errs.errors.append(located)
    return None


def _duration(value: Any, path: str, errs: _Collector) -> int | None:
    try:
        ms = duration_ms(value)
    except ExpressionError as exc:
        errs.add(exc.reason, path)
        return None
    if ms <= 0:
        errs.add("a duration must be above zero", path)
        return None
    return ms


# --------------------------------------------------------------------------------------------- loading


#: characters of one rule file or text (YAML or JSON); rule files are about a kilobyte
MAX_RULE_TEXT = 1_048_576
#: nesting of mappings and lists in a YAML rule text (a rule needs 5 levels)
MAX_YAML_DEPTH = 32
#: scalars, mappings and lists in one YAML rule text (a rule has about 30); bounds the parse time
MAX_YAML_NODES = 50_000
_YAML_STR = "tag:yaml.org,2002:str"


def _yaml_refusal(reason: str, source: str, field: str | None, mark: Any) -> RuleSetError:
    if field and len(field) > 80:
        field = field[:40] + "..." + field[-37:]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return RuleSetError([RuleError(f"{reason}{where}", field=field or None, source=source)])


class _YamlFrame:
    __slots__ = ("is_map", "path", "keys", "key", "index")

    def __init__(self, is_map: bool, path: str) -> None:
        self.is_map = is_map
        self.path = path
        self.keys: dict[str, int] = {}  # key -> line (1-based) where it was first given
        self.key: str | None = None  # mapping: the key whose value comes next (None: a key comes next)
        self.index = 0  # list: the index of the next item


def _check_yaml_events(text: str, source: str, loader: Any) -> None:
    """Refuse what rule files never need and a hostile file uses, from the parser's events, before any node
    is built: anchors and aliases (billion laughs, circular structures), nesting deeper than
    :data:`MAX_YAML_DEPTH`, more than :data:`MAX_YAML_NODES` nodes, keys that are not text (``1:``, ``on:``,
    ``<<:`` merges, lists as keys) and duplicate keys. Iterative (no recursion) and linear in the text.
    """
    import yaml

    resolver = yaml.resolver.Resolver()
    stack: list[_YamlFrame] = []
    nodes = 0
    for ev in yaml.parse(text, Loader=loader):
        mark = ev.start_mark
        if isinstance(ev, yaml.AliasEvent):
            msg = (
                f"aliases (*{ev.anchor}) are not allowed in rule files: write the value out "
                "(aliases can expand a small file into gigabytes, or make a structure contain itself)"
            )
            raise _yaml_refusal(msg, source, stack[-1].path if stack else None, mark)
        if isinstance(ev, yaml.CollectionEndEvent):
            stack.pop()
            continue
        if not isinstance(ev, yaml.ScalarEvent | yaml.CollectionStartEvent):
            continue
        nodes += 1
        if nodes > MAX_YAML_NODES:
            msg = f"the rule text has too many values (more than {MAX_YAML_NODES})"
            raise _yaml_refusal(msg, source, None, mark)
        top = stack[-1] if stack else None
        if top is not None and top.is_map and top.key is None:  # this node is a key
            tag = ev.tag if isinstance(ev, yaml.ScalarEvent) else None
            if isinstance(ev, yaml.ScalarEvent) and (tag is None or tag == "!"):
                tag = resolver.resolve(yaml.ScalarNode, ev.value, ev.implicit)
            if tag != _YAML_STR:
                shown = repr(ev.value) if isinstance(ev, yaml.ScalarEvent) else "a list or mapping"
                msg = f"keys must be text, got {shown}"
                if isinstance(ev, yaml.ScalarEvent) and ev.value == "<<":
                    msg = "merge keys ('<<') are not allowed in rule files: write the fields out"
                elif isinstance(ev, yaml.ScalarEvent):
                    msg += f" (quote it: '{ev.value}')"
                raise _yaml_refusal(msg, source, top.path, mark)
            assert isinstance(ev, yaml.ScalarEvent)
            key = ev.value
            path = f"{top.path}.{key}" if top.path else key
            if key in top.keys:
                msg = f"duplicate key {key!r} (first given on line {top.keys[key]}): give each key once"
                raise _yaml_refusal(msg, source, path, mark)
            if ev.anchor is not None:
                msg = f"anchors (&{ev.anchor}) are not allowed in rule files"
                raise _yaml_refusal(msg, source, path, mark)
            top.keys[key] = mark.line + 1 if mark is not None else 0
            top.key = key
            continue
        if top is None:
            path = ""
        elif top.is_map:
            path = f"{top.path}.{top.key}" if top.path else str(top.key)
            top.key = None
        else:
            path = f"{top.path}[{top.index}]"
            top.index += 1
        if ev.anchor is not None:
            msg = (
                f"anchors (&{ev.anchor}) are not allowed in rule files: write the value out where it is used"
            )
            raise _yaml_refusal(msg, source, path, mark)
        if isinstance(ev, yaml.CollectionStartEvent):
            if len(stack) >= MAX_YAML_DEPTH:
                msg = f"the rule text is nested deeper than {MAX_YAML_DEPTH} levels"
                raise _yaml_refusal(msg, source, path, mark)
            stack.append(_YamlFrame(isinstance(ev, yaml.MappingStartEvent), path))


def _load_yaml(text: str, source: str) -> list[Any]:
    import yaml  # the only non-stdlib import of the core, and only here

    # libyaml when present: the events pass and the load are C-speed (the pure-Python parser takes about
    # 40 times longer on a large file). Both loaders are the safe ones: no Python objects from tags.
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_yaml_events(text, source, loader)
        return list(yaml.load_all(text, Loader=loader))
    except RuleSetError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleSetError([RuleError(f"not valid YAML{where}: {problem}", source=source)]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. a timestamp 2024-13-45
        msg = f"not valid YAML: {type(exc).__name__}: {str(exc)[:200]}"
        raise _yaml_refusal(msg, source, None, None) from None


def _documents(text: str, source: str) -> Iterator[tuple[str, Any]]:
    """The rule documents of a YAML text, or of a JSON text when ``source`` ends in ``.json``.

    Hostile texts are refused with the source, the field and the reason (:func:`_check_yaml_events`,
    :func:`riskctl.core.jsondoc.load_json_document`); over :data:`MAX_RULE_TEXT` characters, unread.
    """
    if not isinstance(text, str):
        msg = f"a rule text must be text, got {type(text).__name__}"
        raise RuleSetError([RuleError(msg, source=source)])
    if len(text) > MAX_RULE_TEXT:
        msg = f"the rule text is too large ({len(text)} characters, limit {MAX_RULE_TEXT})"
        raise RuleSetError([RuleError(msg, source=source)])
    if source.endswith(".json"):
        docs = [load_json_document(text, source=source, max_chars=MAX_RULE_TEXT)]
    else:
        docs = _load_yaml(text, source)
    index = 0
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, Mapping) and set(doc) == {"rules"}:
            doc = doc["rules"]
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            index += 1
            yield f"{source}#{index}", item


def load_rules_text(text: str, *, source: str = "<text>") -> list[Rule]:
    """Parse every rule of a YAML (or JSON) text; raises :class:`RuleSetError` with all errors."""
    rules: list[Rule] = []
    errors: list[RuleError] = []
    for where, doc in _documents(text, source):
        try:
            rules.append(parse_rule(doc, source=where))
        except RuleSetError as exc:
            errors.extend(exc.errors)
    if errors:
        raise RuleSetError(errors)
    return rules


def rule_from_json(text: str | bytes, *, source: str = "<json>") -> Rule:
    """Parse one rule stored as a JSON document (the MySQL form), within the limits of
    :func:`~riskctl.core.jsondoc.load_json_document`.
    """
    return parse_rule(load_json_document(text, source=source), source=source)


def read_rule_file(file: Path, *, source: str | None = None) -> str:
    """The text of a rule file, refused unread when it is larger than :data:`MAX_RULE_TEXT` allows
    (4 bytes a character at most) or not UTF-8; raises :class:`RuleSetError`, or ``OSError``.
    """
    name = source or file.name
    size = file.stat().st_size
    if size > 4 * MAX_RULE_TEXT:
        msg = f"the rule file is too large ({size} bytes, limit {MAX_RULE_TEXT} characters)"
        raise RuleSetError([RuleError(msg, source=name)])
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"the rule file is not valid UTF-8 (byte {exc.start})"
        raise RuleSetError([RuleError(msg, source=name)]) from None


def rule_files(path: str | Path) -> list[Path]:
    """The rule files of a folder (``*.yaml``, ``*.yml``, ``*.json``, recursively, sorted), or the
    file itself.
    """
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        msg = f"no such rules folder or file: {root}"
        raise RuleSetError([RuleError(msg, source=str(root))])
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())


def load_rules(path: str | Path) -> RuleSet:
    """Load a folder (or one file) of rules into a :class:`RuleSet`; every error of every file is
    collected.
    """
    rules: list[Rule] = []
    errors: list[RuleError] = []
    root = Path(path)
    for file in rule_files(root):
        name = str(file.relative_to(root)) if root.is_dir() else file.name
        try:
            rules.extend(load_rules_text(read_rule_file(file, source=name), source=name))
        except RuleSetError as exc:
            errors.extend(exc.errors)
        except OSError as exc:
            errors.append(RuleError(f"cannot read the file: {exc}", source=name))
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.id in seen:
            msg = f"duplicate rule id (also defined in {seen[rule.id].source})"
            errors.append(RuleError(msg, rule_id=rule.id, field="id", source=rule.source))
        seen[rule.id] = rule
    if errors:
        raise RuleSetError(errors)
    return RuleSet(rules)
