"""Records the dispatcher reads, parsed into :class:`AlertItem` within documented limits.

Two kinds of record come in:

- an alert of the job's alerts topic (``"kind": "alert"``, see :mod:`riskctl.core.decisions`): its
  ``alert_id`` is the delivery id;
- a decision of the decisions topic (``"kind": "decision"``) when ``review_decisions`` is on: only
  ``action == "REVIEW"`` ones become items, with the id ``review:<event_id>``; other decisions are skipped.

Anything else is refused with a :class:`BadRecord` carrying the field and the reason, which the dispatcher
dead-letters: a record over ``max_record_bytes``, not UTF-8, not JSON, nested deeper than :data:`MAX_DEPTH`,
not an object, a missing or mistyped field, an id or name longer than :data:`MAX_ID_CHARS`, a timestamp out of
range. Evidence values are kept as they are (the record size bounds them) and cut when rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from riskctl.core.jsondoc import json_depth_exceeds

#: nesting of objects and lists in one record (an alert needs 5 levels: evidence.match.steps.<step>[])
MAX_DEPTH = 16
#: characters of an id, a rule id, a user id, a reason or a ruleset version
MAX_ID_CHARS = 256
#: the largest timestamp accepted (ms since the epoch; 2**53: exact in JSON readers that use doubles)
MAX_TS = 2**53
#: the default limit of one record, in bytes (the job's own event limit)
DEFAULT_MAX_RECORD_BYTES = 65_536
ACTIONS = ("PASS", "REVIEW", "REJECT")


class BadRecord(ValueError):
    """A record the dispatcher cannot deliver: dead-lettered with ``reason`` and ``field``."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class FiredRuleRef:
    """One rule named by an alert or a REVIEW decision, with the values that made it fire."""

    id: str
    version: int
    action: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertItem:
    """What is delivered: one alert, or one REVIEW decision (``kind == "review"``)."""

    id: str
    kind: str  # "alert" | "review"
    user_id: str
    ts: int
    reason: str
    action: str
    rules: tuple[FiredRuleRef, ...]
    event_id: str | None = None
    trigger_event_id: str | None = None
    ruleset_version: str = ""
    shadow: bool = False

    @property
    def rule(self) -> FiredRuleRef:
        """The first (for an alert: the only) rule."""
        return self.rules[0]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form sent by the generic webhook."""
        return {
            "id": self.id,
            "kind": self.kind,
            "user_id": self.user_id,
            "ts": self.ts,
            "reason": self.reason,
            "action": self.action,
            "rules": [
                {"id": r.id, "version": r.version, "action": r.action, "evidence": dict(r.evidence)}
                for r in self.rules
            ],
            "event_id": self.event_id,
            "trigger_event_id": self.trigger_event_id,
            "ruleset_version": self.ruleset_version,
            "shadow": self.shadow,
        }


def _text(doc: Mapping[str, Any], key: str, *, required: bool = True, where: str = "") -> str | None:
    value = doc.get(key)
    name = f"{where}{key}"
    if value is None:
        if required:
            msg = "missing"
            raise BadRecord(msg, name)
        return None
    if not isinstance(value, str):
        msg = f"must be a string, got {type(value).__name__}"
        raise BadRecord(msg, name)
    if required and not value:
        msg = "must not be empty"
        raise BadRecord(msg, name)
    if len(value) > MAX_ID_CHARS:
        msg = f"too long ({len(value)} characters, limit {MAX_ID_CHARS})"
        raise BadRecord(msg, name)
    return value


def _int(doc: Mapping[str, Any], key: str, low: int, high: int, where: str = "") -> int:
    value = doc.get(key)
    name = f"{where}{key}"
    if value is None:
        msg = "missing"
        raise BadRecord(msg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"must be an integer, got {type(value).__name__}"
        raise BadRecord(msg, name)
    if not low <= value <= high:
        msg = f"out of range ({low}..{high})"
        raise BadRecord(msg, name)
    return value


def _rule(raw: Any, where: str) -> FiredRuleRef:
    if not isinstance(raw, Mapping):
        msg = f"must be an object, got {type(raw).__name__}"
        raise BadRecord(msg, where.rstrip("."))
    rule_id = _text(raw, "id", where=where)
    version = _int(raw, "version", 0, 2**31 - 1, where)
    action = _text(raw, "action", where=where)
    if action not in ACTIONS:
        msg = f"must be one of {', '.join(ACTIONS)}, got {action!r}"
        raise BadRecord(msg, f"{where}action")
    evidence = raw.get("evidence", {})
    if evidence is None:
        evidence = {}
    if not isinstance(evidence, Mapping):
        msg = f"must be an object, got {type(evidence).__name__}"
        raise BadRecord(msg, f"{where}evidence")
    assert rule_id is not None and action is not None
    return FiredRuleRef(rule_id, version, action, evidence)


def load_record(raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> dict[str, Any]:
    """The JSON object of one Kafka record value, or :class:`BadRecord` (size, UTF-8, JSON, depth)."""
    if raw is None:
        msg = "the record has no value (a tombstone)"
        raise BadRecord(msg)
    if len(raw) > max_bytes:
        msg = f"the record is too large ({len(raw)} bytes, limit {max_bytes})"
        raise BadRecord(msg)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"the record is not valid UTF-8 (byte {exc.start})"
        raise BadRecord(msg) from None
    deep = json_depth_exceeds(text, MAX_DEPTH)
    if deep is not None:
        msg = f"the record is nested deeper than {MAX_DEPTH} levels (at character {deep})"
        raise BadRecord(msg)
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        msg = f"the record is not JSON: {str(exc)[:200]}"
        raise BadRecord(msg) from None
    if not isinstance(doc, dict):
        msg = f"the record must be a JSON object, got {type(doc).__name__}"
        raise BadRecord(msg)
    return doc


def parse_alert(doc: Mapping[str, Any]) -> AlertItem:
    """An alert record of the job as an :class:`AlertItem`, or :class:`BadRecord`."""
    alert_id = _text(doc, "alert_id")
    rule = _rule(doc.get("rule"), "rule.")
    shadow = doc.get("shadow", False)
    if not isinstance(shadow, bool):
        msg = f"must be true or false, got {type(shadow).__name__}"
        raise BadRecord(msg, "shadow")
    assert alert_id is not None
    return AlertItem(
        id=alert_id,
        kind="alert",
        user_id=_text(doc, "user_id") or "",
        ts=_int(doc, "ts", 0, MAX_TS),
        reason=_text(doc, "reason") or "",
        action=rule.action,
        rules=(rule,),
        event_id=_text(doc, "event_id", required=False),
        trigger_event_id=_text(doc, "trigger_event_id", required=False),
        ruleset_version=_text(doc, "ruleset_version", required=False) or "",
        shadow=shadow,
    )


def parse_review(doc: Mapping[str, Any]) -> AlertItem | None:
    """A REVIEW decision as an :class:`AlertItem`; None for a PASS or REJECT decision."""
    action = _text(doc, "action")
    if action not in ACTIONS:
        msg = f"must be one of {', '.join(ACTIONS)}, got {action!r}"
        raise BadRecord(msg, "action")
    if action != "REVIEW":
        return None
    event_id = _text(doc, "event_id")
    rules_raw = doc.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        msg = "must be a non-empty list for a REVIEW decision"
        raise BadRecord(msg, "rules")
    rules = tuple(_rule(r, f"rules[{i}].") for i, r in enumerate(rules_raw[:64]))
    return AlertItem(
        id=f"review:{event_id}",
        kind="review",
        user_id=_text(doc, "user_id") or "",
        ts=_int(doc, "ts", 0, MAX_TS),
        reason="review",
        action=action,
        rules=rules,
        event_id=event_id,
        trigger_event_id=event_id,
        ruleset_version=_text(doc, "ruleset_version", required=False) or "",
    )


def parse_item(raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> AlertItem | None:
    """One record value as an item: an alert, a REVIEW decision, None for a decision that is not REVIEW;
    anything else raises :class:`BadRecord`.
    """
    doc = load_record(raw, max_bytes=max_bytes)
    kind = doc.get("kind")
    if kind == "alert":
        return parse_alert(doc)
    if kind == "decision":
        return parse_review(doc)
    msg = f"must be 'alert' or 'decision', got {str(kind)[:40]!r}" if kind is not None else "missing"
    raise BadRecord(msg, "kind")
