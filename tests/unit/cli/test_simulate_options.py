"""``riskctl simulate`` (and ``simulate report``, ``demo``) options out of range, and files that cannot be
written (found in review).

Before: ``--duration inf`` ended with OverflowError; ``--rate inf`` hung for ever, its heap growing;
``--start-ts 99999999999999999999`` hung (event time, a float, no longer moved by a gap of milliseconds);
``--users 100000000`` built 10**8 users (~90 GB) before the first event; ``--start-ts -5`` wrote events the
job dead-letters; ``--rate nan`` was refused without naming the option; ``report --timeout -1`` or ``nan``
read nothing and reported every attack missed; ``--output`` in a folder that does not exist was a traceback.
Each is now bad usage (exit 2) naming the option, refused before anything is generated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from riskctl.cli.main import cli


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--duration", "inf"], "'--duration'"),
        (["--duration", "nan"], "'--duration'"),
        (["--rate", "inf"], "'--rate'"),
        (["--rate", "nan"], "'--rate'"),
        (["--rate", "-1"], "'--rate'"),
        (["--users", "0"], "'--users'"),
        (["--users", "100000000"], "'--users'"),
        (["--start-ts", "-5"], "'--start-ts'"),
        (["--start-ts", "99999999999999999999"], "'--start-ts'"),
        (["--attack-fraction", "nan"], "'--attack-fraction'"),
        (["--zipf", "nan"], "'--zipf'"),
        (["--rate", "1000000", "--duration", "3600"], "'--rate' x '--duration'"),
        (["--duration", "1e300"], "'--rate' x '--duration'"),
        (["--attacks", ""], "'--attacks'"),
        (["--attacks", "brute_force,nope"], "'--attacks'"),
    ],
)
def test_an_option_out_of_range_is_bad_usage_naming_it(tmp_path: Path, args: list[str], option: str) -> None:
    out = tmp_path / "events.jsonl"
    res = CliRunner().invoke(cli, ["simulate", *args, "--output", str(out), "--no-progress"])
    assert res.exit_code == 2, (res.output, res.exception)
    assert f"Invalid value for {option}" in res.stderr, res.stderr
    assert not out.exists()  # refused before anything was generated


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_report_and_demo_timeouts_out_of_range_are_bad_usage(tmp_path: Path, value: str) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "e1", "user_id": "u1", "type": "login", "ts": 1}\n')
    res = CliRunner().invoke(cli, ["simulate", "report", "--events", str(events), "--timeout", value])
    assert res.exit_code == 2 and "Invalid value for '--timeout'" in res.stderr, res.output
    # a folder of rules that does not exist: were the timeout taken, the demo would stop there (exit 2 too)
    missing = str(tmp_path / "no-rules")
    res = CliRunner().invoke(cli, ["demo", "--startup-timeout", value, "--rules", missing])
    assert res.exit_code == 2 and "Invalid value for '--startup-timeout'" in res.stderr, res.output


def test_an_output_that_cannot_be_written_is_one_error_line(tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "events.jsonl"
    res = CliRunner().invoke(cli, ["simulate", "--duration", "1", "--output", str(target), "--no-progress"])
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stderr == f"error: --output: cannot write {str(target)!r}: No such file or directory\n"


def test_options_within_range_still_run(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    args = ["--users", "50", "--rate", "20", "--duration", "2", "--start-ts", "0", "--seed", "1"]
    res = CliRunner().invoke(cli, ["simulate", *args, "--output", str(out), "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert out.read_text().count("\n") > 0


def test_the_report_shows_ids_and_actions_from_the_files_escaped(tmp_path: Path) -> None:
    """Before: an attack id, user id, action or rule id with escape sequences (an OSC title, a screen clear)
    reached the terminal as it was."""
    events = tmp_path / "events.jsonl"
    decisions = tmp_path / "decisions.jsonl"
    label = {"attack": "brute_force", "attack_id": "a\x1b]0;t\x07", "role": "attacker"}
    events.write_text(
        json.dumps({"event_id": "e1", "user_id": "u\x1b[2J", "type": "login", "ts": 1, "sim": label})
        + "\n"
        + json.dumps({"event_id": "e2", "user_id": "legit", "type": "login", "ts": 2})
        + "\n"
    )
    decision = {
        "event_id": "e2",
        "user_id": "legit",
        "action": "REJECT\x1b]2;x\x07",
        "rules": [{"id": "r\x1b]0;y\x07"}],
    }
    decisions.write_text(json.dumps(decision) + "\n")
    res = CliRunner().invoke(
        cli, ["simulate", "report", "--events", str(events), "--decisions", str(decisions)], color=True
    )
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\x07" not in res.output
    assert "missed: a\\x1b]0;t\\x07 (brute_force, u\\x1b[2J)" in res.output
    assert "actions REJECT\\x1b]2;x\\x07 1" in res.output
    assert "[r\\x1b]0;y\\x07 1]" in res.output
