"""``riskctl replay``'s stderr shows a dead letter's field path printable (found in review).

A field path is made of the event's keys: ``{"\\u001b[2J\\nline 99: forged": 1e999}`` printed an escape
sequence and a line of its own ("line 99: forged: ...") in the list of dead letters and in the summary.
The dead letters themselves (JSON on stdout) keep the key as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from riskctl.cli.main import cli
from riskctl.config import PROJECT_ROOT

KEY = "\x1b[2J\nline 99: forged"


def test_a_hostile_key_is_escaped_on_stderr_and_kept_in_the_dead_letter(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    doc = {"event_id": "e", "user_id": "u", "type": "t", "ts": 1, KEY: 1e999}
    events.write_text(json.dumps(doc) + "\n")
    res = CliRunner().invoke(cli, ["replay", "--rules", str(PROJECT_ROOT / "rules"), str(events)])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stderr and "\nline 99" not in res.stderr, res.stderr
    assert "line 1: \\x1b[2J\\nline 99: forged: number inf" in res.stderr
    assert "dead letters by field or error: \\x1b[2J\\nline 99: forged 1" in res.stderr
    (letter,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert letter["field"] == KEY
