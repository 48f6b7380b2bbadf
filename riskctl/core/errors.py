"""The root of the riskctl error hierarchy and the errors of the pure core (rules, expressions, events).

The root class lives here because the core imports nothing outside ``riskctl/core``; the whole tree, with the
outer layers' errors (configuration, services, the rules store), is documented and importable in one place:
:mod:`riskctl.errors`.

Every error carries its context (rule id, field path, reason, a suggestion where one exists) so a user
sees *where* a rule or an event is wrong, not only that it is. Validation errors subclass :class:`ValueError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: the longest reason a :class:`RuleError` keeps (the longest written out is about 260 characters): a longer
#: one quotes a bad value of the document, which may be megabytes, and keeps an :func:`excerpt` of it
MAX_REASON_CHARS = 600
#: the longest field path a :class:`RuleError` keeps (a path names the document's keys, which may be long)
MAX_FIELD_CHARS = 200


def excerpt(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its beginning and its end around the count of
    the characters left out, in at most ``limit`` characters: what a message quotes of a value of any size."""
    if len(text) <= limit:
        return text
    room = limit - len(f" [...{len(text):,} characters...] ")
    tail = min(room // 4, 60)
    head = room - tail
    cut = len(text) - head - tail
    return f"{text[:head]} [...{cut:,} characters...] {text[len(text) - tail :] if tail else ''}"


class RiskctlError(Exception):
    """Base class of every error raised by riskctl on purpose.

    :meth:`details` is the context the error carries, JSON-ready: the CLI puts it next to the message in the
    error document of ``--json``, so a script reads the rule id or the versions without parsing the message.
    """

    def details(self) -> dict[str, Any]:
        """The error's context as a JSON-ready dict (empty when the message is all there is)."""
        return {}


class RuleError(RiskctlError, ValueError):
    """A rule (or a part of one: a feature, a pattern step, a condition) is invalid.

    ``field`` is a path inside the rule document, e.g. ``features.fails.window`` or
    ``sequence.steps[2].when``.
    ``rule_id`` and ``field`` may be filled in later by the code that knows them (see :meth:`located`).
    """

    def __init__(
        self,
        reason: str,
        *,
        rule_id: str | None = None,
        field: str | None = None,
        suggestion: str | None = None,
        source: str | None = None,
    ) -> None:
        # bounded here, where every refusal passes (the CLI, the console, the job, --json): a message quotes
        # the bad value, which may be a megabyte string or a long key
        self.reason = excerpt(reason, MAX_REASON_CHARS)
        self.rule_id = rule_id
        self.field = None if field is None else excerpt(field, MAX_FIELD_CHARS)
        self.suggestion = None if suggestion is None else excerpt(suggestion, MAX_FIELD_CHARS)
        self.source = source  # file name (and document index) the rule came from, when known
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.source:
            parts.append(f"{self.source}: " if self.rule_id or self.field else self.source)
        if self.rule_id:
            parts.append(f"rule {self.rule_id!r}")
        if self.field:
            parts.append(f"{' ' if self.rule_id else ''}field {self.field!r}")
        head = "".join(parts)
        text = f"{head}: {self.reason}" if head else self.reason
        if self.suggestion:
            text += f" (did you mean {self.suggestion!r}?)"
        return text

    def __str__(self) -> str:
        return self._render()

    def located(
        self, *, rule_id: str | None = None, field_prefix: str | None = None, source: str | None = None
    ) -> RuleError:
        """Return a copy with the rule id / source set and ``field_prefix`` put in front of the field."""
        new = _copy_error(self)
        if rule_id is not None and new.rule_id is None:
            new.rule_id = rule_id
        if source is not None and new.source is None:
            new.source = source
        if field_prefix:
            if not new.field:
                new.field = field_prefix
            elif new.field.startswith("["):
                new.field = field_prefix + new.field
            else:
                new.field = f"{field_prefix}.{new.field}"
            new.field = excerpt(new.field, MAX_FIELD_CHARS)
        new.args = (new._render(),)
        return new

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for ``riskctl rules validate --json`` and the rule-status topic)."""
        return {
            "rule_id": self.rule_id,
            "field": self.field,
            "reason": self.reason,
            "suggestion": self.suggestion,
            "source": self.source,
        }

    def details(self) -> dict[str, Any]:
        return self.to_dict()


def _copy_error(err: RuleError) -> RuleError:
    new = err.__class__.__new__(err.__class__)
    new.__dict__.update(err.__dict__)
    new.args = err.args
    return new


class ExpressionError(RuleError):
    """A condition expression is invalid: syntax, unknown name or function, or refused as hostile.

    ``column`` is the 1-based position in the expression text, when known.
    """

    def __init__(
        self,
        reason: str,
        *,
        column: int | None = None,
        rule_id: str | None = None,
        field: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        self.column = column
        if column is not None:
            reason = f"{reason} (at column {column})"
        super().__init__(reason, rule_id=rule_id, field=field, suggestion=suggestion)


class RuleSetError(RiskctlError, ValueError):
    """One or more rules failed to load; ``errors`` holds every one of them (not only the first)."""

    def __init__(self, errors: Iterable[RuleError]) -> None:
        self.errors: Sequence[RuleError] = tuple(errors)
        n = len(self.errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{n} rule error{'s' if n != 1 else ''}:\n{lines}")

    def details(self) -> dict[str, Any]:
        return {"errors": [e.to_dict() for e in self.errors]}


class EventError(RiskctlError, ValueError):
    """A raw event cannot be decided: not an object, a required field missing, a field of the wrong type."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (dead-letter records, replay error lines)."""
        return {"reason": self.reason, "field": self.field}

    def details(self) -> dict[str, Any]:
        return self.to_dict()


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word`` (difflib), for a "did you mean"; None if nothing is close."""
    import difflib

    options = [c for c in choices if c]
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return lowered[word.lower()]
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return found[0] if found else None
