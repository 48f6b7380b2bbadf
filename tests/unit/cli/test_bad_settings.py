"""A setting riskctl refuses ends every command the same way: exit 2 (bad usage), one ``error:`` line naming
the setting, or with ``--json`` the error document.

Was: ``riskctl config show``, ``run`` and ``submit`` exited 2 and every other command 3, the code of a service
that does not answer, for the same unknown ``RISKCTL_*`` variable, bad value in riskctl.toml or bad ``--set``.
Something a command needs that is not configured (no MySQL password) stays 3 (riskctl.cli.common)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import riskctl.flink.main
from riskctl.cli.common import ExitCode
from riskctl.cli.main import cli
from riskctl.config import PROJECT_ROOT
from tests.helpers import free_port, run_riskctl

#: commands that load the settings first, and how to call them; those marked take --json and --set
COMMANDS: list[tuple[list[str], bool, bool]] = [  # (args, takes --json, takes --set)
    (["config", "show"], True, True),
    (["run"], False, True),
    (["submit"], False, True),
    (["warm"], True, False),
    (["stack", "status"], True, False),
    (["decisions", "stats"], True, False),
    (["decisions", "tail"], True, False),
    (["rules", "list"], True, False),
    (["alerts", "check"], True, True),
    (["serve"], False, True),
    (["replay", "--rules", str(PROJECT_ROOT / "rules"), "EVENTS"], False, False),
]


def _name(args: list[str]) -> str:
    return " ".join(a for a in args if a.isalpha() and a.islower())


ALL = [pytest.param(args, takes_json, id=_name(args)) for args, takes_json, _ in COMMANDS]
WITH_SET = [
    pytest.param(args, takes_json, id=_name(args)) for args, takes_json, with_set in COMMANDS if with_set
]

UNKNOWN_VARIABLE = (
    "unknown environment variable RISKCTL_JOB_PARALELISM (did you mean RISKCTL_JOB_PARALLELISM?): "
    "no such setting"
)


@pytest.fixture
def where(clean: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without riskctl.toml, no RISKCTL_* variable of the developer's shell, and services
    that do not answer: should a command get past its settings, it fails at once instead of running (the job,
    the API) against a stack that happens to be up."""
    tmp_path = clean
    closed = free_port()
    monkeypatch.setenv("RISKCTL_STACK_DIR", str(tmp_path / "stack"))
    monkeypatch.setenv("RISKCTL_KAFKA_BOOTSTRAP", f"127.0.0.1:{closed}")
    monkeypatch.setenv("RISKCTL_MYSQL_PORT", str(closed))
    monkeypatch.setenv("RISKCTL_FLINK_REST_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("FLINK_HOME", str(tmp_path / "no-flink"))

    def no_job(argv: list[str] | None = None) -> int:
        raise AssertionError("the job must not start")

    monkeypatch.setattr(riskctl.flink.main, "main", no_job)
    (tmp_path / "events.jsonl").write_text("")
    return tmp_path


def _args(args: list[str], where: Path) -> list[str]:
    return [str(where / "events.jsonl") if a == "EVENTS" else a for a in args]


def _ends_the_same(args: list[str], line: str, env: dict[str, str] | None = None) -> None:
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == ExitCode.USAGE, (args, result.output, result.exception)
    assert result.stdout == "", args
    assert result.stderr == f"error: {line}\n", args


def _json_ends_the_same(args: list[str], line: str, env: dict[str, str] | None = None) -> None:
    result = CliRunner().invoke(cli, [*args, "--json"], env=env)
    assert result.exit_code == ExitCode.USAGE, (args, result.output, result.exception)
    assert result.stderr == "", args
    assert json.loads(result.stdout) == {"ok": False, "error": {"type": "config", "message": line}}, args


@pytest.mark.parametrize(("args", "takes_json"), ALL)
def test_an_unknown_variable_ends_every_command_with_exit_2_naming_it(
    where: Path, args: list[str], takes_json: bool
) -> None:
    env = {"RISKCTL_JOB_PARALELISM": "2"}
    _ends_the_same(_args(args, where), UNKNOWN_VARIABLE, env)
    if takes_json:
        _json_ends_the_same(_args(args, where), UNKNOWN_VARIABLE, env)


@pytest.mark.parametrize(("args", "takes_json"), ALL)
def test_a_bad_value_in_the_file_ends_every_command_with_exit_2_naming_it(
    where: Path, args: list[str], takes_json: bool
) -> None:
    (where / "riskctl.toml").write_text('[job]\nparallelism = "four"\n')
    line = "job.parallelism in riskctl.toml must be an integer from 1 to 32768, got 'four'"
    _ends_the_same(_args(args, where), line)
    if takes_json:
        _json_ends_the_same(_args(args, where), line)


@pytest.mark.parametrize(("args", "takes_json"), WITH_SET)
def test_a_bad_set_ends_every_command_with_exit_2_naming_it(
    where: Path, args: list[str], takes_json: bool
) -> None:
    line = "--set job.parallelism must be an integer from 1 to 32768, got 'four'"
    _ends_the_same([*args, "--set", "job.parallelism=four"], line)
    if takes_json:
        _json_ends_the_same([*args, "--set", "job.parallelism=four"], line)


@pytest.mark.parametrize("args", [["run"], ["rules", "list"], ["stack", "status"]], ids=" ".join)
def test_the_installed_command_exits_2_as_well(where: Path, args: list[str]) -> None:
    # the real process, as a script sees it: the CLI's own exit, not click's test runner's
    env = {**os.environ, "RISKCTL_JOB_PARALELISM": "2"}
    res = run_riskctl(*args, env=env, cwd=where, timeout=60)
    assert res.returncode == 2, (args, res.stdout, res.stderr)
    assert res.stderr == f"error: {UNKNOWN_VARIABLE}\n", res.stderr


def test_no_mysql_password_is_not_configured_exit_3(where: Path) -> None:
    # not a refused setting: the settings are fine, MySQL is not configured yet (like a service down)
    result = CliRunner().invoke(cli, ["rules", "list", "--json"])
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "config"
    assert error["message"].startswith("no MySQL password: set RISKCTL_MYSQL_PASSWORD")
