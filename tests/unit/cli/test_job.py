"""``riskctl run`` and ``riskctl submit`` refuse a bad --set before anything starts: bad usage (exit 2),
one error line, like a bad option."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture
def fake_flink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``flink`` client in $FLINK_HOME that writes its arguments to a file; the stack folder is empty (no
    local cluster client, no checkpoints)."""
    home = tmp_path / "flink"
    (home / "bin").mkdir(parents=True)
    args = tmp_path / "args"
    flink = home / "bin" / "flink"
    flink.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\n')
    flink.chmod(0o755)
    monkeypatch.setenv("FLINK_HOME", str(home))
    monkeypatch.setenv("RISKCTL_STACK_DIR", str(tmp_path / "stack"))
    return args


def _submitted(args_file: Path) -> tuple[str, list[str]]:
    """The ``-p`` given to ``flink run`` and the job's ``--set`` pairs for job.parallelism."""
    args = args_file.read_text().splitlines()
    sets = [
        args[i + 1] for i, a in enumerate(args) if a == "--set" and args[i + 1].startswith("job.parallelism=")
    ]
    return args[args.index("-p") + 1], sets


def test_submit_runs_the_parallelism_given_by_set(fake_flink: Path) -> None:
    # --set job.parallelism=4 was followed by --set job.parallelism=<the file's value> and 'flink run -p 1'
    result = CliRunner().invoke(cli, ["submit", "--set", "job.parallelism=4"])
    assert result.exit_code == 0, result.output
    p, sets = _submitted(fake_flink)
    assert p == "4" and sets[-1] == "job.parallelism=4", (p, sets)
    result = CliRunner().invoke(cli, ["submit", "--set", "job.parallelism=4", "-p", "3"])
    assert result.exit_code == 0, result.output
    p, sets = _submitted(fake_flink)
    assert p == "3" and sets[-1] == "job.parallelism=3", (p, sets)


@pytest.mark.parametrize("bad", ["0", "-3", "32769"])
def test_submit_refuses_a_parallelism_flink_cannot_run(fake_flink: Path, bad: str) -> None:
    # -p 0 silently became job.parallelism; -p -3 reached 'flink run -p -3'
    result = CliRunner().invoke(cli, ["submit", "-p", bad])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--parallelism" in result.stderr
    assert not fake_flink.exists()


def test_submit_to_the_local_cluster_stopped_is_one_line_and_status_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with the stack's cluster stopped, its 'flink run' retried for 73 s and printed a Java trace of 106
    # lines, status 31
    stack = tmp_path / "stack"
    (stack / "flink" / "home" / "bin").mkdir(parents=True)
    called = tmp_path / "called"
    flink = stack / "flink" / "home" / "bin" / "flink"
    flink.write_text(f"#!/bin/sh\ntouch {called}\n")
    flink.chmod(0o755)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("RISKCTL_STACK_DIR", str(stack))
    monkeypatch.setenv("RISKCTL_FLINK_REST_URL", f"http://127.0.0.1:{closed}")
    result = CliRunner().invoke(cli, ["submit"])
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    assert result.stderr.startswith(
        f"error: the local Flink cluster does not answer at http://127.0.0.1:{closed}"
    )
    assert "riskctl stack up --flink" in result.stderr and result.stderr.count("\n") == 1
    assert not called.exists()
