"""One rule document, validated and compiled (once) into a :class:`~riskctl.core.ruleset.Rule`.

A rule document is a mapping, written in YAML in ``rules/`` and stored as the same document in JSON in MySQL
(the fields and their defaults: ``docs/rules.md``). :func:`parse_rule` checks every field, compiles the
conditions (:mod:`riskctl.core.expr`), the features (:mod:`riskctl.core.features`) and the sequence pattern
(:mod:`riskctl.core.patterns`), and bounds a sequence's work per event (:data:`MAX_SEQUENCE_COST`).

Every problem is reported as a :class:`~riskctl.core.errors.RuleError` with the rule id, the field path
(``sequence.steps[2].when``), the reason and a "did you mean" where a name is close to a known one; all the
problems of one document are raised together in one :class:`~riskctl.core.errors.RuleSetError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from riskctl.core.errors import ExpressionError, RuleError, RuleSetError, excerpt, suggest
from riskctl.core.expr import (
    CompiledExpression,
    compile_condition,
    compile_filter,
    compile_step_condition,
    duration_ms,
    expression_cost,
)
from riskctl.core.feature_spec import MAX_FEATURE_READS as MAX_FEATURE_READS
from riskctl.core.features import FeatureSpec
from riskctl.core.pattern_spec import MAX_SEQUENCE_COST as MAX_SEQUENCE_COST
from riskctl.core.patterns import AFTER_MATCH_POLICIES, MAX_STEPS, MAX_TIMES, PatternSpec, Step
from riskctl.core.rule_text import hidden_character, mixed_script_word, not_composed, visible
from riskctl.core.ruleset import ACTIONS, STATUSES, Rule

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
#: versions are a MySQL INT
MAX_VERSION = 2**31 - 1
#: nesting of mappings and lists in a rule text (YAML, or a document built in Python) (a rule needs 5 levels)
MAX_YAML_DEPTH = 32
#: scalars, mappings and lists in one rule text or document (a rule has about 30); bounds the parse time
MAX_YAML_NODES = 50_000


def is_rule_id(value: object) -> bool:
    """A valid rule id: 1-64 letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


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
        shown = excerpt(repr(raw_id), 80)
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
    :data:`MAX_YAML_NODES` values (shared sub-structures count each time they are reached); and any document
    with a text (key or value) holding a lone surrogate, which JSON's ``\\ud800`` escape gives: such a text
    has no UTF-8 form, so MySQL, Kafka and every file write would fail on it. Iterative.
    """
    # (value, depth, parent entry, key or index): the path of a refused text is rebuilt from its parents
    todo: list[tuple[Any, int, Any, Any]] = [(document, 1, None, None)]
    seen = 0
    while todo:
        entry = todo.pop()
        value, depth = entry[0], entry[1]
        seen += 1
        if seen > MAX_YAML_NODES:
            msg = f"the rule document has too many values (more than {MAX_YAML_NODES})"
            raise RuleSetError([RuleError(msg, rule_id=rule_id, source=source)])
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                _refuse_surrogate(value, _entry_path(entry), rule_id, source)
            _check_text(value, entry, entry[3] == "description", rule_id, source)
        elif isinstance(value, int):
            if value.bit_length() > _INT_BITS and abs(value) >= _INT_LIMIT:
                # as the JSON and YAML readers do: Python prints no such int, so every message that shows the
                # value (priority, alert, window, times, ...) raised a ValueError with neither rule nor field
                msg = f"an integer of more than {_INT_DIGITS:,} digits"
                raise RuleSetError([RuleError(msg, rule_id=rule_id, field=_entry_path(entry), source=source)])
        elif isinstance(value, Mapping | list | tuple):
            if depth > MAX_YAML_DEPTH:
                msg = f"the rule document is nested deeper than {MAX_YAML_DEPTH} levels (or contains itself)"
                field = _entry_path(entry) or None
                raise RuleSetError([RuleError(msg, rule_id=rule_id, field=field, source=source)])
            if isinstance(value, Mapping):
                if not all(isinstance(k, str) for k in value):
                    msg = "keys must be text"
                    field = _entry_path(entry) or None
                    raise RuleSetError([RuleError(msg, rule_id=rule_id, field=field, source=source)])
                for k in value:
                    if not k.isascii() and _SURROGATE.search(k):
                        _refuse_surrogate(k, _entry_path((None, 0, entry, k)), rule_id, source)
                    _check_text(k, (None, 0, entry, k), False, rule_id, source)
                todo.extend((item, depth + 1, entry, k) for k, item in value.items())
            else:
                todo.extend((item, depth + 1, entry, i) for i, item in enumerate(value))


_SURROGATE = re.compile("[\ud800-\udfff]")
#: Python's own limit on printing an int (``sys.get_int_max_str_digits()``'s default), which the JSON and YAML
#: readers refuse beyond
_INT_DIGITS = 4300
_INT_LIMIT = 10**_INT_DIGITS
_INT_BITS = 14_000  # below 10**4300 (2**14284): the exact test runs only for ints this large


def _entry_path(entry: Any) -> str:
    """The field path of an entry of :func:`_check_structure` (``sequence.steps[0].when``), long keys cut."""
    parts: list[str] = []
    while entry is not None and entry[2] is not None:
        key = entry[3]
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            shown = key if len(key) <= 40 else key[:37] + "..."
            parts.append("." + visible(shown.encode("utf-8", "backslashreplace").decode()))
        entry = entry[2]
    return "".join(reversed(parts)).lstrip(".")


def _check_text(text: str, entry: Any, prose: bool, rule_id: str | None, source: str | None) -> None:
    """Refuse a text a reviewer would read otherwise than it runs (:mod:`riskctl.core.rule_text`): hidden
    characters anywhere, and text not in NFC outside a description."""
    reason = hidden_character(text, prose=prose) or (None if prose else not_composed(text))
    if reason is not None:
        path = _entry_path(entry) or None
        raise RuleSetError([RuleError(reason, rule_id=rule_id, field=path, source=source)])


def _refuse_surrogate(text: str, path: str, rule_id: str | None, source: str | None) -> None:
    found = _SURROGATE.search(text)
    assert found is not None
    msg = (
        f"text holds a lone surrogate (\\u{ord(found.group()):04x}, at character {found.start() + 1}), "
        "which is not Unicode text: it has no UTF-8 form to store or send"
    )
    raise RuleSetError([RuleError(msg, rule_id=rule_id, field=path or None, source=source)])


def _check_description(doc: Mapping[str, Any], path: str, errs: _Collector) -> None:
    """A feature's, a sequence's or a step's ``description`` is text. Any other value was kept as it was: a
    YAML ``.nan`` or a JSON ``1e400`` (infinity) was accepted, then stored as ``NaN``/``Infinity``, which no
    JSON reader takes back (the CLI showed the stored rule as unreadable, the job lost it at a restore)."""
    if "description" in doc and not isinstance(doc["description"], str):
        errs.add("description must be text", f"{path}.description")


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
    for i, v in enumerate(value):
        mixed = mixed_script_word(v)
        if mixed is not None:
            errs.add(mixed, f"applies_to[{i}]" if len(value) > 1 else "applies_to")
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
    _check_feature_reads(specs, errs)
    return specs


def _check_feature_reads(specs: Mapping[str, FeatureSpec], errs: _Collector) -> None:
    """The features of one rule read at most :data:`MAX_FEATURE_READS` stored values per event in all (each
    distinct definition once, as the engine computes it once): 32 features each at the bound would cost 32
    times it at every event."""
    reads: dict[str, tuple[int, str]] = {}
    for name, spec in specs.items():
        reads.setdefault(spec.state_key, (spec.reads, name))
    total = sum(r for r, _ in reads.values())
    if total > MAX_FEATURE_READS:
        top = sorted(reads.values(), key=lambda rn: (-rn[0], rn[1]))
        shown = ", ".join(f"{name} {r:,}" for r, name in top[:5]) + (", ..." if len(top) > 5 else "")
        msg = (
            f"the features read up to {total:,} stored values per event in all, over the "
            f"{MAX_FEATURE_READS:,} allowed (MAX_FEATURE_READS): {shown}; give fewer buckets, max_values or n"
        )
        errs.add(msg, "features")


def parse_feature(definition: Any, path: str, errs: _Collector) -> FeatureSpec | None:
    """Turn one feature definition of a rule document into a :class:`FeatureSpec` (errors go to ``errs``)."""
    if not isinstance(definition, Mapping):
        errs.add("a feature definition must be a mapping (kind, field, window, filter, ...)", path)
        return None
    before = len(errs.errors)
    _check_keys(definition, FEATURE_KEYS, path, errs)
    _check_description(definition, path, errs)
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
    if isinstance(kwargs.get("field"), str):
        mixed = mixed_script_word(kwargs["field"])
        if mixed is not None:
            errs.add(mixed, f"{path}.field")
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
    _check_description(doc, "sequence", errs)
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
    if len(raw_steps) > MAX_STEPS:
        # Before any step is read: each step's condition is compiled against the names of all the steps (and
        # an unknown name is matched against every one of them for a "did you mean"), so 9,900 steps of
        # 'when: s1x == 1' (a 385 KB JSON document) took 190 s to refuse.
        errs.add(f"a sequence has at most {MAX_STEPS} steps, got {len(raw_steps)}", "sequence.steps")
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
            "max_partial x (the step conditions' elements + the events a partial match holds, times per "
            "step, again per distinct() over a step); lower max_partial, times, or the conditions",
            "sequence.max_partial",
        )
        return None, frozenset(used), None
    # Events of other types cannot take part unless a step is strict (any event breaks a strict run).
    event_types: frozenset[str] | None = None
    if all(t is not None for t in step_types) and all(st.contiguity != "strict" for st in steps):
        event_types = frozenset().union(*(t for t in step_types if t is not None))
    return spec, frozenset(used), event_types


def _sequence_cost(raw_steps: list[Any], steps: list[Step], max_partial: int) -> int:
    """An upper estimate of the work of one event, in condition elements: each of ``max_partial`` partial
    matches tries (at most) every step's condition, each element once (an aggregate over a step is one
    element: the matcher keeps it folded per partial match, riskctl.core.patterns), and copies the events it
    holds when it takes one (up to ``times`` per positive step, :data:`~riskctl.core.patterns.MAX_TIMES` for
    an ``at_least`` step), and the set of each ``distinct`` kept over the step taking it (as many values as
    that step holds events). docs/rules.md#limits has the time this bound allows, measured.
    """
    per_run = 0
    held: dict[str, int] = {}
    for raw, st in zip(raw_steps, steps, strict=True):
        nodes, _ = expression_cost(raw["when"])
        per_run += nodes
        if not st.negated:
            held[st.name] = MAX_TIMES if st.quantifier == "at_least" else st.times
            per_run += held[st.name]
    # A kept distinct() is a set, copied when its step takes an event: as many values as the step holds.
    distinct = {
        a[0]: a[1] for st in steps for a in getattr(st.cond, "aggregates", ()) if a[0][0] == "distinct"
    }
    per_run += sum(held.get(step, 0) for step in distinct.values())
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
    _check_description(raw, path, errs)
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
