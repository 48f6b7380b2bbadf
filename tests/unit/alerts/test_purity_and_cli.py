"""The pure parts import no Kafka, HTTP or SMTP client; ``riskctl alerts check`` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from riskctl.cli.main import cli
from riskctl.config import PROJECT_ROOT
from tests.helpers import run_riskctl

PURE = ["model", "settings", "routing", "templates", "ratelimit", "ledger", "signing", "messages"]


def test_the_pure_modules_import_no_io_client() -> None:
    code = (
        "import sys\n"
        + "".join(f"import riskctl.alerts.{m}\n" for m in PURE)
        + "clients = ('kafka', 'urllib.request', 'http.client', 'smtplib', 'ssl')\n"
        + "bad = [m for m in clients if m in sys.modules]\n"
        + "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True
    ).stdout
    assert out.strip() == "[]"


def test_check_shows_the_example_without_secrets(env: dict[str, str]) -> None:
    res = CliRunner().invoke(
        cli, ["alerts", "check", "--config", str(PROJECT_ROOT / "alerts.example.yaml"), "--json"], env=env
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert {c["name"] for c in doc["channels"]} == {
        "risk-oncall",
        "fraud-team",
        "case-system",
        "reviewers-mail",
        "oncall-phone",
    }
    assert next(c for c in doc["channels"] if c["name"] == "risk-oncall")["signed"] is True
    for secret in env.values():
        assert secret not in res.output


def test_check_refuses_a_bad_file_with_exit_code_3_and_every_field(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.yaml"
    bad.write_text(
        "channels:\n  h: {type: webhook, url: 'ftp://x'}\n"
        "routes: [{match: {actions: [BLOCK]}, channels: [h]}]\n"
    )
    res = CliRunner().invoke(cli, ["alerts", "check", "--config", str(bad)])
    assert res.exit_code == 3
    assert "channels.h.url: must be an http:// or https:// URL" in res.output
    assert "routes[0].match.actions: 'BLOCK' is not one of PASS, REVIEW, REJECT" in res.output


def test_run_without_kafka_exits_3_naming_the_broker(tmp_path: Path) -> None:
    config = tmp_path / "alerts.yaml"
    config.write_text("channels: {h: {type: webhook, url: 'http://127.0.0.1:9/x'}}\ndefault_channels: [h]\n")
    env = {**os.environ, "RISKCTL_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    res = run_riskctl("alerts", "run", "--config", str(config), env=env, timeout=60)
    assert res.returncode == 3
    assert res.stderr.strip() == (
        "error: kafka: no broker answers at 127.0.0.1:1: "
        "run 'riskctl stack up' (or set RISKCTL_KAFKA_BOOTSTRAP)"
    )
