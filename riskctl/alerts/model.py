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

The limits follow what the job writes, so that no alert of the job is refused (an attacker who controls an
event's id or a field a rule reads must not be able to keep their alert from reviewers):

- the record size: :data:`DEFAULT_MAX_RECORD_BYTES` is the ``max.request.size`` of the job's Kafka sinks
  (1 MiB), above any alert the job can write;
- the nesting: a decision or an alert holds an event's field values deeper than the event did
  (:data:`RECORD_ENVELOPE_DEPTH` more), so :data:`MAX_DEPTH` is the job's ``max_depth`` (its default) plus
  that;
- the ``alert_id``: the engine writes at most :data:`riskctl.core.decisions.MAX_ALERT_ID_CHARS` (512)
  characters (:func:`riskctl.core.decisions.alert_id`); another producer's may be longer: no length limit but
  the record's. The deduplication key (:attr:`AlertItem.key`, :func:`id_key`) is the user id and the item
  id up to :data:`MAX_KEY_CHARS` (every alert of the job), else a SHA-256 of them, so memory and the
  delivered topic stay bounded.

An item id names one alert only within its user: the job's ids are built from event ids, which whoever sends
events chooses and which the job keeps unique per user only (``job.dedup`` is per user key). Keyed by the id
alone, one user's event with another's event id suppressed the other's alert as a duplicate of his own. The
key, not the id, holds the user. The user in the id itself would have changed every id the job writes (its
replay and acceptance digests, the console's labels stored under the old ids, every alert the job writes
again after an upgrade delivered once more) and still left the REVIEW ids, which the dispatcher builds from
an event id, and the console's cases, keyed by event ids too, to fix apart (both are keyed by
:func:`riskctl.core.decisions.user_key` now, as here). Here the ids, the links and the messages stay as they
were; an upgrade re-delivers at most the records read again around it (docs/alerts.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from riskctl.core.decisions import MAX_ALERT_ID_CHARS, user_key
from riskctl.core.door import DEFAULT_LIMITS
from riskctl.core.jsondoc import json_depth_exceeds

#: how much deeper the job's records hold an event's field value than the event did: a REVIEW decision puts
#: it under the decision (1) .rules (2) [rule] (3) .evidence (4) .fields (5), one level below where it sat in
#: the event (whose own object is depth 1): 4 levels deeper. An alert's rule.evidence.fields is one level
#: shallower; a sequence's evidence (...match.events.<step>[event].fields) holds only values as the engine
#: stores them, at most riskctl.core.stored.MAX_STORED_DEPTH (4) levels: 13 levels in all
RECORD_ENVELOPE_DEPTH = 4
#: nesting of objects and lists in one record: an event nested as deep as the job accepts (``job.max_depth``,
#: default 16) inside a decision or an alert
MAX_DEPTH = DEFAULT_LIMITS.max_depth + RECORD_ENVELOPE_DEPTH
#: characters of a user id, a rule id, a reason, an event id or a ruleset version (not of an ``alert_id``:
#: bounded by the record size only, see the module docstring)
MAX_ID_CHARS = 256
#: characters of a deduplication key (:func:`id_key`) kept as it is; a longer one is its SHA-256. The longest
#: key of an alert of the job (a user id of MAX_ID_CHARS, its length and two ':', an id of the engine's
#: MAX_ALERT_ID_CHARS): every alert of the job is keyed by its ids as they are (readable in the delivered log)
MAX_KEY_CHARS = len(f"{MAX_ID_CHARS}::") + MAX_ID_CHARS + MAX_ALERT_ID_CHARS
#: the largest timestamp accepted (ms since the epoch; 2**53: exact in JSON readers that use doubles)
MAX_TS = 2**53
#: the default limit of one record, in bytes: the ``max.request.size`` of the job's Kafka sinks
#: (riskctl.flink.job.SINK_MAX_REQUEST_BYTES), so no alert the job writes is larger
DEFAULT_MAX_RECORD_BYTES = 1_048_576
ACTIONS = ("PASS", "REVIEW", "REJECT")


def id_key(user_id: str, item_id: str) -> str:
    """The deduplication key of an item of ``user_id``: ``<len(user_id)>:<user_id>:<item_id>`` up to
    :data:`MAX_KEY_CHARS` characters, else ``sha256:<hex>`` of that form's UTF-8.

    The length in front says where the user id ends, whatever either id holds: (``u1``, ``a:b``) is
    ``2:u1:a:b`` and (``u1:a``, ``b``) is ``4:u1:a:b``; a separator alone could be forged by a user id that
    holds it. A short key starts with a digit, so it is never a hashed one. Keys of before the user was part
    of them (the bare id) never equal one of these in practice (an alert id starts with its rule id and
    version, ``<len>:<user>:`` would need a rule id of digits and a version that is a user id): after an
    upgrade, an alert read again is delivered once more, nothing is dropped.
    """
    key = user_key(user_id, item_id)
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


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
    def key(self) -> str:
        """The deduplication key (:func:`id_key`: the user id and the item id): what is remembered as
        delivered, per channel."""
        return id_key(self.user_id, self.id)

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


def _text(
    doc: Mapping[str, Any],
    key: str,
    *,
    required: bool = True,
    where: str = "",
    max_chars: int | None = MAX_ID_CHARS,
) -> str | None:
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
    if max_chars is not None and len(value) > max_chars:
        msg = f"too long ({len(value)} characters, limit {max_chars})"
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
    alert_id = _text(doc, "alert_id", max_chars=None)  # see the module docstring
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
