"""Explanations: every hit carries the event fields and features its condition read, with their values.

Condition rules show ``fields`` (dotted event paths) beside ``features``; sequence rules show, per step,
each matched event with what the step read of it, as it was when the event was matched; shadow hits, alerts
and late re-checks are explained the same way.
"""

from __future__ import annotations

from riskctl.core.expr import CompiledExpression
from riskctl.testing import T0, RuleRunner

S = 1000


def ev(eid: str, t: int, etype: str = "transfer", user: str = "u", **fields: object) -> dict[str, object]:
    return {"event_id": eid, "user_id": user, "type": etype, "ts": T0 + t, **fields}


def test_event_paths_are_what_the_condition_reads_of_the_event() -> None:
    expr = CompiledExpression(
        'event.amount > 10 and event.device.id != "x" and n > 1 and event.device.id != "y"', features=["n"]
    )
    assert expr.event_paths == ("amount", "device.id")
    assert CompiledExpression("n > 1", features=["n"]).event_paths == ()


def test_a_condition_rule_shows_nested_and_missing_fields_and_its_features() -> None:
    rules = """
id: risky
action: REVIEW
features:
  n: {kind: count, window: 1h}
when: event.amount >= 100 and n >= 2 and (event.device.os == "rooted" or event.note == null)
"""
    out = RuleRunner(rules).run([ev("a", 0, amount=5), ev("b", S, amount=150, device={"os": "rooted"})])
    (hit,) = out.decisions["b"].rules
    assert hit.evidence == {
        "features": {"n": 2},
        "fields": {"amount": 150, "device.os": "rooted", "note": None},
    }


def test_shadow_hits_are_explained_like_active_ones() -> None:
    rules = """
id: big
action: REJECT
status: shadow
when: event.amount > 1000
"""
    d = RuleRunner(rules).run([ev("a", 0, amount=5000)]).decisions["a"]
    assert d.action == "PASS" and d.rules == []
    assert d.to_dict()["shadow"][0]["evidence"] == {"features": {}, "fields": {"amount": 5000}}


SEQ = """
id: drain
action: REJECT
features:
  new_ip: {kind: first_seen, field: ip, horizon: 1d, filter: 'event.type == "login"'}
sequence:
  within: 10m
  steps:
    - name: login
      when: event.type == "login" and new_ip == true and event.geo.country != "FR"
    - name: big
      when: event.type == "transfer" and event.amount >= 1000
      times: 2
"""


def test_each_step_shows_its_events_with_what_made_them_match_at_the_time() -> None:
    out = RuleRunner(SEQ).run(
        [
            ev("l1", 0, "login", ip="1.1.1.1", geo={"country": "FR"}),  # known country: not a start
            ev("l2", S, "login", ip="2.2.2.2", geo={"country": "NG"}),
            ev("t1", 2 * S, amount=1500, geo={"country": "NG"}),
            ev("t2", 3 * S, amount=2000),
        ]
    )
    (hit,) = out.decisions["t2"].rules
    match = hit.evidence["match"]
    assert match["steps"] == {"login": ["l2"], "big": ["t1", "t2"]}
    assert match["events"] == {
        "login": [
            {
                "event_id": "l2",
                "fields": {"geo.country": "NG", "type": "login"},
                # new_ip was true at the login; at the transfer it has no value of its own
                "features": {"new_ip": True},
            }
        ],
        "big": [
            {"event_id": "t1", "fields": {"amount": 1500, "type": "transfer"}, "features": {}},
            {"event_id": "t2", "fields": {"amount": 2000, "type": "transfer"}, "features": {}},
        ],
    }
    assert "features" not in hit.evidence


def test_an_alert_carries_the_explanation_of_its_rule() -> None:
    rules = """
id: no_confirm
action: REVIEW
sequence:
  within: 1m
  steps:
    - name: big
      when: event.type == "transfer" and event.amount >= 500
    - name: confirm
      when: event.type == "confirm"
      absent: true
"""
    out = RuleRunner(rules).run([ev("t", 0, amount=900)])
    (alert,) = out.alerts
    assert alert.reason == "timer"
    assert alert.rule.evidence["match"]["events"] == {
        "big": [{"event_id": "t", "fields": {"amount": 900, "type": "transfer"}, "features": {}}]
    }


def test_a_record_over_the_sink_limit_keeps_its_decision_and_drops_its_evidence() -> None:
    """Rules that read a large field (here a 60 KB list) put it in every hit's evidence; enough of them would
    make the decision larger than the job's Kafka sinks accept, and the job would restart on that event."""
    import orjson

    from riskctl.core.decisions import MAX_RECORD_BYTES, fit_record
    from riskctl.core.engine import Engine
    from riskctl.core.rules import RuleSet, parse_rule
    from riskctl.core.state import InMemoryKeyedState

    rules = [
        parse_rule({"id": f"vpn{i}", "action": "REVIEW", "when": 'contains(event.tags, "vpn")'})
        for i in range(20)
    ]
    event = {"event_id": "e1", "user_id": "u1", "type": "login", "ts": 1, "tags": ["vpn"] + ["x" * 200] * 290}
    decision = Engine(RuleSet(rules)).process(InMemoryKeyedState(), event).decision
    assert decision is not None
    doc = decision.to_dict()
    raw = orjson.dumps(doc)
    assert len(raw) > MAX_RECORD_BYTES  # 20 rules x ~60 KB of evidence
    fitted = orjson.loads(fit_record(doc, raw))
    assert len(fit_record(doc, raw)) < 10_000
    assert fitted["action"] == "REVIEW" and [r["id"] for r in fitted["rules"]] == [
        r["id"] for r in doc["rules"]
    ]
    assert len(fitted["rules"]) == 20
    assert all("evidence dropped" in r["evidence"]["omitted"] for r in fitted["rules"])
    assert fit_record(doc, raw, limit=len(raw)) is raw  # within the limit: the same bytes


def test_an_alert_over_the_limit_keeps_its_ids_and_drops_its_evidence() -> None:
    import orjson

    from riskctl.core.decisions import Alert, FiredRule, fit_record

    alert = Alert(
        "a1", "u1", FiredRule("r", 2, "REVIEW", {"fields": {"tags": ["x" * 100] * 100}}), "timer", 5, "v"
    )
    doc = alert.to_dict()
    fitted = orjson.loads(fit_record(doc, orjson.dumps(doc), limit=1_000))
    assert (fitted["alert_id"], fitted["rule"]["id"], fitted["rule"]["version"]) == ("a1", "r", 2)
    assert "evidence dropped" in fitted["rule"]["evidence"]["omitted"]
