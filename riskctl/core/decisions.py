"""Decision and alert records: what the engine emits, one decision per event plus any alerts.

Both are plain slotted objects with a ``to_dict()`` giving the JSON record written to the decisions and alerts
topics (and by ``riskctl replay``). Field by field:

Decision (``"kind": "decision"``): ``event_id``, ``user_id``, ``type`` (event type), ``ts`` (the event's own),
``action`` (REJECT over REVIEW over PASS, from active rules only), ``rules`` (fired active rules, by
priority), ``shadow`` (hits of shadow rules: recorded, never change the action), ``ruleset_version``, ``late``
(the event was older than one already seen for this user), ``too_late`` (more than the allowed lateness
behind: recorded by no feature and no pattern, see docs/engine.md; a field added after the first release,
always present), ``duplicate`` (the same event was decided before, within the dedup window: this one has its
action, no rules, and changed nothing; riskctl/core/dedup.py; added later, always present), ``ahead_ms``
(how far the event's ``ts`` was ahead of the clock it arrived by: the engine took it at that clock,
docs/engine.md; 0 when it was not; added later, always present).

Each fired rule (``FiredRule``): ``id``, ``version``, ``action``, ``evidence``: for a condition rule
``{"features": {name: value}, "fields": {"a.b": value}}`` (the event paths its condition reads); a sequence:
``{"match": {"steps": {step: [event ids]}, "start_ts", "end_ts", "events": {step: [{"event_id", "fields",
"features"}]}}}``, each matched event with what its step read, as it was when matched (docs/engine.md).

Alert (``"kind": "alert"``): ``alert_id`` (stable, for deduplication), ``user_id``, ``rule`` (a FiredRule),
``reason``, ``ts`` (event time at which it was raised), ``event_id`` (the event it is about, if any),
``trigger_event_id`` (the event that caused it, None for a timer), ``ruleset_version``. Reasons:

- ``timer``: a sequence with an absence completed when its wake-up time passed (nothing arrived in time);
- ``late``: a sequence completed by a late event (the decisions of the matched events are already out);
- ``late_threshold``: a late event made a condition rule true for a later, already decided event;
- ``rule_alert``: the rule fired on an event and has ``alert: true`` (the decision also names it).

Every ``alert_id`` comes from :func:`alert_id`: at most :data:`MAX_ALERT_ID_CHARS` characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from riskctl.core.expr import FEATURES_FIELD
from riskctl.core.jsoncodec import dumpb

PASS, REVIEW, REJECT = "PASS", "REVIEW", "REJECT"
#: the largest decision or alert record the job writes (its Kafka sinks' ``max.request.size`` is 1 MiB, with
#: the key and the record's overhead): see :func:`fit_record`
MAX_RECORD_BYTES = 1_000_000
_RANK = {PASS: 0, REVIEW: 1, REJECT: 2}
#: the longest ``alert_id``; the dispatcher's MAX_KEY_CHARS (riskctl.alerts.model) is made of it and the
#: longest user id, so every id the engine writes, with its user, is its own deduplication key, never a
#: digest of it. It is above the longest id of one event (a 64-character rule id, a
#: 10-digit version, ``late_threshold`` and a 256-character event id: 347 characters), so no ``rule_alert``,
#: ``late_threshold`` or one-event match changes form; a 256 bound would have changed those of long event ids
MAX_ALERT_ID_CHARS = 512
#: characters of the first event id kept in a shortened ``alert_id`` (a UUID has 36)
ALERT_ID_EVENT_CHARS = 64
#: hex digits of SHA-256 in a shortened ``alert_id`` (128 bits)
ALERT_ID_DIGEST_CHARS = 32


def alert_id(rule_id: str, version: int, reason: str, event_ids: list[str]) -> str:
    """The id of an alert of rule ``rule_id`` (``version``) for ``reason`` about ``event_ids`` (one event, or
    every event of a sequence's match, step by step): ``<rule>:<version>:<reason>:<id>:<id>...``.

    Beyond :data:`MAX_ALERT_ID_CHARS` characters (a step may hold 1,000 events of ids up to 256 characters:
    the whole reached megabytes, over the Kafka sinks' limit, in the record's key and value, in every
    deduplication key and in links), it is ``<rule>:<version>:<reason>:<first id, cut to 64>:<number of
    events>:<SHA-256 of the whole, 32 hex digits>``: at most 194 characters (a rule id has at most 64, a
    version 10 digits, a match 32 steps of at most 1,000 events).

    A function of the match alone, so the job, ``riskctl replay`` and a restarted job give the same match the
    same id, as deduplication needs; two matches that share their first event differ by the digest. An id
    within the bound keeps the form it had before the bound existed, so alerts delivered before an upgrade are
    not sent again; only ids over 512 characters changed form (such an alert, written again after the upgrade,
    is delivered once more).
    """
    whole = f"{rule_id}:{version}:{reason}:{':'.join(event_ids)}"
    if len(whole) <= MAX_ALERT_ID_CHARS:
        return whole
    digest = hashlib.sha256(whole.encode("utf-8", "surrogatepass")).hexdigest()[:ALERT_ID_DIGEST_CHARS]
    first = event_ids[0][:ALERT_ID_EVENT_CHARS]
    return f"{rule_id}:{version}:{reason}:{first}:{len(event_ids)}:{digest}"


def user_key(user_id: str, item_id: str) -> str:
    """``<len(user_id)>:<user_id>:<item_id>``: one item of one user, for whoever keys records by their ids.

    Event ids are unique only within a user (the sender chooses them), and alert ids are built from them, so
    an id alone may name two users' items. The length in front says where the user id ends, whatever either
    id holds: (``u1``, ``a:b``) is ``2:u1:a:b`` and (``u1:a``, ``b``) is ``4:u1:a:b``; a separator alone
    could be forged by a user id that holds it. It starts with a digit, unlike any id the engine writes. The
    alert dispatcher's deduplication key (:func:`riskctl.alerts.model.id_key`) and the console's case key
    (:func:`riskctl.store.migrations.case_key`) are this form, each bounded its own way.
    """
    return f"{len(user_id)}:{user_id}:{item_id}"


def stronger(a: str, b: str) -> str:
    """The stronger of two actions (REJECT > REVIEW > PASS)."""
    return a if _RANK[a] >= _RANK[b] else b


@dataclass(slots=True)
class FiredRule:
    """One rule that fired, with the values that made it fire."""

    id: str
    version: int
    action: str
    evidence: dict[str, Any] = field(default_factory=dict)

    # An __init__ of its own in each record made per event: the compiled core (riskctl/core/native.py)
    # compiles it, where the one @dataclass writes runs as Python code (bench/results/engine-issue14.md).
    def __init__(self, id: str, version: int, action: str, evidence: dict[str, Any] | None = None) -> None:  # noqa: A002
        self.id = id
        self.version = version
        self.action = action
        self.evidence = {} if evidence is None else evidence

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record."""
        return {"id": self.id, "version": self.version, "action": self.action, "evidence": self.evidence}


@dataclass(slots=True)
class Decision:
    """The decision for one event (exactly one per event)."""

    event_id: str
    user_id: str
    type: str
    ts: int
    action: str
    rules: list[FiredRule]
    shadow: list[FiredRule]
    ruleset_version: str
    late: bool = False
    too_late: bool = False
    duplicate: bool = False
    ahead_ms: int = 0

    def __init__(
        self,
        event_id: str,
        user_id: str,
        type: str,  # noqa: A002
        ts: int,
        action: str,
        rules: list[FiredRule],
        shadow: list[FiredRule],
        ruleset_version: str,
        late: bool = False,
        too_late: bool = False,
        duplicate: bool = False,
        ahead_ms: int = 0,
    ) -> None:
        self.event_id = event_id
        self.user_id = user_id
        self.type = type
        self.ts = ts
        self.action = action
        self.rules = rules
        self.shadow = shadow
        self.ruleset_version = ruleset_version
        self.late = late
        self.too_late = too_late
        self.duplicate = duplicate
        self.ahead_ms = ahead_ms

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record."""
        return {
            "kind": "decision",
            "event_id": self.event_id,
            "user_id": self.user_id,
            "type": self.type,
            "ts": self.ts,
            "action": self.action,
            "rules": [r.to_dict() for r in self.rules],
            "shadow": [r.to_dict() for r in self.shadow],
            "ruleset_version": self.ruleset_version,
            "late": self.late,
            "too_late": self.too_late,
            "duplicate": self.duplicate,
            "ahead_ms": self.ahead_ms,
        }


@dataclass(slots=True)
class Alert:
    """A rule hit that is not (only) part of a decision: see the module docstring for the reasons."""

    alert_id: str
    user_id: str
    rule: FiredRule
    reason: str
    ts: int
    ruleset_version: str
    event_id: str | None = None
    trigger_event_id: str | None = None
    shadow: bool = False

    def __init__(
        self,
        alert_id: str,
        user_id: str,
        rule: FiredRule,
        reason: str,
        ts: int,
        ruleset_version: str,
        event_id: str | None = None,
        trigger_event_id: str | None = None,
        shadow: bool = False,
    ) -> None:
        self.alert_id = alert_id
        self.user_id = user_id
        self.rule = rule
        self.reason = reason
        self.ts = ts
        self.ruleset_version = ruleset_version
        self.event_id = event_id
        self.trigger_event_id = trigger_event_id
        self.shadow = shadow

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record."""
        return {
            "kind": "alert",
            "alert_id": self.alert_id,
            "user_id": self.user_id,
            "reason": self.reason,
            "ts": self.ts,
            "rule": self.rule.to_dict(),
            "shadow": self.shadow,
            "event_id": self.event_id,
            "trigger_event_id": self.trigger_event_id,
            "ruleset_version": self.ruleset_version,
        }


@dataclass(slots=True)
class Result:
    """What one call of the engine produced: the decision (None for a timer), alerts, timers to register, and
    timers to delete (``cancelled``: deadlines that no longer guard anything; delete them before registering).
    """

    decision: Decision | None
    alerts: list[Alert]
    timers: list[int]
    cancelled: list[int]

    def __init__(
        self, decision: Decision | None, alerts: list[Alert], timers: list[int], cancelled: list[int]
    ) -> None:
        self.decision = decision
        self.alerts = alerts
        self.timers = timers
        self.cancelled = cancelled


#: one value an explanation shows: (its name, e.g. ``"device.id"``, and the path to it in the event)
FieldRead = tuple[str, tuple[str, ...]]


def field_reads(paths: Iterable[str]) -> tuple[FieldRead, ...]:
    """The reads of dotted event paths (``CompiledExpression.event_paths``), prepared once per rule."""
    return tuple((p, tuple(p.split("."))) for p in paths)


def read_fields(event: Mapping[str, Any], reads: tuple[FieldRead, ...]) -> dict[str, Any]:
    """``{name: value}`` of each read in ``event``; None where the path is missing or meets a non-mapping."""
    out: dict[str, Any] = {}
    for name, path in reads:
        value: Any = event
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class StepReads:
    """What a sequence step's condition reads: shown for each event the step matched."""

    name: str
    fields: tuple[FieldRead, ...]
    features: tuple[str, ...]


def when_evidence(
    event: Mapping[str, Any], features: dict[str, Any], reads: tuple[FieldRead, ...]
) -> dict[str, Any]:
    """A condition rule's evidence: the feature values it saw and the event fields its condition read."""
    return {"features": features, "fields": read_fields(event, reads)}


def match_evidence(match: Any, steps: tuple[StepReads, ...] = ()) -> dict[str, Any]:
    """The ``evidence.match`` part of a record for a pattern ``Match``.

    ``steps`` (from the rule) adds ``events``: per step, each matched event's id with the fields and the
    features (as they were when the event was matched) that the step's condition read.
    """
    ids = match.event_ids
    if isinstance(ids, Mapping):
        ids = {k: list(v) for k, v in ids.items()}
    out: dict[str, Any] = {"steps": ids, "start_ts": match.start_ts, "end_ts": match.end_ts}
    kept = getattr(match, "events", None)
    if steps and kept:
        out["events"] = {step.name: [_step_event(e, step) for e in kept.get(step.name, ())] for step in steps}
    return out


def _step_event(event: Mapping[str, Any], step: StepReads) -> dict[str, Any]:
    stamped = event.get(FEATURES_FIELD)
    values = stamped if isinstance(stamped, Mapping) else {}
    return {
        "event_id": event.get("event_id"),
        "fields": read_fields(event, step.fields),
        "features": {name: values.get(name) for name in step.features},
    }


def fit_record(doc: Mapping[str, Any], raw: bytes, limit: int = MAX_RECORD_BYTES) -> bytes:
    """``raw`` (``doc`` as JSON bytes) when it fits in ``limit`` bytes; else ``doc`` without its rules'
    evidence, each replaced by a note of why (``{"omitted": ...}``).

    Evidence holds the event's values that rules read, whole lists included, so many rules reading a large
    field could make one record larger than a Kafka sink accepts; the sink would then fail, and the job would
    restart on the same event, forever. The decision keeps what acts on the business (action, rules, versions)
    and says its evidence was dropped. What is left is bounded by the door's limits on ids and strings.
    """
    if len(raw) <= limit:
        return raw
    note = {"omitted": f"the record was {len(raw):,} bytes, over the limit of {limit:,}: evidence dropped"}

    def slim(rule: Any) -> Any:
        return {**rule, "evidence": note} if isinstance(rule, Mapping) else rule

    out = dict(doc)
    for name in ("rules", "shadow"):
        if isinstance(out.get(name), list):
            out[name] = [slim(r) for r in out[name]]
    if "rule" in out:
        out["rule"] = slim(out["rule"])
    return dumpb(out)
