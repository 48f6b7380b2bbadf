"""``riskctl replay --output`` that cannot be written, or that is the events file (found in review).

Before: ``--output`` naming the events file (or a link to it) emptied it before a line was read: the replay
decided nothing, said so, exited 0, and the events were gone. An output in a folder that does not exist was a
traceback (FileNotFoundError). Both are now bad usage (exit 2), one error line, and the events file is intact.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from riskctl.cli.main import cli
from tests.unit.cli.test_replay_cli import RULES, brute_force_lines, write_events


def test_an_output_that_is_the_events_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.jsonl", brute_force_lines())
    before = events.read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(events)
    for output in (events, link):
        res = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--output", str(output)])
        assert res.exit_code == 2, (res.output, res.exception)
        assert (
            res.stderr == f"error: --output {str(output)!r} is the events file: write the records elsewhere\n"
        )
        assert events.read_bytes() == before


def test_an_output_that_cannot_be_written_is_one_error_line(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.jsonl", brute_force_lines())
    target = tmp_path / "no-such-folder" / "out.jsonl"
    res = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--output", str(target)])
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stderr == f"error: --output: cannot write {str(target)!r}: No such file or directory\n"


def test_another_output_file_still_gets_the_records(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.jsonl", brute_force_lines())
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    res = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--output", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert out.read_text().count("\n") == 4 and "old" not in out.read_text()
