"""``riskctl run`` and ``riskctl submit`` refuse a bad --set before anything starts: bad usage (exit 2),
one error line, like a bad option."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from riskctl.cli.common import ExitCode
from riskctl.cli.main import cli


@pytest.mark.parametrize("command", ["run", "submit"])
@pytest.mark.parametrize("override", ["job.parallelism", "nosuch.section=1", "job.nosuchkey=1"])
def test_a_bad_set_is_bad_usage(command: str, override: str) -> None:
    result = CliRunner().invoke(cli, [command, "--set", override])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stdout == ""
    # one line; a near miss also gets a suggestion ("did you mean job.parallelism?")
    # the pair is named by its key only: what follows may be a secret (config/test_secret_messages.py)
    line = f"error: --set takes section.key=value with a known setting, got {override.split('=')[0]!r}"
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
