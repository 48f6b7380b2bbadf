"""Every alert and REVIEW decision the engine produces for the simulator's traffic over ``rules/`` parses,
routes and renders (the job writes these same records: ``Alert.to_dict()``, ``Decision.to_dict()``).
"""

from __future__ import annotations

import orjson

from riskctl.alerts.model import parse_item
from riskctl.alerts.routing import route
from riskctl.alerts.settings import DEFAULT_TEMPLATES, parse_config
from riskctl.alerts.templates import STYLE, context, message
from riskctl.config import PROJECT_ROOT
from riskctl.core.decisions import Alert
from riskctl.core.engine import Engine
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
