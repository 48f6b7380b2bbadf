"""Rule text a reviewer reads as it runs: hidden characters, text not in NFC and mixed-script words are
refused with the field (riskctl/core/rule_text.py; docs/rules.md, "Text a reviewer reads")."""

from __future__ import annotations

from typing import Any

import pytest

from riskctl.core.engine import Engine
from riskctl.core.errors import RuleSetError
from riskctl.core.rule_document import parse_rule
from riskctl.core.rules import RuleSet
from riskctl.core.state import InMemoryKeyedState


def refusal(**doc: Any) -> tuple[str | None, str]:
    with pytest.raises(RuleSetError) as info:
        parse_rule({"id": "r", "action": "REVIEW", **doc})
    err = info.value.errors[0]
    return err.field, err.reason


@pytest.mark.parametrize(
    ("doc", "field", "reason"),
    [
        # Trojan Source: a right-to-left override reorders what the reviewer sees
        (
            {"when": 'event.role != "admin\u202e \u2066// check\u2069 \u2066"'},
            "when",
            "U+202E RIGHT-TO-LEFT OVERRIDE",
        ),
        # event.country == "CN" with a zero-width space never matches, and reads as "CN"
        ({"when": 'event.country == "CN\u200b"'}, "when", "U+200B ZERO WIDTH SPACE, at character 21"),
        ({"when": "true", "description": "harmless\u202e"}, "description", "bidirectional control"),
        ({"when": "true", "tags": ["fraud\u2060"]}, "tags[0]", "U+2060 WORD JOINER"),
        ({"when": "true", "tags": ["a\x1b[2J"]}, "tags[0]", "control character, U+001B"),
        ({"when": "true", "tags": ["x\U000e0041"]}, "tags[0]", "U+E0041 TAG LATIN CAPITAL LETTER A"),
        ({"when": "true", "applies_to": "login\u200d"}, "applies_to", "U+200D ZERO WIDTH JOINER"),
        (
            {
                "when": "f > 1",
                "features": {"f": {"kind": "count", "window": "1h", "filter": "event.ok\u00ad"}},
            },
            "features.f.filter",
            "U+00AD SOFT HYPHEN",
        ),
        ({"when": "true", "features\u200b": {}}, "features\\u200b", "ZERO WIDTH SPACE"),
        # looks like "café", never equals it
        ({"when": 'event.city == "cafe\u0301"'}, "when", "not in Unicode's composed form (NFC)"),
        # a Cyrillic С: looks like "CN"
        ({"when": 'event.country == "\u0421N"'}, "when", "the word 'СN' mixes scripts (Cyrillic, Latin)"),
        ({"when": "true", "applies_to": ["login", "l\u043egin"]}, "applies_to[1]", "mixes scripts"),
        (
            {"when": "f", "features": {"f": {"kind": "first_seen", "field": "c\u043euntry"}}},
            "features.f.field",
            "mixes scripts",
        ),
    ],
)
def test_text_that_reads_otherwise_than_it_runs_is_refused_with_the_field(
    doc: dict[str, Any], field: str, reason: str
) -> None:
    got_field, got_reason = refusal(**doc)
    assert got_field == field
    assert reason in got_reason


def test_ordinary_text_of_any_script_is_accepted() -> None:
    rule = parse_rule(
        {
            "id": "r",
            "action": "REVIEW",
            # prose may hold the joiners and emoji selectors its script needs
            "description": "Paiement suspect \u2014 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
            " \u2764\ufe0f\n\tsecond line",
            "tags": ["caf\u00e9", "\u6771\u4eac"],
            "when": 'event.city in ["Москва", "東京タワー", "Москва City", "Zürich"] and event.n != "a\\tb"',
        }
    )
    assert rule.description.startswith("Paiement")


def test_a_hidden_character_is_still_expressible_as_a_visible_escape() -> None:
    # "\u200b" written as an escape is what the condition means, visibly; it matches the raw character
    rule = parse_rule(
        {"id": "zw", "action": "REVIEW", "when": 'event.country == "CN\\u200b" or event.x == "\\U0001F600"'}
    )
    engine = Engine(RuleSet([rule]), lateness=0)
    hit = {"event_id": "1", "user_id": "u", "type": "t", "ts": 1, "country": "CN\u200b"}
    miss = {"event_id": "2", "user_id": "u", "type": "t", "ts": 2, "country": "CN"}
    assert engine.process(InMemoryKeyedState(), hit).decision.action == "REVIEW"
    assert engine.process(InMemoryKeyedState(), miss).decision.action == "PASS"
    assert parse_rule({"id": "e", "action": "REVIEW", "when": 'event.x == "\\U0001F600"'})
    for bad in ('"\\u20"', '"\\ud800"', '"\\U00110000"'):
        field, reason = refusal(when=f"event.x == {bad}")
        assert field == "when"
        assert "hexadecimal digits" in reason or "not a Unicode character" in reason
