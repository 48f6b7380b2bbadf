"""Routing by rule, action, kind, reason and severity."""

from __future__ import annotations

from typing import Any

from riskctl.alerts.model import AlertItem, FiredRuleRef
from riskctl.alerts.routing import route
from riskctl.alerts.settings import parse_config

CHANNELS = {n: {"type": "webhook", "url": f"http://127.0.0.1:9/{n}"} for n in ("a", "b", "c", "d")}


def config(routes: list[dict[str, Any]], **over: Any) -> Any:
    return parse_config({"channels": CHANNELS, "routes": routes, **over}, {})


def item(
    rule: str = "r1", action: str = "REVIEW", kind: str = "alert", reason: str = "rule_alert"
) -> AlertItem:
    return AlertItem("id", kind, "u", 0, reason, action, (FiredRuleRef(rule, 1, action),))


def test_every_matching_route_adds_its_channels_in_order_once() -> None:
    cfg = config(
        [
            {"match": {"actions": ["REJECT"]}, "channels": ["a", "b"]},
            {"match": {"rules": ["card_*"]}, "channels": ["b", "c"]},
            {"match": {}, "channels": ["d"]},
        ]
    )
    assert route(cfg, item("card_test", "REJECT")).channels == ("a", "b", "c", "d")
    assert route(cfg, item("card_test", "REVIEW")).channels == ("b", "c", "d")
    assert route(cfg, item("login", "REVIEW")).channels == ("d",)


def test_stop_ends_the_walk() -> None:
    cfg = config(
        [{"match": {"rules": ["shadow_*"]}, "channels": [], "stop": True}, {"match": {}, "channels": ["a"]}]
    )
    routed = route(cfg, item("shadow_x"))
    assert routed.channels == () and routed.matched
    assert route(cfg, item("live")).channels == ("a",)


def test_default_channels_only_when_no_route_matched() -> None:
    cfg = config([{"match": {"kinds": ["review"]}, "channels": ["a"]}], default_channels=["c"])
    assert route(cfg, item(kind="review")).channels == ("a",)
    routed = route(cfg, item(kind="alert"))
    assert routed.channels == ("c",) and not routed.matched


def test_severity_from_rule_then_pattern_then_action_then_default() -> None:
    cfg = config(
        [
            {"match": {"min_severity": "high"}, "channels": ["a"]},
            {"match": {"reasons": ["timer"]}, "channels": ["b"]},
        ],
        severity={
            "default": "low",
            "actions": {"REJECT": "high"},
            "rules": {"ato": "critical", "card_*": "medium"},
        },
    )
    assert route(cfg, item("ato", "PASS")).severity == "critical"
    assert route(cfg, item("ato", "PASS")).channels == ("a",)
    assert (
        route(cfg, item("card_x", "REJECT")).severity == "medium"
    )  # the rule's severity wins over the action's
    assert route(cfg, item("card_x", "REJECT")).channels == ()
    assert route(cfg, item("other", "REJECT")).severity == "high"
    assert route(cfg, item("other", "REVIEW")).severity == "low"  # not in severity.actions: the default
    assert route(cfg, item("other", "REVIEW", reason="timer")).channels == ("b",)


def test_without_severity_actions_reject_is_high_review_medium_pass_low() -> None:
    cfg = config([{"match": {}, "channels": ["a"]}])
    got = [route(cfg, item(action=a)).severity for a in ("REJECT", "REVIEW", "PASS")]
    assert got == ["high", "medium", "low"]


def test_an_item_with_several_rules_takes_the_highest_severity_and_any_rule_matches() -> None:
    cfg = config(
        [{"match": {"rules": ["b"]}, "channels": ["a"]}], severity={"rules": {"a": "low", "b": "critical"}}
    )
    it = AlertItem(
        "x",
        "review",
        "u",
        0,
        "review",
        "REVIEW",
        (FiredRuleRef("a", 1, "REVIEW"), FiredRuleRef("b", 1, "PASS")),
    )
    routed = route(cfg, it)
    assert routed.severity == "critical" and routed.channels == ("a",)
