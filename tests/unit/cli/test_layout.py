"""The shape of the ``riskctl`` command: help lines that fit, -h everywhere, --json where output is
structured, replay's former --summary-json still accepted."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from riskctl.cli.main import _COMMANDS, cli

ROOT = Path(__file__).resolve().parents[3]


def _all_commands() -> list[tuple[str, click.Command]]:
    """(path, command) of every command and group under ``riskctl``."""
    found: list[tuple[str, click.Command]] = []
    ctx = click.Context(cli)

    def walk(path: str, command: click.Command) -> None:
        found.append((path, command))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(f"{path} {name}", sub)

    for name in _COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None, name
        walk(name, command)
    return found


COMMANDS = _all_commands()


GROUPS = [path for path, command in COMMANDS if isinstance(command, click.Group)]


@pytest.mark.parametrize("path", ["", *GROUPS])
def test_no_help_line_is_cut_off(path: str) -> None:
    """Every command listed by ``riskctl [GROUP] --help`` (80 columns) has its whole help line."""
    result = CliRunner().invoke(cli, [*path.split(), "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    listed = result.stdout.split("Commands:")[1].splitlines()[1:]
    assert listed
    for line in listed:
        assert not line.endswith("..."), f"riskctl {path}: {line.strip()}"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_takes_dash_h(path: str, command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*path.split(), "-h"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


STRUCTURED = [
    "decisions stats",
    "decisions tail",
    "demo",
    "replay",
    "simulate",
    "simulate report",
    "stack status",
    "stack up",
    "stack down",
    "rules validate",
    "rules apply",
    "rules list",
    "rules show",
    "rules history",
    "rules diff",
    "rules enable",
    "rules disable",
    "rules shadow",
    "rules rollback",
    "rules delete",
]


@pytest.mark.parametrize("path", STRUCTURED)
def test_commands_with_structured_output_take_json(path: str) -> None:
    command = dict(COMMANDS)[path]
    assert any("--json" in p.opts for p in command.params if isinstance(p, click.Option)), path


def test_replay_summary_json_is_a_hidden_alias_of_json(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "e1", "user_id": "u1", "type": "login", "ts": 1000, "success": true}\n')
    summaries = []
    for flag in ("--json", "--summary-json"):
        result = CliRunner().invoke(
            cli, ["replay", "--rules", str(ROOT / "rules"), str(events), flag, "--now", "1000"]
        )
        assert result.exit_code == 0, result.stderr
        summaries.append(json.loads(result.stderr.strip().splitlines()[-1]))
    assert summaries[0]["events"] == summaries[1]["events"] == 1
    help_text = CliRunner().invoke(cli, ["replay", "--help"]).stdout
    assert "--json" in help_text and "--summary-json" not in help_text


def test_rules_validate_errors_go_to_stderr(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: a\nactoin: PASS\nwhen: 'true'\n")
    result = CliRunner().invoke(cli, ["rules", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error: " in result.stderr and "did you mean 'action'?" in result.stderr
