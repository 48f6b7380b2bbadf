"""The rule editor's form: documents built from fields, errors of the rules' validator put at their field."""

from __future__ import annotations

from riskctl.console.forms import GENERAL, MAX_FIELD_CHARS, fields_from_document, validate_form

GOOD = {
    "id": "big",
    "action": "REVIEW",
    "priority": "10",
    "when": "event.amount > 100",
    "applies_to": "[transfer]",
}


def test_a_valid_form_builds_the_document() -> None:
    draft = validate_form(GOOD)
    assert draft.ok, draft.errors
    assert draft.document == {
        "id": "big",
        "action": "REVIEW",
        "priority": 10,
        "when": "event.amount > 100",
        "applies_to": ["transfer"],
    }


def test_errors_land_at_their_field() -> None:
    draft = validate_form(
        {**GOOD, "action": "REJCT", "priority": "high", "features": "n: {kind: count, window: 5 parsecs}"}
    )
    assert not draft.ok
    assert set(draft.errors) == {"action", "priority", "features"}
    assert "REJECT" in draft.errors["action"][0]
    assert draft.errors["features"][0].startswith("features.n")


def test_yaml_errors_and_limits_are_per_field() -> None:
    draft = validate_form({**GOOD, "tags": "[a, b", "sequence": "[" * 500 + "]" * 500})
    assert set(draft.errors) == {"tags", "sequence"}
    assert validate_form({**GOOD, "description": "x" * (MAX_FIELD_CHARS + 1)}).errors.keys() == {
        "description"
    }
    assert set(validate_form({**GOOD, "tags": "a\n---\nb"}).errors) == {"tags"}


def test_missing_fields_and_non_text_values() -> None:
    draft = validate_form({"id": "x", "action": ["REJECT"]})  # a list where a text is expected: ignored
    assert not draft.ok
    assert "when" in draft.errors or GENERAL in draft.errors


def test_editing_fixes_the_id() -> None:
    draft = validate_form({**GOOD, "id": "other"}, rule_id="big")
    assert draft.ok and draft.document["id"] == "big"


def test_round_trip_of_a_stored_document() -> None:
    doc = {
        "id": "seq",
        "version": 3,
        "status": "shadow",
        "action": "REJECT",
        "features": {"fails": {"kind": "count", "window": "10m", "filter": "event.type == 'login'"}},
        "when": "fails >= 3",
        "tags": ["ato"],
    }
    fields = fields_from_document(doc)
    draft = validate_form(fields)
    assert draft.ok, draft.errors
    assert draft.document == {k: v for k, v in doc.items() if k != "version"}
