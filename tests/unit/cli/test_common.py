"""riskctl.cli.common: one exit code per error class, errors on stderr (or one JSON document), the shared
options; and the error hierarchy they rely on (riskctl.errors)."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import click
import pytest
from click.testing import CliRunner

import riskctl
import riskctl.errors
from riskctl.cli.common import EXIT_CODES, ExitCode, error_exit, handles_errors, json_option
from riskctl.config.checks import refused
from riskctl.core.errors import RuleError, RuleSetError
from riskctl.errors import (
    ConfigError,
    DemoError,
    NewerCheckpointError,
    RiskctlError,
    RuleNotFoundError,
    ServiceError,
    StoreBusyError,
    StoreQueryError,
    VersionConflictError,
    VersionNotFoundError,
)


@pytest.mark.parametrize(
    ("error", "code", "kind"),
    [
        (VersionConflictError("r", 1, 2), ExitCode.CONFLICT, "conflict"),
        (RuleNotFoundError("r", table="rules"), ExitCode.ERROR, "unknown_rule"),
        (VersionNotFoundError("r", 9, [1]), ExitCode.ERROR, "unknown_version"),
        (StoreQueryError("MySQL error 1644: no", code=1644), ExitCode.ERROR, "mysql"),
        (
            StoreBusyError("MySQL: not written", code=1205, rule_ids=["r"], attempts=1),
            ExitCode.UNAVAILABLE,
            "busy",
        ),
        (RuleSetError([RuleError("bad", rule_id="r")]), ExitCode.ERROR, "invalid_rule"),
        (NewerCheckpointError("newer checkpoint"), ExitCode.USAGE, "checkpoint"),
        (ConfigError("no password"), ExitCode.UNAVAILABLE, "config"),
        (refused("--set job.parallelism must be an integer"), ExitCode.USAGE, "config"),
        (ServiceError("Kafka", "down"), ExitCode.UNAVAILABLE, "unavailable"),
        (DemoError("the job exited"), ExitCode.ERROR, "error"),
        (RuleError("bad"), ExitCode.ERROR, "error"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_each_error_class_has_its_exit_code(error: RiskctlError, code: ExitCode, kind: str) -> None:
    how = error_exit(error)
    assert (how.code, how.kind) == (code, kind)


def test_exit_codes_keep_their_documented_numbers() -> None:
    # docs/rules-store.md and scripts rely on these numbers
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 130]


def _riskctl_error_classes() -> set[type[RiskctlError]]:
    for info in pkgutil.walk_packages(riskctl.__path__, "riskctl."):
        if info.name.startswith(("riskctl.flink.", "riskctl.testing")) and info.name not in (
            "riskctl.flink.checkpoints",
        ):
            continue  # PyFlink modules: slow to import, and they define no error class
        importlib.import_module(info.name)
    found: set[type[RiskctlError]] = set()
    todo = [RiskctlError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return {c for c in found if c.__module__.startswith("riskctl.")}


def test_every_error_class_is_in_riskctl_errors_and_in_its_tree() -> None:
    doc = riskctl.errors.__doc__ or ""
    for cls in _riskctl_error_classes():
        assert getattr(riskctl.errors, cls.__name__, None) is cls, f"{cls.__module__}.{cls.__name__}"
        assert cls.__name__ in riskctl.errors.__all__, cls.__name__
        assert f" {cls.__name__}" in doc, f"{cls.__name__} is missing from the tree in riskctl/errors.py"


def test_every_error_class_has_an_exit_code() -> None:
    for cls in _riskctl_error_classes():
        assert any(issubclass(cls, known) for known in EXIT_CODES), cls


@click.command()
@json_option()
@click.option("--raise", "which", default="conflict")
@handles_errors
def _command(as_json: bool, which: str) -> None:
    errors: dict[str, RiskctlError] = {
        "conflict": VersionConflictError("r_amount", 1, 2),
        "service": ServiceError("MySQL", "cannot connect to 127.0.0.1:1"),
        "hostile": VersionConflictError("r1\x1b]0;owned\x07\nerror: forged\u202e", None, 3),
    }
    raise errors[which]


def test_an_error_is_one_line_on_stderr_with_the_exit_code_of_its_class() -> None:
    result = CliRunner().invoke(_command, [])
    assert result.exit_code == ExitCode.CONFLICT
    assert result.stdout == ""
    assert result.stderr.startswith("error: conflict on rule 'r_amount': expected version 1")
    assert result.stderr.count("\n") == 1
    result = CliRunner().invoke(_command, ["--raise", "service"])
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert result.stderr == "error: MySQL: cannot connect to 127.0.0.1:1\n"


def test_an_error_quoting_hostile_text_is_still_one_plain_line() -> None:
    """A rule id written into MySQL by SQL reached the terminal raw in the conflict's hint ('look at riskctl
    rules history <id>'): it could retitle the terminal or add a forged error line (found in review)."""
    result = CliRunner().invoke(_command, ["--raise", "hostile"])
    assert result.exit_code == ExitCode.CONFLICT
    assert result.stderr.count("\n") == 1 and "\x1b" not in result.stderr and "\u202e" not in result.stderr
    assert "history 'r1\\x1b]0;owned\\x07\\nerror: forged\\u202e'' and retry" in result.stderr


def test_with_json_an_error_is_one_document_with_its_details() -> None:
    result = CliRunner().invoke(_command, ["--json"])
    assert result.exit_code == ExitCode.CONFLICT
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["error"]["type"] == "conflict"
    assert (doc["error"]["rule_id"], doc["error"]["expected"], doc["error"]["actual"]) == ("r_amount", 1, 2)
    assert "conflict on rule 'r_amount'" in doc["error"]["message"]
    result = CliRunner().invoke(_command, ["--json", "--raise", "service"])
    assert json.loads(result.stdout)["error"] == {
        "type": "unavailable",
        "message": "MySQL: cannot connect to 127.0.0.1:1",
        "service": "MySQL",
    }


def test_no_cli_module_declares_its_own_exit_codes_or_context() -> None:
    import riskctl.cli

    for info in pkgutil.walk_packages(riskctl.cli.__path__, "riskctl.cli."):
        if info.name == "riskctl.cli.common":
            continue
        source = inspect.getsource(importlib.import_module(info.name))
        assert "sys.exit(3)" not in source and "sys.exit(1)" not in source, info.name
        assert "EXIT_" not in source, info.name
        assert '"help_option_names"' not in source, info.name
        assert 'click.echo(f"error:' not in source, info.name
