"""Hostile rules (issue 11, item 5): every rule input path refuses them quickly, with field and reason.

The corpus lives in ``hostile_rules/`` (one file per attack, run as they are by ``riskctl rules validate``);
cases too large to keep in the repository are generated here. No test asserts a duration: each case runs
under :func:`within`, so a hang (or a billion-laughs expansion) fails the test after a few seconds instead of
stalling the suite. How long ``rules validate`` takes on each file: ``bench/hostile_rules.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from riskctl.core.errors import ExpressionError, RuleSetError
from riskctl.core.expr import (
    MAX_DEGREE,
    MAX_RESULT_BITS,
    MAX_STRING,
    compile_condition,
    compile_step_condition,
    expression_cost,
)
from riskctl.core.jsondoc import MAX_JSON_DEPTH, json_depth_exceeds, load_json_document
from riskctl.core.rules import (
    MAX_RULE_TEXT,
    MAX_SEQUENCE_COST,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    load_rules,
    load_rules_text,
    parse_rule,
    rule_from_json,
)
from tests.helpers import HOSTILE_RULES, run_riskctl, within

CORPUS = HOSTILE_RULES


def refusal(fn: Callable[[], Any]) -> RuleSetError:
    """The RuleSetError that ``fn`` raises (nothing else, and not a success), within the timeout."""
    with pytest.raises(RuleSetError) as info:
        within(fn)
    return info.value


# file -> (field, rule id, words of the reason); the rule id is None when the text is refused before any rule
# is read (the id itself may be the attack)
CASES: dict[str, tuple[str | None, str | None, tuple[str, ...]]] = {
    "billion_laughs_id.yaml": ("x_anchors.a0", None, ("anchors (&a0) are not allowed", "line 2")),
    "billion_laughs_description.yaml": ("description.x_anchors.a0", None, ("anchors (&a0)", "line 6")),
    "alias_only.yaml": (None, None, ("aliases (*condition) are not allowed", "line 3")),
    "circular_sequence.yaml": ("sequence", None, ("anchors (&seq) are not allowed",)),
    "nested_500.yaml": ("description", None, (f"nested deeper than {MAX_YAML_DEPTH} levels",)),
    "deep_flow_100k.yaml": ("tags", None, (f"nested deeper than {MAX_YAML_DEPTH} levels",)),
    "duplicate_status.yaml": ("status", None, ("duplicate key 'status'", "first given on line 3", "line 5")),
    "non_string_key.yaml": ("features", None, ("keys must be text", "'1'")),
    "yes_key.yaml": (None, None, ("keys must be text", "'on'")),
    "merge_key.yaml": (None, None, ("merge keys ('<<') are not allowed",)),
    "python_tag.yaml": (None, None, ("not valid YAML", "python/object/apply")),
    "bad_timestamp.yaml": (None, None, ("not valid YAML", "month must be in 1..12")),
    "too_many_digits.yaml": (None, None, ("not valid YAML", "4300 digits")),
    "huge_version.yaml": ("version", "huge_version", ("version must be an integer", "a huge number")),
    "power_tower.yaml": ("when", "power_tower", ("to the power 256", f"limit {MAX_DEGREE}")),
    "chained_products.yaml": ("when", "chained_products", ("to the power 33",)),
    "deep_json_100k.json": ("document", None, (f"nested deeper than {MAX_JSON_DEPTH} levels",)),
    "duplicate_json.json": ("status", None, ("duplicate key 'status'",)),
    "nan_json.json": ("document", None, ("NaN is not a JSON number",)),
    "distinct_reads.yaml": (
        "features",
        "distinct_reads",
        ("200,000 stored values per event", "100,000 allowed"),
    ),
    "trojan_source.yaml": ("when", "trojan_source", ("U+202E RIGHT-TO-LEFT OVERRIDE", "at character 21")),
}


def test_the_corpus_and_the_cases_agree() -> None:
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_hostile_rule_file_is_refused_with_the_field_and_the_reason(name: str) -> None:
    field, rule_id, words = CASES[name]
    (err,) = refusal(lambda: load_rules(CORPUS / name)).errors
    assert err.source is not None and err.source.startswith(name)
    if field is None:
        assert not err.field
    else:
        assert err.field is not None and err.field.startswith(field), err
    assert err.rule_id == rule_id
    for word in words:
        assert word in err.reason, err


def test_a_text_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    text = "id: big\naction: REVIEW\nwhen: 'true'\ndescription: " + "x" * MAX_RULE_TEXT + "\n"
    (err,) = refusal(lambda: load_rules_text(text, source="big.yaml")).errors
    assert "too large" in err.reason and str(MAX_RULE_TEXT) in err.reason
    file = tmp_path / "huge.yaml"
    file.write_bytes(b"#" * (4 * MAX_RULE_TEXT + 1))
    (err,) = refusal(lambda: load_rules(file)).errors
    assert "the rule file is too large" in err.reason


def test_too_many_values_are_refused(tmp_path: Path) -> None:
    text = "id: many\naction: REVIEW\nwhen: 'true'\ntags: [" + ",".join(["a"] * MAX_YAML_NODES) + "]\n"
    (err,) = refusal(lambda: load_rules_text(text, source="many.yaml")).errors
    assert f"more than {MAX_YAML_NODES}" in err.reason


def test_a_rule_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes(b"id: r\naction: REVIEW\nwhen: 'true'\ndescription: caf\xe9\n")
    (err,) = refusal(lambda: load_rules(file)).errors
    assert "not valid UTF-8" in err.reason and err.source == "latin1.yaml"


def test_aliases_in_the_middle_of_a_rule_list_name_their_path() -> None:
    text = (
        "rules:\n  - id: a\n    action: PASS\n    when: &w 'true'\n"
        "  - id: b\n    action: PASS\n    when: *w\n"
    )
    (err,) = refusal(lambda: load_rules_text(text, source="list.yaml")).errors
    assert err.field == "rules[0].when" and "anchors (&w)" in err.reason


def test_duplicate_keys_deep_inside_a_rule_name_their_path() -> None:
    text = (
        "id: d\naction: REVIEW\nsequence:\n  within: 1m\n  steps:\n"
        "    - name: a\n      when: 'true'\n      times: 2\n      times: 3\n"
    )
    (err,) = refusal(lambda: load_rules_text(text, source="d.yaml")).errors
    assert err.field == "sequence.steps[0].times" and "first given on line 8" in err.reason


def test_an_ordinary_rule_file_still_loads() -> None:
    text = (
        "id: ok\naction: REVIEW\nwhen: event.amount ** 2 > 10 ** 8 and event.x * event.y * 2 > 1\n"
        "description: 'quoted: 1, on, <<'\ntags: ['on', 'yes']\n"
    )
    (rule,) = within(lambda: load_rules_text(text, source="ok.yaml"))
    assert rule.id == "ok" and rule.tags == ("on", "yes")


# ----------------------------------------------------------------------------------------- JSON


def test_json_nested_100k_deep_is_refused_without_recursion() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    doc = '{"id": "deep", "action": "PASS", "when": "true", "tags": ' + deep + "}"
    (err,) = refusal(lambda: rule_from_json(doc, source="rules:deep")).errors
    assert err.field == "document" and f"deeper than {MAX_JSON_DEPTH}" in err.reason
    # a deep object, as bytes
    (err,) = refusal(lambda: load_json_document(('{"a":' * 100_000).encode(), rule_id="r")).errors
    assert err.rule_id == "r" and "deeper" in err.reason


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"id": "a", "id": "b"}', "duplicate key 'id'"),
        ('{"x": Infinity}', "Infinity is not a JSON number"),
        ('{"x": ' + "9" * 5000 + "}", "not valid JSON"),
        (b'{"x": "\xff"}', "not valid UTF-8"),
        ('{"x": "' + "a" * 1_048_577 + '"}', "too large"),
        ('"' + '\\"' * 200_000, "not valid JSON"),  # an unterminated string of escaped quotes: linear scan
        (None, "empty"),
    ],
)
def test_json_documents_are_refused_with_a_reason(text: Any, words: str) -> None:
    (err,) = refusal(lambda: load_json_document(text, source="s", rule_id="r")).errors
    assert words in err.reason and err.rule_id == "r" and err.source == "s"


def test_the_depth_scan_skips_brackets_inside_strings() -> None:
    assert json_depth_exceeds('{"a": "[[[[[[[[[[", "b": [[1]]}', 3) is None
    assert json_depth_exceeds('{"a": "\\"[[", "b": [[[1]]]}', 3) == 21
    assert load_json_document('{"a": "[[[[", "b": {"c": [1, 2]}}') == {"a": "[[[[", "b": {"c": [1, 2]}}


def test_python_documents_that_contain_themselves_or_expand_are_refused() -> None:
    doc: dict[str, Any] = {"id": "loop", "action": "PASS", "when": "true"}
    doc["tags"] = [doc]
    (err,) = refusal(lambda: parse_rule(doc)).errors
    assert err.rule_id == "loop" and "contains itself" in err.reason
    assert err.field is not None and err.field.startswith("tags[0].tags[0].")  # where it goes round
    level: Any = "lol"
    for _ in range(9):
        level = [level] * 9  # 9**9 leaves if walked naively; a few hundred objects in memory
    laughs = {"id": "laughs", "action": "PASS", "when": "true", "description": level}
    (err,) = refusal(lambda: parse_rule(laughs)).errors
    assert "too many values" in err.reason


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"priority": 10**5000}, "priority"),
        ({"alert": -(10**4300)}, "alert"),
        ({"description": 10**5000}, "description"),
        ({"when": "f > 1", "features": {"f": {"kind": "count", "window": 10**5000}}}, "features.f.window"),
        ({"tags": ["a", 10**5000]}, "tags[1]"),
    ],
)
def test_python_documents_with_integers_python_cannot_print_are_refused_with_the_field(
    doc: dict[str, Any], field: str
) -> None:
    # the JSON and YAML readers refuse integers over 4,300 digits; a document built in Python reached the
    # messages that show the value, whose f-string raised a bare ValueError (no rule, no field)
    (err,) = refusal(lambda: parse_rule({"id": "big", "action": "PASS", "when": "true", **doc})).errors
    assert (err.rule_id, err.field) == ("big", field)
    assert "more than 4,300 digits" in err.reason


def test_a_python_document_with_a_key_that_is_not_text_names_where() -> None:
    doc = {"id": "k", "action": "PASS", "when": "f > 1", "features": {"f": {1: "count"}}}
    (err,) = refusal(lambda: parse_rule(doc)).errors
    assert (err.field, err.reason) == ("features.f", "keys must be text")


# ----------------------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("((((((event.x ** 16) ** 16) ** 16) ** 16) ** 16) ** 16) > 0", "power 256"),
        ("(event.x ** 16) ** 4 > 0", "power 64"),
        ("(event.x * event.x) ** 16 * event.y > 0", "power 33"),
        ("abs(event.x ** 16) ** 3 > 0", "power 48"),
        ("-(event.x ** 8) ** 8 > 0", "power 64"),
        ("(10 ** 15) ** 16 ** 2 > 0", "too large"),
        ("2.0 ** 16 ** 16 ** 16 > 0", "too large"),
        ("1e15 ** 16 * 1e15 ** 16 * 1e15 ** 16 > 0", "overflows"),
    ],
)
def test_expressions_that_compute_too_large_numbers_are_refused(text: str, words: str) -> None:
    with pytest.raises(ExpressionError) as info:
        within(lambda: compile_condition(text))
    assert words in info.value.reason


def test_power_tower_in_a_step_condition_is_refused_with_its_path() -> None:
    text = (
        "id: tower\naction: REJECT\nsequence:\n  within: 1m\n  steps:\n    - name: a\n"
        "      when: ((event.x ** 16) ** 16) ** 16 > 0\n"
    )
    (err,) = refusal(lambda: load_rules_text(text, source="t.yaml")).errors
    assert err.field == "sequence.steps[0].when" and err.rule_id == "tower" and "power 256" in err.reason


HUGE = [10**15, -(10**15), 10**4000, 1e300, -1e300, 2**1023, 0.5, -8]


@pytest.mark.parametrize(
    "text",
    [
        "(event.x ** 16) ** 2 > 0",
        "event.x ** 16 * event.x ** 16 > 0",
        "event.x * event.x * event.x * event.x * event.x * event.x * event.x * event.x > 0",
        "event.x ** 16 / event.x ** -16 > 0",
        "event.x ** 0.5 > 0",
        "(event.x ** 16 + event.x ** 16) % 7 >= 0",
    ],
)
def test_accepted_arithmetic_never_builds_a_huge_number(text: str) -> None:
    cond = compile_condition(text)
    for x in HUGE:
        within(lambda x=x: cond.fn({"x": x}, {}), seconds=5)  # noqa: B023 - bound by the default


def test_overflow_is_null_not_infinite_nor_complex() -> None:
    assert not compile_condition("event.x ** 16 == null").test({"x": 10**15})  # 10**240: in range
    assert not compile_condition("event.x ** 16 == null").test({"x": 10**15 * 1.0})
    assert compile_condition("event.x ** 16 * event.x ** 16 == null").test({"x": 10**15})  # 10**480
    assert compile_condition("event.x * event.x == null").test({"x": 1e300})  # inf is null
    assert compile_condition("event.x ** 0.5 == null").test({"x": -8})  # complex is null
    assert compile_condition("event.x * event.x == null").test({"x": 2**MAX_RESULT_BITS})
    assert compile_condition("event.x * 2 == 2 ** 16 * 16").test({"x": 2**19})  # exact ints where they fit


def test_text_concatenation_is_capped() -> None:
    cond = compile_condition("event.s + event.s + event.s + event.s == null")
    assert cond.test({"s": "a" * (MAX_STRING // 2)})
    assert not cond.test({"s": "a" * (MAX_STRING // 4)})
    # no repetition operator: text * number is null, never a 10**15-character string
    assert compile_condition('"a" * event.n == null').test({"n": 10**15})
    assert compile_condition("event.s * event.n == null").test({"s": "a", "n": 10**15})


def test_aggregates_of_huge_values_are_null_not_an_exception() -> None:
    cond = compile_step_condition("avg(fails.amount) == null and sum(fails.amount) == null", steps=["fails"])
    events = [{"amount": 10**400}, {"amount": 1.5}]
    assert within(lambda: cond.test({}, {"fails": events}))


def test_functions_and_in_are_linear_on_long_inputs() -> None:
    text = (
        'contains(event.s, "needle") or startswith(lower(event.s), "x") or endswith(upper(event.s), "y")'
        ' or event.v in event.items or len(event.s) < 0 or event.s in ["a", "b"]'
    )
    cond = compile_condition(text)
    event = {"s": "ab" * 500_000 + "a", "v": "z", "items": list(range(1_000_000))}
    assert within(lambda: cond.test(event), seconds=5) is False


# ----------------------------------------------------------------------------------------- the CLI


def test_rules_validate_refuses_the_corpus_without_a_traceback() -> None:
    proc = run_riskctl("rules", "validate", str(CORPUS), timeout=60)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert f"{len(CASES)} errors in" in proc.stderr
    for name in CASES:
        assert f"error: {name}" in proc.stderr, name


def test_rules_validate_json_output_lists_every_refusal() -> None:
    proc = run_riskctl("rules", "validate", "--json", str(CORPUS / "power_tower.yaml"), timeout=60)
    assert proc.returncode == 1
    (err,) = json.loads(proc.stdout)["errors"]
    assert err["rule_id"] == "power_tower" and err["field"] == "when" and "power 256" in err["reason"]


def heavy_sequence(max_partial: int, times: int, aggregates: int, quantifier: str = "exactly") -> str:
    cond = " and ".join(["sum(a.amount) > -1"] * aggregates) or "event.type == 'y'"
    return (
        f"id: heavy\naction: REVIEW\nsequence:\n  within: 7d\n  max_partial: {max_partial}\n  steps:\n"
        f"    - name: a\n      when: event.type == 'x'\n      times: {times}\n"
        f"      quantifier: {quantifier}\n"
        f"    - name: b\n      when: {cond}\n"
    )


def test_a_sequence_whose_work_per_event_is_too_large_is_refused() -> None:
    # 10,000 partial matches x 50 sums over 1,000 events: 2.6 s per event and growing, measured before
    (err,) = refusal(lambda: load_rules_text(heavy_sequence(10_000, 1000, 50), source="h.yaml")).errors
    assert err.rule_id == "heavy" and err.field == "sequence.max_partial"
    assert "evaluations per event" in err.reason and f"limit {MAX_SEQUENCE_COST:,}" in err.reason
    (err,) = refusal(lambda: load_rules_text(heavy_sequence(1000, 5, 1, "at_least"), source="h.yaml")).errors
    assert "evaluations per event" in err.reason  # at_least: a step may hold up to MAX_TIMES events
    (rule,) = load_rules_text(heavy_sequence(64, 1000, 2, "at_least"), source="h.yaml")
    (rule,) = load_rules_text(heavy_sequence(10_000, 3, 0), source="h.yaml")  # the largest max_partial
    assert rule.sequence is not None and rule.sequence.max_partial == 10_000


def test_expression_cost_counts_nodes_and_step_scans() -> None:
    assert expression_cost("event.a > 1") == (4, 0)
    assert expression_cost("sum(s.x) > 1 and count(s) > 2 and max(s.x) > min(event.a, 3)")[1] == 2


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (
            "sequence:\n  within: '" + "9" * 400 + "s'\n  steps:\n    - {name: x, when: 'true'}\n",
            "sequence.within",
            "duration",
        ),
        ("features:\n  c: {kind: count, window: '" + "9" * 400 + "m'}\n", "features.c.window", "duration"),
        (
            "features:\n  c: {kind: count, window: [" + ",".join(["1"] * 10_000) + "]}\n",
            "features.c.window",
            "...",
        ),
    ],
)
def test_huge_durations_are_refused_not_an_overflow(text: str, field: str, words: str) -> None:
    doc = "id: a\naction: PASS\nwhen: 'true'\n" if "sequence" not in text else "id: a\naction: PASS\n"
    errors = refusal(lambda: load_rules_text(doc + text, source="d.yaml")).errors
    err = next(e for e in errors if e.field == field)
    assert words in err.reason and len(err.reason) < 200


def test_a_huge_id_is_refused_with_a_short_message() -> None:
    (err,) = refusal(
        lambda: load_rules_text("id: '" + "a" * 100_000 + "'\naction: PASS\nwhen: 'true'\n")
    ).errors
    assert err.field == "id" and err.rule_id is None and len(str(err)) < 300
