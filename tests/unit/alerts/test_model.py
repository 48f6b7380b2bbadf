"""Parsing records into items, and every hostile record refused with its field and reason."""

from __future__ import annotations

import pytest

from riskctl.alerts.model import MAX_DEPTH, MAX_ID_CHARS, BadRecord, parse_item
from tests.unit.alerts.conftest import alert_doc, raw


def test_an_alert_of_the_job_becomes_an_item() -> None:
    item = parse_item(raw(alert_doc()))
    assert item is not None
    assert (item.id, item.kind, item.user_id, item.action, item.rule.id, item.rule.version) == (
        "transfer_velocity:3:rule_alert:e1",
        "alert",
        "u1",
        "REVIEW",
        "transfer_velocity",
        3,
    )
    assert item.rule.evidence["features"] == {"sum_5m": 61000}
    assert item.to_dict()["rules"][0]["evidence"]["fields"] == {"amount": 9000}


def test_the_record_written_by_the_engine_parses() -> None:
    from riskctl.core.decisions import Alert, FiredRule

    alert = Alert(
        "a1", "u9", FiredRule("r", 1, "REJECT", {"features": {"n": 3}}), "timer", 5, "rs", "e9", None
    )
    item = parse_item(raw(alert.to_dict()))
    assert item is not None and item.id == "a1" and item.reason == "timer" and item.trigger_event_id is None


def test_a_review_decision_becomes_an_item_and_other_decisions_are_skipped() -> None:
    decision = {
        "kind": "decision",
        "event_id": "e7",
        "user_id": "u7",
        "type": "transfer",
        "ts": 10,
        "action": "REVIEW",
        "rules": [
            {"id": "a", "version": 1, "action": "REVIEW", "evidence": {}},
            {"id": "b", "version": 2, "action": "PASS", "evidence": {"features": {"x": 1}}},
        ],
        "shadow": [],
        "ruleset_version": "rs",
    }
    item = parse_item(raw(decision))
    assert item is not None
    assert (item.id, item.kind, item.event_id, [r.id for r in item.rules]) == (
        "review:e7",
        "review",
        "e7",
        ["a", "b"],
    )
    assert parse_item(raw({**decision, "action": "PASS"})) is None
    assert parse_item(raw({**decision, "action": "REJECT"})) is None


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        (None, None, "tombstone"),
        (b"x" * 70_000, None, "too large (70000 bytes, limit 65536)"),
        (b'{"kind": "alert", "user_id": "\xff"}', None, "not valid UTF-8 (byte 30)"),
        (b"not json", None, "not JSON"),
        (b"[1, 2]", None, "must be a JSON object, got list"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), None, "nested deeper than 16"),
        (b'{"kind": "alert"' + b', "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", None, "nested deeper"),
        (raw({"kind": "nope"}), "kind", "must be 'alert' or 'decision'"),
        (raw({"alert_id": "x"}), "kind", "missing"),
        (raw(alert_doc(alert_id=None)), "alert_id", "missing"),
        (raw(alert_doc(alert_id="")), "alert_id", "must not be empty"),
        (raw(alert_doc(alert_id=12)), "alert_id", "must be a string, got int"),
        (raw(alert_doc(user_id="u" * (MAX_ID_CHARS + 1))), "user_id", "too long (257 characters, limit 256)"),
        (raw(alert_doc(ts=2**60)), "ts", "out of range"),
        (
            b'{"kind":"alert","alert_id":"a","user_id":"u","reason":"r","ts":' + b"9" * 5000 + b"}",
            None,
            "not JSON",
        ),
        (raw(alert_doc(ts=True)), "ts", "must be an integer, got bool"),
        (
            raw(alert_doc(ts=2**63)).replace(b"9223372036854775808", b"18446744073709551616"),
            "ts",
            "got float",
        ),
        (raw(alert_doc(ts=1)).replace(b'"ts":1', b'"ts":1e400'), None, "not JSON"),
        (raw(alert_doc(ts="5")), "ts", "must be an integer, got str"),
        (raw(alert_doc(rule=None)), "rule", "must be an object, got NoneType"),
        (raw(alert_doc(rule={"version": 1, "action": "PASS"})), "rule.id", "missing"),
        (raw(alert_doc(rule={"id": "r", "version": 1, "action": "BLOCK"})), "rule.action", "must be one of"),
        (raw(alert_doc(rule={"id": "r", "version": -1, "action": "PASS"})), "rule.version", "out of range"),
        (
            raw(alert_doc(rule={"id": "r", "version": 1, "action": "PASS", "evidence": [1]})),
            "rule.evidence",
            "object",
        ),
        (raw(alert_doc(shadow="yes")), "shadow", "true or false"),
        (
            raw({"kind": "decision", "action": "REVIEW", "event_id": "e", "rules": []}),
            "rules",
            "non-empty list",
        ),
        (raw({"kind": "decision", "action": "review"}), "action", "must be one of"),
    ],
)
def test_a_hostile_record_is_refused_with_field_and_reason(
    value: bytes | None, field: str | None, reason: str
) -> None:
    with pytest.raises(BadRecord) as info:
        parse_item(value)
    assert info.value.field == field
    assert reason in info.value.reason


def test_huge_strings_in_the_evidence_are_kept_within_the_record_limit() -> None:
    doc = alert_doc(
        rule={"id": "r", "version": 1, "action": "PASS", "evidence": {"features": {"s": "x" * 60_000}}}
    )
    item = parse_item(raw(doc))
    assert item is not None and len(item.rule.evidence["features"]["s"]) == 60_000
    with pytest.raises(BadRecord, match="too large"):
        parse_item(raw(doc), max_bytes=1024)
