"""The store subcommands of ``riskctl rules`` turn MySQL's errors into riskctl's: exit code and one line (or
one JSON document), never a driver's traceback. MySQL is replaced by a store that raises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pymysql
import pytest
from click.testing import CliRunner

import riskctl.cli.rules.mysql as rules_mysql
from riskctl.cli.common import ExitCode
from riskctl.cli.main import cli
from riskctl.errors import ServiceError, StoreQueryError

RULES_DIR = Path(__file__).resolve().parents[3] / "rules"


class _Closed:
    def close(self) -> None:
        pass

    def cursor(self) -> _Closed:
        return self

    def __enter__(self) -> _Closed:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Any = None) -> None:
        pass


def _store_raising(error: BaseException) -> type:
    class Store:
        def __init__(self, conn: Any, table: str) -> None:
            pass

        def current(self) -> list[Any]:
            raise error

    return Store


@pytest.mark.parametrize(
    ("error", "code", "kind", "message"),
    [
        (
            pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
            ExitCode.UNAVAILABLE,
            "unavailable",
            "MySQL: connection to 127.0.0.1:",
        ),
        (  # the socket closed by the server (a killed connection): was "MySQL error: (0, '')", exit 1
            pymysql.err.InterfaceError(0, ""),
            ExitCode.UNAVAILABLE,
            "unavailable",
            "MySQL: connection to 127.0.0.1:",
        ),
        (
            pymysql.err.OperationalError(1644, "refused by the test trigger"),
            ExitCode.ERROR,
            "mysql",
            "MySQL error 1644: refused by the test trigger",
        ),
        (
            pymysql.err.ProgrammingError(1146, "Table 'riskctl.rules' doesn't exist"),
            ExitCode.ERROR,
            "mysql",
            "MySQL error 1146: Table 'riskctl.rules' doesn't exist",
        ),
    ],
    ids=["server-gone", "socket-closed", "operational", "other"],
)
def test_mysql_errors_end_the_command_with_one_line_and_their_code(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, code: ExitCode, kind: str, message: str
) -> None:
    monkeypatch.setattr(rules_mysql, "connect", lambda settings, **options: _Closed())
    monkeypatch.setattr(rules_mysql, "RuleStore", _store_raising(error))
    result = CliRunner().invoke(cli, ["rules", "list"])
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    result = CliRunner().invoke(cli, ["rules", "list", "--json"])
    assert result.exit_code == code
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["error"]["type"] == kind and message in doc["error"]["message"]


def test_a_connection_closed_in_the_middle_says_what_became_of_the_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pymysql raises InterfaceError (0, '') on a connection whose socket the server closed; the CLI made it
    # "MySQL error: (0, '')" (StoreQueryError, exit 1) where the store's refusal() says MySQL is away
    monkeypatch.setattr(rules_mysql, "connect", lambda settings, **options: _Closed())
    monkeypatch.setattr(rules_mysql, "RuleStore", _store_raising(pymysql.err.InterfaceError(0, "")))
    with pytest.raises(ServiceError) as caught, rules_mysql.open_store() as store:
        store.current()
    message = str(caught.value)
    assert "lost in the middle of the command: MySQL rolls back a change it had not committed" in message
    assert "'riskctl rules list'" in message and "(0, '')" not in message and "()" not in message


def test_an_error_mysql_answers_keeps_its_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_mysql, "connect", lambda settings, **options: _Closed())
    error = pymysql.err.OperationalError(1644, "refused by the test trigger")
    monkeypatch.setattr(rules_mysql, "RuleStore", _store_raising(error))
    with pytest.raises(StoreQueryError) as caught, rules_mysql.open_store() as store:
        store.current()
    assert caught.value.code == 1644 and str(caught.value) == "MySQL error 1644: refused by the test trigger"


@pytest.mark.parametrize("args", [["disable", "r1"], ["apply", str(RULES_DIR)]], ids=["disable", "apply"])
@pytest.mark.parametrize("seconds", ["nan", "inf", "1e999"])
def test_wait_refuses_seconds_that_are_not_finite(
    monkeypatch: pytest.MonkeyPatch, args: list[str], seconds: str
) -> None:
    # Was accepted: 'nan' skipped the wait and exited 0 without the job's report (nan > 0 is false); 'inf'
    # polled rule_status forever when the job did not report (time.monotonic() >= inf is never true).
    def no_mysql(settings: Any) -> Any:
        raise AssertionError("the command must end before it connects")

    monkeypatch.setattr(rules_mysql, "connect", no_mysql)
    result = CliRunner().invoke(cli, ["rules", *args, "--wait", seconds])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "NaN and infinity are refused" in result.stderr


@pytest.mark.parametrize(
    ("option", "env", "message"),
    [
        (["--comment", "bad \udcff byte"], {}, "the comment is not UTF-8 text"),
        (["--author", "\udcffme"], {}, "the author is not UTF-8 text"),
        ([], {"RISKCTL_AUTHOR": "me\udcff"}, "$RISKCTL_AUTHOR is not UTF-8 text"),
        (["--author", "a" * 129], {}, "the author is 129 characters; the history keeps at most 128"),
        (["-m", "\u00e9" * 32_768], {}, "the comment is 65536 bytes in UTF-8; the history keeps at most"),
    ],
    ids=["comment-not-utf8", "author-not-utf8", "env-author-not-utf8", "author-too-long", "comment-too-long"],
)
def test_author_and_comment_that_mysql_cannot_store_are_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, option: list[str], env: dict[str, str], message: str
) -> None:
    # A byte that is not UTF-8 in an argument (or $RISKCTL_AUTHOR) reaches Python as a lone surrogate: the
    # write ended in a UnicodeEncodeError traceback inside pymysql (on the real MariaDB); too long a value was
    # refused by MySQL only after the rule was read and locked ('Data too long for column').
    def no_mysql(settings: Any) -> Any:
        raise AssertionError("the command must end before it connects")

    monkeypatch.setattr(rules_mysql, "connect", no_mysql)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["rules", "disable", "r1", *option])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_a_comment_at_the_limit_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rules_mysql.storable_text("\u00e9" * 32_767 + "a", "c", max_bytes=65_535)
    monkeypatch.setenv("RISKCTL_AUTHOR", "a" * 128)
    assert rules_mysql.default_author() == "a" * 128


def test_a_mysql_that_never_answers_ends_the_command_instead_of_holding_it(clean: Any) -> None:
    # Found in review: pymysql waits for an answer forever unless told otherwise; against a listener that
    # accepts the connection and never writes (a frozen server, packets dropped) 'riskctl rules list' was
    # still in the handshake after 60 s, and '--wait N' outlived its N.
    import os
    import socket
    import subprocess
    import sys
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the connections; nobody ever reads or writes them
    port = silent.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKCTL_")}
    env.update(RISKCTL_MYSQL_HOST="127.0.0.1", RISKCTL_MYSQL_PORT=str(port), RISKCTL_MYSQL_PASSWORD="x")
    code = (
        "import riskctl.cli.rules.mysql as m; m.MYSQL_TIMEOUT_S = 1.0; "
        "from riskctl.cli.main import cli; cli(['rules', 'list'])"
    )
    started = time.monotonic()
    try:
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("'riskctl rules list' still waits for a MySQL that never answers after 30 s")
    finally:
        silent.close()
    assert run.returncode == ExitCode.UNAVAILABLE, run.stderr
    assert run.stderr.startswith("error: MySQL: ") and "Traceback" not in run.stderr
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("layout", ["empty", "other-extension"])
def test_apply_prune_of_a_folder_without_rules_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, layout: str
) -> None:
    # Found in review: the plan deleted every rule in MySQL and the command ended with exit 0.
    folder = tmp_path / "rules"
    folder.mkdir()
    if layout == "other-extension":
        (folder / "r.YAML").write_text("id: r1\naction: REVIEW\nwhen: event.amount > 1\n")

    def no_mysql(settings: Any, **options: Any) -> Any:
        raise AssertionError("connected to MySQL")

    monkeypatch.setattr(rules_mysql, "connect", no_mysql)
    result = CliRunner().invoke(cli, ["rules", "apply", str(folder), "--prune"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "holds no rule" in result.stderr and "--prune would delete every rule in MySQL" in result.stderr
    assert "--allow-empty" in result.stderr
    # said twice, it goes on to MySQL (here: the fake that refuses)
    result = CliRunner().invoke(cli, ["rules", "apply", str(folder), "--prune", "--allow-empty"])
    assert isinstance(result.exception, AssertionError)
    # without --prune an empty folder deletes nothing: it goes on as before
    result = CliRunner().invoke(cli, ["rules", "apply", str(folder)])
    assert isinstance(result.exception, AssertionError)
