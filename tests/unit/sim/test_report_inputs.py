"""``riskctl simulate report`` on files that are not what it expects (found in review).

Before: a line that is not JSON, bytes that are not UTF-8, a line nested 100,000 deep or an event without
``user_id`` ended the command with a traceback (JSONDecodeError, UnicodeDecodeError, RecursionError,
KeyError), and a decision or alert of another shape (``"rule": "x"``, ``"rules": "x"``, an action or user id
that is a list) with AttributeError or TypeError. Now a bad file is one error line naming the file and the
line (exit 1, or the error document with --json), and records of another shape are read as far as they go.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from riskctl.cli.main import cli
from riskctl.sim.report import build_report

EVENT = {"event_id": "e1", "user_id": "u1", "type": "login", "ts": 1}
ATTACK = {
    "event_id": "e2", "user_id": "u2", "type": "login", "ts": 2,
    "sim": {"attack_id": "a1", "attack": "brute_force"},
}  # fmt: skip


def report(tmp_path: Path, events: bytes, decisions: bytes = b"", *extra: str) -> Any:
    (tmp_path / "events.jsonl").write_bytes(events)
    (tmp_path / "decisions.jsonl").write_bytes(decisions)
    args = ["simulate", "report", "--events", str(tmp_path / "events.jsonl")]
    return CliRunner().invoke(cli, [*args, "--decisions", str(tmp_path / "decisions.jsonl"), *extra])


GOOD = (json.dumps(EVENT) + "\n").encode()


@pytest.mark.parametrize(
    ("events", "decisions", "wanted"),
    [
        (b"not json\n", b"", "events.jsonl line 1: not valid JSON"),
        (GOOD + b"\xff\xfe{}\n", b"", "events.jsonl line 2: not valid UTF-8"),
        (b"[" * 5_000 + b"]" * 5_000 + b"\n", b"", "events.jsonl line 1: nested too deep"),
        (b'{"event_id": "e"}\n', b"", "events.jsonl line 1: user_id must be a string, got nothing"),
        (
            b'{"event_id": 3, "user_id": "u"}\n',
            b"",
            "events.jsonl line 1: event_id must be a string, got int",
        ),
        (GOOD, b'\n{"kind": "decision"}\n{x\n', "decisions.jsonl line 3: not valid JSON"),
    ],
)
def test_a_file_that_is_not_json_lines_is_one_error_line(
    tmp_path: Path, events: bytes, decisions: bytes, wanted: str
) -> None:
    res = report(tmp_path, events, decisions)
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.stderr.startswith("error: ") and wanted in res.stderr, res.stderr
    res = report(tmp_path, events, decisions, "--json")
    assert res.exit_code == 1 and wanted in json.loads(res.stdout)["error"]["message"]


def test_records_and_labels_of_another_shape_are_read_as_far_as_they_go(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [
        {"kind": "alert", "rule": "x"},
        {"kind": "alert", "rule": {"evidence": "x"}, "user_id": ["u1"]},
        {"kind": "alert", "rule": {"id": "r", "evidence": {"match": {"steps": {"s": [["e2"], "e2"]}}}}},
        {"event_id": "e1", "action": ["REVIEW"], "user_id": ["u1"]},
        {"event_id": "e2", "action": "REJECT", "rules": "x"},
    ]
    events = [
        EVENT,
        ATTACK,
        {**ATTACK, "event_id": "e3", "sim": {"attack_id": ["a"], "attack": "brute_force"}},
        {**ATTACK, "event_id": "e4", "sim": {"attack_id": "a2", "attack": "no_such_attack"}},
        {**ATTACK, "event_id": "e5", "sim": {"attack_id": "a3"}},
    ]
    result = build_report(events, records)
    assert result["attacks"] == 1 and result["caught"] == 1
    assert result["scenarios"]["brute_force"]["by_rule"] == {"r": 1}
    lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    res = report(tmp_path, "".join(json.dumps(e) + "\n" for e in events).encode(), lines)
    assert res.exit_code == 0, res.output
    assert "attacks caught: 1/1" in res.stdout


def test_a_line_longer_than_the_limit_is_counted_and_skipped(tmp_path: Path) -> None:
    """Before: --events /dev/zero (or a file without a line break) was read as one line, whole: all the
    memory there was, then MemoryError (a traceback under a 3 GB ulimit). Then a line over 16 MiB ended the
    report (exit 1). Now a line over the job's own limit is skipped, counted, and the report goes on."""
    res = report(tmp_path, GOOD + b"x" * 70_000, b"", "--json")  # over job.max_event_bytes, no line break
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["events"] == 1 and doc["skipped"] == {"events_over_max_event_bytes": 1}
    res = report(tmp_path, GOOD + b"x" * 999 + b"\n")  # within the limit: read (and found not JSON)
    assert "events.jsonl line 2: not valid JSON" in res.stderr, res.stderr


def test_a_device_is_refused_not_read_for_ever() -> None:
    res = CliRunner().invoke(cli, ["simulate", "report", "--events", "/dev/zero", "--decisions", "/dev/null"])
    assert res.exit_code == 1, res.output
    assert "/dev/zero is a device, not a JSON-lines file" in res.stderr
