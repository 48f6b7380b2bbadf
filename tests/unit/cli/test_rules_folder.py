"""``riskctl rules validate`` and ``apply`` on folders whose layout hides rules: every rule the folder shows
is read, or the command says why it is not (never skipped without a word, never pruned from MySQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import riskctl.cli.rules.mysql as rules_mysql
from riskctl.cli.common import ExitCode
from riskctl.cli.main import cli

RULE = "id: {id}\naction: REVIEW\nwhen: event.amount > 1\n"


def _no_mysql(settings: Any, **options: Any) -> Any:
    raise AssertionError("connected to MySQL")


@pytest.mark.parametrize("layout", ["link-to-a-folder", "link-loop"])
def test_a_link_to_a_folder_is_an_error_not_rules_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, layout: str
) -> None:
    # Found in review: links to folders are not followed, so the rules under rules/shared were skipped
    # without a word ('validate': "1 rules valid") and 'apply --prune' deleted them from MySQL; a link
    # looping back to its folder read as a folder without rules.
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "a.yaml").write_text(RULE.format(id="r_a"))
    if layout == "link-to-a-folder":
        shared = tmp_path / "shared"
        shared.mkdir()
        (shared / "b.yaml").write_text(RULE.format(id="r_b"))
        (folder / "shared").symlink_to(shared)
        name = "shared"
    else:
        (folder / "sub").mkdir()
        (folder / "sub" / "again").symlink_to(folder)
        name = "sub/again"
    monkeypatch.setattr(rules_mysql, "connect", _no_mysql)
    runner = CliRunner()
    result = runner.invoke(cli, ["rules", "validate", str(folder)])
    assert result.exit_code == ExitCode.ERROR, result.output
    assert result.stderr.startswith(f"error: {name}: a link to a folder") and "1 error in" in result.stderr
    result = runner.invoke(cli, ["rules", "apply", str(folder), "--prune"])
    assert result.exit_code == ExitCode.ERROR, result.output
    assert (
        f"error: {name}: a link to a folder" in result.stderr and "nothing written to MySQL" in result.stderr
    )
    result = runner.invoke(cli, ["rules", "apply", str(folder), "--json"])
    assert result.exit_code == ExitCode.ERROR
    assert [e["source"] for e in json.loads(result.stdout)["error"]["errors"]] == [name]


def test_a_link_to_a_file_and_a_linked_root_are_read(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "b.yaml").write_text(RULE.format(id="r_b"))
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "b.yaml").symlink_to(shared / "b.yaml")
    (tmp_path / "linked").symlink_to(folder)
    for path in (folder, tmp_path / "linked"):
        result = CliRunner().invoke(cli, ["rules", "validate", str(path), "--json"])
        assert result.exit_code == 0, result.output
        assert [r["id"] for r in json.loads(result.stdout)["rules"]] == ["r_b"]
