"""``riskctl run`` (and ``submit`` to the local stack's cluster) refuse a ``python.executable`` or
``python.client.executable`` in flink.options that cannot run the job, at start: one line naming the option,
its value and why, exit 2 like any refused setting (riskctl.flink.env.check_python_options).

Was: the job started, and each attempt failed inside Flink ('java.io.IOException: Cannot run program
"/nonexistent/py"') until the restart strategy gave up, after the topics and tables were made."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import riskctl.flink.main
from riskctl.cli.common import ExitCode
from riskctl.cli.main import cli
from riskctl.config.checks import is_refused
from riskctl.errors import ConfigError
from riskctl.flink.env import check_python_options

HINT = f"(name a Python that has pyflink and riskctl, such as {sys.executable}, or leave the option out)"


def _script(path: Path, text: str, mode: int = 0o755) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def _bad_pythons(tmp: Path) -> list[tuple[str, str]]:
    """(value of python.executable, why it is refused)"""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return [
        (str(tmp / "nonexistent" / "py"), "names no file"),
        (_script(tmp / "not-executable", "#!/bin/sh\n", mode=0o644), "is not executable"),
        (str(tmp), "is a folder, not a program"),
        ("riskctl-no-such-python", "names no program on the PATH"),
        # a Python without pyflink and riskctl, whatever PYTHONPATH says: this one, isolated, without site
        (
            _script(tmp / "bare-python", f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n'),
            "cannot import pyflink and riskctl: ModuleNotFoundError: No module named 'pyflink'",
        ),
        (
            _script(tmp / "other-python", "#!/bin/sh\necho 3.99\n"),
            f"is Python 3.99; the job is built by Python {here}, and its functions load in that version",
        ),
        (_script(tmp / "not-python", "#!/bin/sh\nexit 0\n"), "is not a Python (exit status 0)"),
    ]


def test_each_bad_python_is_a_refused_setting_naming_the_option_and_why(tmp_path: Path) -> None:
    for value, why in _bad_pythons(tmp_path):
        with pytest.raises(ConfigError) as info:
            check_python_options({"python.executable": value})
        assert str(info.value) == f"flink.options: python.executable={value} {why} {HINT}"
        assert is_refused(info.value)


def test_the_client_python_is_checked_too(tmp_path: Path) -> None:
    missing = str(tmp_path / "py")
    with pytest.raises(ConfigError) as info:
        check_python_options({"python.executable": sys.executable, "python.client.executable": missing})
    assert str(info.value) == f"flink.options: python.client.executable={missing} names no file {HINT}"


def test_both_options_naming_one_bad_program_are_checked_once(tmp_path: Path) -> None:
    shell = _script(tmp_path / "not-python", f"#!/bin/sh\necho run >> {tmp_path / 'runs'}\nexit 1\n")
    with pytest.raises(ConfigError) as info:
        check_python_options({"python.executable": shell, "python.client.executable": shell})
    why = "is not a Python (exit status 1)"
    assert str(info.value) == (
        f"flink.options: python.executable={shell} {why}; python.client.executable={shell} {why} {HINT}"
    )
    assert (tmp_path / "runs").read_text() == "run\n"  # run once for both


def test_a_python_that_has_pyflink_and_riskctl_passes() -> None:
    check_python_options({"python.executable": sys.executable, "python.client.executable": sys.executable})
    check_python_options({"rest.port": "8082"})  # nothing named: nothing to run


@pytest.fixture
def started(clean: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """No RISKCTL_* variable of the developer's shell, an empty stack folder; the job's entry point replaced
    by one that records its arguments (the list returned) instead of starting a MiniCluster."""
    monkeypatch.setenv("RISKCTL_STACK_DIR", str(clean / "stack"))
    calls: list[list[str]] = []

    def job_main(argv: list[str] | None = None) -> int:
        calls.append(list(argv or []))
        return 0

    monkeypatch.setattr(riskctl.flink.main, "main", job_main)
    return calls


def test_run_refuses_a_bad_python_before_the_job_starts(tmp_path: Path, started: list[list[str]]) -> None:
    missing = str(tmp_path / "nonexistent" / "py")
    result = CliRunner().invoke(cli, ["run", "--set", f"flink.options=python.executable={missing}"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stderr == f"error: flink.options: python.executable={missing} names no file {HINT}\n"
    assert started == []
    # from the environment alike, with other options around it
    env = {"RISKCTL_FLINK_OPTIONS": f"rest.port=8082;python.client.executable={missing}"}
    result = CliRunner().invoke(cli, ["run"], env=env)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stderr == f"error: flink.options: python.client.executable={missing} names no file {HINT}\n"
    assert started == []


def test_run_starts_the_job_with_a_good_python(started: list[list[str]]) -> None:
    option = f"flink.options=python.executable={sys.executable}"
    result = CliRunner().invoke(cli, ["run", "--set", option])
    assert result.exit_code == 0, result.output
    assert started == [["--set", option, "--name", "riskctl"]]


class _Overview(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rest_url() -> Iterator[str]:
    """A Flink REST endpoint that answers /overview, as the local stack's cluster does when it runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Overview)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _flink(home: Path, called: Path) -> None:
    (home / "bin").mkdir(parents=True)
    _script(home / "bin" / "flink", f'#!/bin/sh\nprintf "%s\\n" "$@" > {called}\n')


def test_submit_to_the_local_cluster_refuses_a_bad_python(
    tmp_path: Path, started: list[list[str]], rest_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the local stack's TaskManagers run on this machine: the Python they would run is checked here
    called = tmp_path / "called"
    _flink(tmp_path / "stack" / "flink" / "home", called)
    monkeypatch.setenv("RISKCTL_FLINK_REST_URL", rest_url)
    bare = _script(tmp_path / "bare-python", f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    result = CliRunner().invoke(cli, ["submit", "--set", f"flink.options=python.executable={bare}"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stderr.startswith(f"error: flink.options: python.executable={bare} cannot import pyflink")
    assert result.stderr.count("\n") == 1
    assert not called.exists()
    result = CliRunner().invoke(cli, ["submit", "--set", f"flink.options=python.executable={sys.executable}"])
    assert result.exit_code == 0, result.output
    assert called.exists()


def test_submit_to_another_cluster_leaves_its_pythons_to_its_machines(
    tmp_path: Path, started: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a path of the cluster's TaskManagers, which need not exist on the machine that submits
    called = tmp_path / "called"
    _flink(tmp_path / "flink", called)
    monkeypatch.setenv("FLINK_HOME", str(tmp_path / "flink"))
    option = "flink.options=python.executable=/opt/venv/bin/python"
    result = CliRunner().invoke(cli, ["submit", "--set", option])
    assert result.exit_code == 0, result.output
    assert option in called.read_text().splitlines()


def test_a_bad_python_whose_name_holds_a_line_break_is_refused_on_one_line(tmp_path: Path) -> None:
    """The option's value is quoted as given: a line break (or ESC) in it split the error and could forge a
    line of its own ('error: ...'). It is escaped, as in the configuration's other errors."""
    missing = str(tmp_path / "py\nerror: all is well\x1b[2K")
    with pytest.raises(ConfigError) as err:
        check_python_options({"python.executable": missing})
    text = str(err.value)
    assert "\n" not in text and "\x1b" not in text
    assert "py\\nerror: all is well\\x1b[2K" in text
