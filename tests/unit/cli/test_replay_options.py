"""``riskctl replay``'s --lateness, --state-ttl and --now take ASCII digits only (found in review).

``str.isdigit()`` is true of '²' and of other scripts' digits, which ``int()`` refuses (or reads):
``--lateness ²`` and ``--now ²`` ended with ``ValueError: invalid literal for int()`` and a traceback instead
of a usage error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from riskctl.cli.main import cli
from riskctl.config import PROJECT_ROOT


@pytest.mark.parametrize("option", ["--lateness", "--state-ttl", "--now"])
@pytest.mark.parametrize("value", ["²", "①", "\u0661\u0662"])
def test_a_digit_of_another_kind_is_bad_usage(tmp_path: Path, option: str, value: str) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    res = CliRunner().invoke(
        cli, ["replay", "--rules", str(PROJECT_ROOT / "rules"), option, value, str(events)]
    )
    assert res.exit_code == 2, (res.output, res.exception)
    assert f"Invalid value for '{option}'" in res.output


def test_ascii_digits_still_work(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    args = ["--lateness", "2000", "--state-ttl", "60000", "--now", "1700000000000", "--json"]
    res = CliRunner().invoke(cli, ["replay", "--rules", str(PROJECT_ROOT / "rules"), *args, str(events)])
    assert res.exit_code == 0, res.output
    assert '"now": 1700000000000' in res.stderr
