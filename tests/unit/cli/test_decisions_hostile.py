"""``riskctl decisions tail/stats`` on records of any shape, and text from events made printable (found in
review).

A decision's ids and type are an event's, an attacker's text, and anyone who can write the topic can put
anything there. Before: a user id with a line break and escape sequences was printed as it was (a forged line,
a recoloured terminal); a record nested 100,000 deep (RecursionError), a ``ts`` that is a string or 10**20, an
``action`` of null, ``rules`` that is a string, or an alert whose ``rule`` is a string ended
``decisions tail`` with a traceback (real Kafka, one such record each).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner

from riskctl.cli import decisions as cmd
from riskctl.cli.common import printable
from riskctl.cli.main import cli
from riskctl.sim.kafka_io import poll


class TP(NamedTuple):
    topic: str
    partition: int


GOOD = {
    "kind": "decision", "event_id": "e1", "user_id": "u1", "type": "login", "ts": 1_700_000_000_000,
    "action": "REVIEW", "rules": [{"id": "r1", "version": 2}], "shadow": [{"id": "s1"}],
}  # fmt: skip

HOSTILE: list[dict[str, Any]] = [
    {**GOOD, "ts": "x"},
    {**GOOD, "ts": 10**20},
    {**GOOD, "ts": -5},
    {**GOOD, "ts": None},
    {**GOOD, "ts": True},
    {**GOOD, "action": None},
    {**GOOD, "action": {"a": 1}},
    {**GOOD, "rules": "x"},
    {**GOOD, "rules": ["x", 3, None]},
    {**GOOD, "shadow": {"id": "s"}},
    {**GOOD, "rules": "x", "shadow": ["y"]},
    {"kind": "alert", "rule": "x", "ts": 1},
    {"kind": "alert", "rule": {"action": None, "id": ["a"]}, "ts": 1},
    {"kind": "alert"},
    {},
]


@pytest.mark.parametrize("record", HOSTILE)
def test_a_record_of_another_shape_is_shown_filtered_and_counted(record: dict[str, Any]) -> None:
    line = cmd.pretty(record, 1_700_000_000_100)
    assert "\n" not in line
    cmd.matches(record, ("PASS",), "u1", "r1")
    cmd.matches(record, (), None, None)
    cmd.rule_ids(record)
    cmd.summarize([(record, 1_700_000_000_100)])


def test_a_good_record_is_shown_as_before() -> None:
    line = cmd.pretty(GOOD, 1_700_000_000_250)
    assert line == "22:13:20.000 REVIEW user=u1 login event=e1 rules=[r1 v2] shadow=[s1] +250ms"
    assert cmd.summarize([(GOOD, 1_700_000_000_250)])["latency_ms"]["max"] == 250
    assert cmd.rule_ids(GOOD) == ["r1", "s1"]
    again = {**GOOD, "rules": [], "shadow": [], "duplicate": True}
    assert cmd.pretty(again, None) == "22:13:20.000 REVIEW user=u1 login event=e1 duplicate"
    assert cmd.pretty({**again, "duplicate": "yes"}, None).endswith("event=e1")  # only the record's true


def test_text_from_events_cannot_forge_a_line_or_drive_the_terminal() -> None:
    user = "u\x1b[2J\x1b]0;title\x07\nFAKE 12:00:00.000 PASS user=admin\u202egnp.exe\x9b"
    line = cmd.pretty({**GOOD, "user_id": user, "event_id": "e\r", "type": "t\x00"})
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in line), repr(line)
    assert "user=u\\x1b[2J\\x1b]0;title\\x07\\nFAKE 12:00:00.000 PASS user=admin\\u202egnp.exe\\x9b " in line
    assert printable("é 日本 ok") == "é 日本 ok"
    assert len(cmd.pretty({**GOOD, "type": "t" * 10_000})) < 500


def test_poll_skips_a_record_nested_too_deep_for_the_decoder() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    records = [SimpleNamespace(value=v, offset=i, timestamp=1) for i, v in enumerate([deep, None, b"{x"])]
    records.append(SimpleNamespace(value=json.dumps(GOOD).encode(), offset=3, timestamp=1))
    consumer = SimpleNamespace(poll=lambda timeout_ms: {TP("t", 0): records})
    assert [m.offset for m in poll(consumer)] == [3]


def test_tail_goes_on_past_hostile_records(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [b"[" * 100_000 + b"]" * 100_000] + [json.dumps(r).encode() for r in [*HOSTILE, GOOD]]
    records = [SimpleNamespace(value=v, offset=i, timestamp=1_700_000_000_100) for i, v in enumerate(values)]
    batches = [{TP("t", 0): records}]
    consumer = SimpleNamespace(poll=lambda timeout_ms: batches.pop() if batches else {}, close=lambda: None)
    monkeypatch.setattr(cmd, "_connect", lambda topics, from_beginning: consumer)
    res = CliRunner().invoke(cli, ["decisions", "tail", "--timeout", "0.5"])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") == len(HOSTILE) + 1
    assert res.output.splitlines()[-1].startswith("22:13:20.000 REVIEW user=u1")


def test_stats_shows_actions_and_rule_ids_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: ``decisions stats`` printed the actions and rule ids of the records as they were, escape
    sequences included (tail escaped them)."""
    record = {
        **GOOD,
        "action": "REJECT\x1b]0;a\x07",
        "rules": [{"id": "r\x1b[2J"}],
        "shadow": [{"id": "s\n"}],
    }
    monkeypatch.setattr(cmd, "_read_window", lambda *args: iter([(record, 1_700_000_000_100)]))
    res = CliRunner().invoke(cli, ["decisions", "stats"], color=True)
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\x07" not in res.output
    assert "by action: REJECT\\x1b]0;a\\x07 1" in res.output
    assert "by rule:   r\\x1b[2J 1" in res.output
    assert "shadow:    s\\n 1" in res.output
