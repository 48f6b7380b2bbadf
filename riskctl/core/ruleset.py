"""The compiled rule and the rule set: what the engine runs, built from documents by the rule loader.

A :class:`Rule` is immutable and holds only its compiled definition; per-key runtime state lives in the
engine's :class:`~riskctl.core.state.KeyedState`. A rule pickles as its document and is compiled again when
unpickled (closures cannot be pickled; the document is small and safe).
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from types import MappingProxyType
from typing import Any

from riskctl.core.errors import RuleError, RuleSetError
from riskctl.core.expr import CompiledExpression
from riskctl.core.features import FeatureSpec
from riskctl.core.patterns import PatternSpec

ACTIONS = ("PASS", "REVIEW", "REJECT")
STATUSES = ("active", "shadow", "disabled")
ACTION_RANK = {"PASS": 0, "REVIEW": 1, "REJECT": 2}


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

    @cached_property  # a rule set's version reads every rule's at each rule change
    def digest(self) -> str:
        """A hash of the normalised document: equal documents, equal digests."""
        return document_digest(self.document)

    @cached_property
    def version_line(self) -> bytes:
        """What this rule adds to its rule set's version: id, version and digest."""
        return f"{self.id}\0{self.version}\0{self.digest}\n".encode()

    @property
    def is_sequence(self) -> bool:
        """True for a sequence rule, False for a condition rule."""
        return self.sequence is not None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle the document and recompile it: compiled closures are not picklable, text is small and safe.
        from riskctl.core.rules import _rule_from_document  # the loader, which imports this module

        return (_rule_from_document, (dict(self.document), self.source))


def document_digest(document: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of the canonical JSON of a rule document."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def rule_order(rule: Rule) -> tuple[int, str]:
    """A rule's place in its rule set (and in the engine's plan): by priority, highest first, then id."""
    return (-rule.priority, rule.id)


_rule_id = attrgetter("id")
_VERSION_LINE = attrgetter("version_line")


class RuleSet:
    """An immutable, ordered set of rules with a version string derived from their contents.

    Rules are ordered by priority (highest first) then id. ``version`` changes whenever any rule's document
    changes, so a decision can name exactly the rule set that made it.
    """

    __slots__ = ("_rules", "_by_id", "_by_name", "version")

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
        by_priority = tuple(sorted(by_id.values(), key=rule_order))
        self._set(by_priority, by_id, tuple(sorted(by_id.values(), key=_rule_id)))

    def _set(self, rules: tuple[Rule, ...], by_id: dict[str, Rule], by_name: tuple[Rule, ...]) -> None:
        self._rules = rules
        self._by_id: Mapping[str, Rule] = MappingProxyType(by_id)
        self._by_name = by_name  # by id: the order of the version's digest
        self.version = hashlib.sha256(b"".join(map(_VERSION_LINE, by_name))).hexdigest()[:12]

    def _changed(self, rule_id: str, rule: Rule | None) -> RuleSet:
        """A copy with the rule ``rule_id`` replaced by ``rule`` (None: removed). Each rule change of a
        running job makes one: the lists are patched, not sorted again (bulk changes, docs/rules-store.md)."""
        by_id = dict(self._by_id)
        rules, by_name = list(self._rules), list(self._by_name)
        old = by_id.pop(rule_id, None)
        if old is not None:
            del rules[bisect_left(rules, rule_order(old), key=rule_order)]
            del by_name[bisect_left(by_name, rule_id, key=_rule_id)]
        if rule is not None:
            by_id[rule.id] = rule
            insort(rules, rule, key=rule_order)
            insort(by_name, rule, key=_rule_id)
        changed = RuleSet.__new__(RuleSet)
        changed._set(tuple(rules), by_id, tuple(by_name))  # noqa: SLF001 - its own class
        return changed

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, disabled ones included, by priority then id."""
        return self._rules

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, or None."""
        return self._by_id.get(rule_id)

    def with_rule(self, rule: Rule) -> RuleSet:
        """A new rule set where ``rule`` is added or replaces the rule of the same id."""
        return self._changed(rule.id, rule)

    def without(self, rule_id: str) -> RuleSet:
        """A new rule set without the rule ``rule_id`` (unchanged if absent)."""
        return self._changed(rule_id, None)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._by_id

    def __repr__(self) -> str:
        return f"RuleSet(version={self.version!r}, rules={[r.id for r in self._rules]!r})"
