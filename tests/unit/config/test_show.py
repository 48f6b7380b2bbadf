"""``riskctl config show``: effective settings, the source of each, secrets masked, text and --json."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from riskctl.cli.main import cli
from riskctl.config import PROJECT_ROOT, Settings
from tests.helpers import run_riskctl


def _show(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["config", "show", *args], env=env)


def test_show_prints_each_value_with_its_source_and_masks_the_password(clean: Path) -> None:
    cfg = clean / "site.toml"
    cfg.write_text('[job]\nparallelism = 4\n[mysql]\npassword = "from-file"\n')
    cfg.chmod(0o600)  # a password others may read is warned about on stderr, which res.output holds too
    res = _show(
        "--config",
        str(cfg),
        "--set",
        "job.lateness_ms=100",
        env={"RISKCTL_JOB_DELIVERY": "exactly-once", "RISKCTL_MYSQL_PASSWORD": "hunter2"},
    )
    assert res.exit_code == 0, res.output
    assert "hunter2" not in res.output and "from-file" not in res.output
    lines = {line.split(" = ")[0]: line for line in res.output.splitlines() if " = " in line}
    assert lines["parallelism"].endswith(f"# {cfg}")
    assert lines["delivery"].endswith("# RISKCTL_JOB_DELIVERY")
    assert lines["password"].startswith('password = "***"') and lines["password"].endswith(
        "# RISKCTL_MYSQL_PASSWORD"
    )
    assert lines["lateness_ms"].startswith("lateness_ms = 100 ") and lines["lateness_ms"].endswith("# --set")
    assert lines["kafka_port"].endswith("# default")
    assert res.output.startswith(f"# settings file: {cfg}\n")
    assert '# kafka_bootstrap = "127.0.0.1:19092"' in res.output


def test_the_text_is_a_toml_file_that_loads_to_the_same_settings(clean: Path) -> None:
    res = _show("--set", "job.parallelism=3", "--set", "job.restart_backoff_multiplier=1.5")
    assert res.exit_code == 0, res.output
    assert res.output.startswith("# settings file: none\n")
    data = tomllib.loads(res.output)
    assert data["job"]["parallelism"] == 3
    assert data["job"]["restart_backoff_multiplier"] == 1.5
    assert data == {**Settings().redacted(), "job": {**Settings().redacted()["job"], **data["job"]}}
    assert data["stack"]["dir"] == str(PROJECT_ROOT / ".stack")


def test_json_has_the_settings_their_sources_and_the_derived_addresses(clean: Path) -> None:
    (clean / "riskctl.toml").write_text('[kafka]\nbootstrap = "broker:9092"\n')
    res = _show("--json", env={"RISKCTL_MYSQL_PASSWORD": "hunter2", "RISKCTL_STACK_MYSQL_PORT": "3310"})
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["file"] == "riskctl.toml"
    assert out["settings"]["mysql"]["password"] == "***"
    assert out["settings"]["stack"]["mysql_port"] == 3310
    assert out["sources"]["stack"]["mysql_port"] == "RISKCTL_STACK_MYSQL_PORT"
    assert out["sources"]["kafka"]["bootstrap"] == "riskctl.toml"
    assert out["sources"]["job"]["parallelism"] == "default"
    assert out["derived"]["kafka_bootstrap"] == "broker:9092"
    assert out["derived"]["mysql_port"] == 3310
    assert "hunter2" not in res.output
    # the same sections and keys in both
    assert {s: list(v) for s, v in out["sources"].items()} == {s: list(v) for s, v in out["settings"].items()}


def test_an_empty_password_is_shown_empty_not_masked(clean: Path) -> None:
    out = json.loads(_show("--json").output)
    assert out["settings"]["mysql"]["password"] == ""
    assert out["sources"]["mysql"]["password"] == "default"


@pytest.mark.parametrize("as_json", [False, True])
def test_a_bad_setting_is_an_error_naming_it(clean: Path, as_json: bool) -> None:
    args = ["--json"] if as_json else []
    cmd = ["config", "show", *args, "--set", "job.parallelism=four"]
    # in the clean working directory (no riskctl.toml there), not the project root
    res = run_riskctl(*cmd, env={**os.environ, "RISKCTL_JOB_DELIVERY": "exactly_once"}, timeout=60, cwd=clean)
    assert res.returncode == 2
    if as_json:  # the convention of every command (riskctl/cli/common.py): one JSON document on stdout
        assert res.stderr == ""
        error = json.loads(res.stdout)["error"]
        assert error["type"] == "config"
        text = f"error: {error['message']}"
    else:
        assert res.stdout == ""
        text = res.stderr
    assert text.startswith("error: 2 invalid settings:\n")
    assert "RISKCTL_JOB_DELIVERY must be one of at-least-once, exactly-once, got 'exactly_once'" in text
    assert "--set job.parallelism must be an integer from 1 to 32768, got 'four'" in text


def test_a_missing_config_file_is_an_error(clean: Path) -> None:
    res = _show("--config", str(clean / "nope.toml"))
    assert res.exit_code == 2
    assert f"config file {clean / 'nope.toml'} does not exist" in res.stderr
