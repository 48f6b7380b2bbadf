"""Parsing records into items, and every hostile record refused with its field and reason."""

from __future__ import annotations

import hashlib

import pytest

from riskctl.alerts.model import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_DEPTH,
    MAX_ID_CHARS,
    MAX_KEY_CHARS,
    BadRecord,
    id_key,
    parse_item,
)
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
        (b"x" * 1_100_000, None, "too large (1100000 bytes, limit 1048576)"),
        (b'{"kind": "alert", "user_id": "\xff"}', None, "not valid UTF-8 (byte 30)"),
        (b"not json", None, "not JSON"),
        (b"[1, 2]", None, "must be a JSON object, got list"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), None, "nested deeper than 20"),
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


def test_the_limits_cover_what_the_job_writes() -> None:
    from riskctl.core.door import DEFAULT_LIMITS
    from riskctl.core.events import MAX_ID_LENGTH
    from riskctl.core.stored import MAX_STORED_DEPTH
    from riskctl.flink.job import SINK_MAX_REQUEST_BYTES

    # an event as deep as the job accepts, its field values 4 levels deeper in a decision's evidence; a
    # sequence's evidence keeps values of at most MAX_STORED_DEPTH levels, 9 levels down in a decision
    assert MAX_DEPTH == DEFAULT_LIMITS.max_depth + 4 == 20
    assert 9 + MAX_STORED_DEPTH < MAX_DEPTH
    # no record the job's sinks can write is larger
    assert DEFAULT_MAX_RECORD_BYTES == SINK_MAX_REQUEST_BYTES == 1_048_576
    # ids the job reads are kept to the same limit as the other ids here
    assert MAX_ID_LENGTH == MAX_ID_CHARS


def test_an_alert_id_is_bounded_by_the_record_only_and_a_long_one_is_keyed_by_its_hash() -> None:
    ids = ["%064x" % i for i in range(200)]  # a sequence's late alert over 200 events with SHA-256 ids
    long_id = "brute_force_login:1:late:" + ":".join(ids)
    item = parse_item(raw(alert_doc(alert_id=long_id, reason="late")))
    assert item is not None and item.id == long_id and len(long_id) > 13_000
    keyed = f"2:u1:{long_id}"
    assert item.key == id_key("u1", long_id) == "sha256:" + hashlib.sha256(keyed.encode()).hexdigest()
    other = parse_item(raw(alert_doc(alert_id=long_id[:-1] + "f", reason="late")))
    assert other is not None and other.key != item.key
    short = parse_item(raw(alert_doc()))
    assert short is not None and short.id == "transfer_velocity:3:rule_alert:e1"
    assert short.key == f"2:u1:{short.id}"
    fits = "x" * (MAX_KEY_CHARS - len("1:u:"))
    assert id_key("u", fits) == f"1:u:{fits}" and len(id_key("u", fits + "x")) == 71
    # the other ids keep their limit: the job refuses longer ones at its door
    for name in ("user_id", "event_id", "reason", "ruleset_version"):
        with pytest.raises(BadRecord, match="limit 256"):
            parse_item(raw(alert_doc(**{name: "u" * 257})))
