"""Every alert and REVIEW decision the engine produces for the simulator's traffic over ``rules/`` parses,
routes and renders (the job writes these same records: ``Alert.to_dict()``, ``Decision.to_dict()``).
"""

from __future__ import annotations

from typing import Any

import orjson

from riskctl.alerts.model import parse_item
from riskctl.alerts.routing import route
from riskctl.alerts.settings import DEFAULT_TEMPLATES, parse_config
from riskctl.alerts.templates import STYLE, context, message
from riskctl.config import PROJECT_ROOT
from riskctl.core.decisions import MAX_ALERT_ID_CHARS, Alert
from riskctl.core.door import DEFAULT_LIMITS, decode
from riskctl.core.engine import Engine
from riskctl.core.events import MAX_ID_LENGTH, parse_event
from riskctl.core.jsondoc import json_depth_exceeds
from riskctl.core.rules import load_rules
from riskctl.core.runner import LocalRunner
from riskctl.sim.generator import SimConfig, generate


def test_the_engines_alerts_and_review_decisions_parse_route_and_render() -> None:
    events, _ = generate(SimConfig(users=100, rate=100, duration_s=40, attack_fraction=0.5, seed=7))
    runner = LocalRunner(Engine(load_rules(PROJECT_ROOT / "rules"), lateness=5000))
    records = [r for e in events for r in runner.feed(e)] + list(runner.finish())
    alerts = [r for r in records if isinstance(r, Alert)]
    reviews = [r for r in records if not isinstance(r, Alert) and r.action == "REVIEW"]
    assert len(alerts) >= 3 and len(reviews) >= 3, (len(alerts), len(reviews))
    cfg = parse_config(
        {
            "channels": {
                k: {"type": k, "url": "http://127.0.0.1:9/x"} for k in ("webhook", "dingtalk", "slack")
            },
            "default_channels": ["webhook", "dingtalk", "slack"],
            "link": "https://review/{alert_id}",
        },
        {},
    )
    explained = []
    for record in alerts + reviews:
        item = parse_item(orjson.dumps(record.to_dict()))
        assert item is not None
        routed = route(cfg, item)
        for kind in ("webhook", "dingtalk", "slack"):
            title, body = message(
                DEFAULT_TEMPLATES[kind], context(item, routed.severity, "https://r", STYLE[kind])
            )
            assert item.rule.id.replace("_", "\\_") in body or item.rule.id in body
            assert title
        explained.append(context(item, routed.severity, "", "text")["explanation"])
    # the values that made the rules fire reach the message: fields/features and sequence steps
    assert any(" = " in text for text in explained)
    assert any("step " in text and " = " in text.partition("step ")[2] for text in explained)


def _alerts_of(tmp_path: Any, rule: str, events: list[dict[str, Any]]) -> list[Alert]:
    """The alerts the engine writes for ``events`` (each accepted at the job's door first) under ``rule``."""
    (tmp_path / "r.yaml").write_text(rule)
    runner = LocalRunner(Engine(load_rules(tmp_path / "r.yaml"), lateness=0))
    out: list[Any] = []
    for event in events:
        out += runner.feed(parse_event(orjson.dumps(decode(orjson.dumps(event)))))
    out += runner.finish()
    return [r for r in out if isinstance(r, Alert)]


VPN = 'id: vpn_login\naction: REVIEW\nalert: true\nwhen: contains(event.tags, "vpn")\n'
VPN_SEQUENCE = (
    "id: vpn_twice\naction: REVIEW\nalert: true\nsequence:\n  within: 5m\n  steps:\n"
    '    - name: first\n      when: contains(event.tags, "vpn") and event.meta != "x"\n'
    '    - name: second\n      when: contains(event.tags, "vpn")\n'
)
NO_2FA = (
    "id: no_2fa\naction: REVIEW\nsequence:\n  within: 5m\n  steps:\n"
    '    - name: logins\n      when: event.type == "login"\n      times: 3\n'
    '    - name: second_factor\n      when: event.type == "2fa"\n      absent: true\n'
)


def _event(event_id: str, tags: list[Any], ts: int = 1) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": "u", "type": "login", "ts": ts, "tags": tags}


def test_an_alert_for_an_event_at_the_jobs_id_limit_is_delivered(tmp_path: Any) -> None:
    (a,) = _alerts_of(tmp_path, VPN, [_event("e" * MAX_ID_LENGTH, ["vpn"])])
    assert len(a.alert_id) > MAX_ID_LENGTH
    item = parse_item(orjson.dumps(a.to_dict()))
    assert item is not None and item.id == a.alert_id


def test_a_timer_alert_over_events_at_the_id_limit_is_delivered(tmp_path: Any) -> None:
    events = [{**_event(f"{i}" * MAX_ID_LENGTH, []), "ts": i} for i in range(1, 4)]
    (a,) = _alerts_of(tmp_path, NO_2FA, events)
    assert a.reason == "timer" and len(a.alert_id) <= MAX_ALERT_ID_CHARS  # shortened: riskctl.core.decisions
    item = parse_item(orjson.dumps(a.to_dict()))
    assert item is not None and item.id == a.alert_id
    assert item.key == f"{len(a.user_id)}:{a.user_id}:{a.alert_id}"  # as it is, not hashed


def test_an_alert_and_a_decision_for_an_event_at_the_jobs_depth_limit_are_delivered(tmp_path: Any) -> None:
    nested: Any = []
    for _ in range(DEFAULT_LIMITS.max_depth - 3):  # with the event and its tags list: max_depth levels
        nested = [nested]
    event = _event("e1", ["vpn", nested])
    assert json_depth_exceeds(orjson.dumps(event).decode(), DEFAULT_LIMITS.max_depth) is None
    (tmp_path / "r.yaml").write_text(VPN)
    runner = LocalRunner(Engine(load_rules(tmp_path / "r.yaml"), lateness=0))
    records = list(runner.feed(parse_event(orjson.dumps(decode(orjson.dumps(event))))))
    assert {type(r).__name__ for r in records} == {"Alert", "Decision"}
    for record in records:  # the decision is REVIEW: delivered with review_decisions on
        item = parse_item(orjson.dumps(record.to_dict()))
        assert item is not None and item.rule.id == "vpn_login", record
    # a sequence keeps only small values (riskctl.core.stored): its records are shallower
    meta: Any = {"a": {"b": {"c": [1]}}}
    events = [{**_event("e1", ["vpn"]), "meta": meta}, _event("e2", ["vpn"], 2)]
    (a,) = _alerts_of(tmp_path, VPN_SEQUENCE, events)
    assert a.rule.evidence["match"]["events"]["first"][0]["fields"]["meta"] == meta
    assert parse_item(orjson.dumps(a.to_dict())) is not None


def test_an_alert_for_an_event_at_the_jobs_size_limit_is_delivered(tmp_path: Any) -> None:
    event = _event("e1", ["vpn"] + ["x" * 200] * 310)
    event["tags"].append("y" * (DEFAULT_LIMITS.max_event_bytes - len(orjson.dumps(event)) - 3))
    assert len(orjson.dumps(event)) == DEFAULT_LIMITS.max_event_bytes
    (a,) = _alerts_of(tmp_path, VPN, [event])
    record = orjson.dumps(a.to_dict())
    assert len(record) > DEFAULT_LIMITS.max_event_bytes
    assert parse_item(record) is not None
