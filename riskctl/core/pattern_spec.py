"""The definition of a sequence pattern: its validated steps (:class:`Step`) and :class:`PatternSpec`.

Both are immutable and checked when built, so a pattern that could never match, or one that would match
without bound, is refused with the field and the reason before any event is seen. What a pattern matches is
described in :mod:`riskctl.core.patterns`, whose :class:`~riskctl.core.patterns.PatternMatcher` runs one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from riskctl.core.errors import RuleError, suggest

Event = Mapping[str, Any]
StepsView = Mapping[str, Sequence[Event]]
#: ``cond(event, steps) -> bool`` (see :mod:`riskctl.core.expr`, which compiles rule text into these).
Condition = Callable[[Event, StepsView], Any]

CONTIGUITIES = ("relaxed", "strict")
QUANTIFIERS = ("exactly", "at_least")
AFTER_MATCH_POLICIES = ("skip_past_last_event", "no_skip")
MAX_STEPS = 32
MAX_TIMES = 1000
#: The work one event of a key may cost a sequence pattern, in condition elements and events copied: what the
#: validator lets a rule need per event in order (``riskctl.core.rule_document``; about 14 ms of CPU at most,
#: measured: docs/rules.md "The bound per event"), and what the matcher lets the replay of a late event spend
#: before it gives the replay up (:mod:`riskctl.core.patterns`, "Bounds").
MAX_SEQUENCE_COST = 250_000
#: The entry of a partial match's ``steps`` mapping (not a step: step names do not start with ``_``) where the
#: matcher keeps the step aggregates folded: ``(kind, step, path) -> (events of the step folded, acc)``. A
#: condition's aggregate uses an entry only if it covers every event of its step, else folds the step itself.
AGGREGATES_KEY = "_aggregates"


def check_ms(value: Any, what: str, field_path: str, *, zero_ok: bool = False) -> None:
    """Refuse ``value`` unless it is an int number of milliseconds above zero (or zero, with ``zero_ok``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
        bound = ">= 0" if zero_ok else "> 0"
        msg = f"{what} must be an int number of milliseconds {bound}, got {value!r}"
        raise RuleError(msg, field=field_path)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a sequence pattern.

    ``cond`` is the compiled condition ``cond(event, steps)``; ``source`` is its text (the step's identity in
    ``PatternSpec.state_key`` and in equality: callables are not compared). ``times`` with ``quantifier``
    (``"exactly"`` or ``"at_least"``) says how many events the step takes. ``contiguity`` is ``"relaxed"``
    (skip events that are not candidates) or ``"strict"`` (the very next event of the key). ``max_gap`` /
    ``min_gap`` (ms) bound the time from the event matched just before. A ``negated`` step is an absence: no
    event satisfying it may occur between its neighbours (in the middle), or before the deadline (at the end;
    there ``max_gap`` is the absence window after the last positive event).
    """

    name: str
    cond: Condition = field(compare=False, repr=False)
    source: str
    times: int = 1
    quantifier: Literal["exactly", "at_least"] = "exactly"
    contiguity: Literal["relaxed", "strict"] = "relaxed"
    max_gap: int | None = None
    min_gap: int | None = None
    negated: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() or self.name.startswith("_"):
            msg = f"a step name must be an identifier not starting with '_', got {self.name!r}"
            raise RuleError(msg, field="name")
        where = f"steps.{self.name}"
        if not callable(self.cond):
            msg = f"the condition must be callable, got {type(self.cond).__name__}"
            raise RuleError(msg, field=f"{where}.when")
        if not isinstance(self.source, str) or not self.source.strip():
            msg = "the condition's source text is required (it identifies the step's state)"
            raise RuleError(msg, field=f"{where}.when")
        if (
            isinstance(self.times, bool)
            or not isinstance(self.times, int)
            or not 1 <= self.times <= MAX_TIMES
        ):
            msg = f"times must be an int from 1 to {MAX_TIMES}, got {self.times!r}"
            raise RuleError(msg, field=f"{where}.times")
        if self.quantifier not in QUANTIFIERS:
            msg = f"quantifier must be one of {', '.join(QUANTIFIERS)}, got {self.quantifier!r}"
            raise RuleError(msg, field=f"{where}.quantifier", suggestion=_close(self.quantifier, QUANTIFIERS))
        if self.contiguity not in CONTIGUITIES:
            msg = f"contiguity must be one of {', '.join(CONTIGUITIES)}, got {self.contiguity!r}"
            raise RuleError(
                msg, field=f"{where}.contiguity", suggestion=_close(self.contiguity, CONTIGUITIES)
            )
        if self.max_gap is not None:
            check_ms(self.max_gap, "max_gap", f"{where}.max_gap")
        if self.min_gap is not None:
            check_ms(self.min_gap, "min_gap", f"{where}.min_gap")
            if self.max_gap is not None and self.min_gap >= self.max_gap:
                msg = f"min_gap ({self.min_gap}) must be below max_gap ({self.max_gap}): no event could match"
                raise RuleError(msg, field=f"{where}.min_gap")
        if self.negated:
            if self.times != 1 or self.quantifier != "exactly":
                msg = "a negated step forbids any matching event: it takes no quantifier"
                raise RuleError(msg, field=f"{where}.times")
            if self.contiguity != "relaxed":
                msg = "a negated step watches every event in its span: it takes no contiguity"
                raise RuleError(msg, field=f"{where}.contiguity")
            if self.min_gap is not None:
                msg = "a negated step takes no min_gap"
                raise RuleError(msg, field=f"{where}.min_gap")


def _close(value: Any, choices: Sequence[str]) -> str | None:
    return suggest(value, choices) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class PatternSpec:
    """A validated sequence pattern: ``steps`` in order, all within ``within`` ms of the first matched event.

    ``after_match`` is ``"skip_past_last_event"`` (default) or ``"no_skip"`` (see the module docstring);
    ``max_partial`` bounds the partial matches kept per key.
    """

    id: str
    steps: tuple[Step, ...]
    within: int
    after_match: Literal["skip_past_last_event", "no_skip"] = "skip_past_last_event"
    max_partial: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            msg = f"a pattern needs a non-empty string id, got {self.id!r}"
            raise RuleError(msg, field="id")
        try:
            self._validate()
        except RuleError as exc:
            raise exc.located(rule_id=self.id) from None

    def _validate(self) -> None:
        steps = self.steps
        if not isinstance(steps, tuple) or not steps:
            msg = "a sequence needs a non-empty tuple of steps"
            raise RuleError(msg, field="steps")
        if len(steps) > MAX_STEPS:
            msg = f"a sequence has at most {MAX_STEPS} steps, got {len(steps)}"
            raise RuleError(msg, field="steps")
        names: set[str] = set()
        for i, step in enumerate(steps):
            if not isinstance(step, Step):
                msg = f"steps[{i}] is a {type(step).__name__}, not a Step"
                raise RuleError(msg, field=f"steps[{i}]")
            if step.name in names:
                msg = f"two steps are named {step.name!r}: names must be unique"
                raise RuleError(msg, field=f"steps.{step.name}")
            names.add(step.name)
        first = steps[0]
        if first.negated:
            msg = "a sequence cannot start with a negated step (absence of what, after what?)"
            raise RuleError(msg, field=f"steps.{first.name}.negated")
        for prev, step in zip(steps, steps[1:], strict=False):
            if prev.negated and step.negated:
                msg = (
                    f"two negated steps in a row ({prev.name}, {step.name}): join their conditions with 'or'"
                )
                raise RuleError(msg, field=f"steps.{step.name}.negated")
        for step in steps[1:-1]:
            if step.negated and step.max_gap is not None:
                msg = "only a final negated step takes max_gap (its absence window)"
                raise RuleError(msg, field=f"steps.{step.name}.max_gap")
        check_ms(self.within, "within", "within")
        if self.after_match not in AFTER_MATCH_POLICIES:
            msg = f"after_match must be one of {', '.join(AFTER_MATCH_POLICIES)}, got {self.after_match!r}"
            raise RuleError(
                msg, field="after_match", suggestion=_close(self.after_match, AFTER_MATCH_POLICIES)
            )
        mp = self.max_partial
        if isinstance(mp, bool) or not isinstance(mp, int) or mp < 1:
            msg = f"max_partial must be an int >= 1, got {mp!r}"
            raise RuleError(msg, field="max_partial")

    @property
    def state_key(self) -> str:
        """A stable key derived from the definition: equal definitions share state, a changed one is fresh."""
        parts = [
            (s.name, s.source, s.times, s.quantifier, s.contiguity, s.max_gap, s.min_gap, s.negated)
            for s in self.steps
        ]
        text = repr((parts, self.within, self.after_match, self.max_partial))
        return f"pattern:{self.id}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
