"""The job's MySQL operators while MySQL is away (issue 11): nothing raises, nothing is lost.

Before: RecordRuleStatus raised after one reconnect (Flink restarted the whole job), and the poll source
raised on the first tick without MySQL. The real outage is in tests/integration/test_outages.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pyflink.common import Row

from riskctl.flink.job import MysqlConn, PollRules, RecordRuleStatus

CONN = MysqlConn("127.0.0.1", 1, "u", "p", "db")


class FakeMysql:
    """Stands for pymysql: ``up`` says whether the server answers; executed statements are recorded."""

    def __init__(self) -> None:
        self.up = True
        self.connects = 0
        self.rows: dict[str, tuple[Any, ...]] = {}
        self.table_rows: list[tuple[Any, ...]] = []
        self.delay = 0.0  # seconds each statement with values takes (a busy server)
        self.statements: list[str] = []

    def connect(self, **_: Any) -> FakeMysql.Connection:
        self.connects += 1
        if not self.up:
            msg = "(2003, \"Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)\")"
            raise ConnectionRefusedError(msg)
        return FakeMysql.Connection(self)

    class Connection:
        def __init__(self, server: FakeMysql) -> None:
            self.server = server

        def ping(self, reconnect: bool = False) -> None:
            if not self.server.up:
                msg = "(2013, 'Lost connection to MySQL server during query')"
                raise ConnectionError(msg)

        def cursor(self) -> FakeMysql.Cursor:
            return FakeMysql.Cursor(self.server)

        def close(self) -> None:
            pass

    class Cursor:
        def __init__(self, server: FakeMysql) -> None:
            self.server = server

        def __enter__(self) -> FakeMysql.Cursor:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def execute(self, sql: str, args: tuple[Any, ...] | None = None) -> None:
            if not self.server.up:
                msg = "(2013, 'Lost connection to MySQL server during query')"
                raise ConnectionError(msg)
            self.server.statements.append(sql)
            if args is not None:
                time.sleep(self.server.delay)
                self.server.rows[str(args[0])] = args

        def fetchall(self) -> list[tuple[Any, ...]]:
            return self.server.table_rows


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeMysql:
    fake = FakeMysql()
    monkeypatch.setattr(MysqlConn, "connect", lambda self, autocommit=False: fake.connect())
    return fake


def _status(rule_id: str, version: int, state: str = "accepted") -> Row:
    doc = {"rule_id": rule_id, "version": version, "state": state, "reason": None, "field": None}
    return Row(rule_id, json.dumps(doc))


def _until(condition: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    return bool(condition())


def test_rule_status_queues_while_mysql_is_down_and_writes_when_it_is_back(server: FakeMysql) -> None:
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=300)
    op.open(None)
    try:
        op.map(_status("a", 1))
        assert _until(lambda: "a" in server.rows)
        server.up = False
        out = op.map(_status("a", 2))  # no exception: the job goes on
        assert out[0] == "a"
        op.map(_status("b", 1))
        op.map(_status("b", 2))
        connects = server.connects
        time.sleep(1.0)
        assert set(op.pending) == {"a", "b"}
        assert op.pending["b"][1] == 2  # the latest status per rule is what is kept
        assert server.connects - connects <= 6, "attempts at least retry_ms apart"
        server.up = True
        assert _until(lambda: not op.pending)
        assert {k: v[1] for k, v in server.rows.items()} == {"a": 2, "b": 2}
    finally:
        op.close()


def test_rule_status_starts_while_mysql_is_down(server: FakeMysql) -> None:
    server.up = False
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=1000)
    op.open(None)  # used to raise: the job could not start, or restart, during an outage
    op.map(_status("a", 1))
    assert set(op.pending) == {"a"}
    server.up = True
    op.close()  # a last attempt on close
    assert server.rows["a"][1] == 1


def test_a_status_never_waits_for_mysql_in_the_operator(server: FakeMysql) -> None:
    """The operator is chained to the decide operator (parallelism 1): a write in ``map`` held the events
    for a round trip and a commit per rule change (bench/rule_bulk_job.py)."""
    server.delay = 0.5
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=1000)
    op.open(None)
    try:
        start = time.monotonic()
        for v in range(1, 4):
            op.map(_status("a", v))
        assert time.monotonic() - start < 0.3
        assert _until(lambda: server.rows.get("a", (None, 0))[1] == 3)
    finally:
        op.close()


def test_a_burst_of_statuses_is_written_in_a_few_transactions(server: FakeMysql) -> None:
    server.delay = 0.01
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=1000)
    op.open(None)
    try:
        for i in range(200):
            op.map(_status(f"r{i}", 1))
        assert _until(lambda: len(server.rows) == 200)
    finally:
        op.close()
    transactions = server.statements.count("BEGIN")
    assert 1 <= transactions <= 20, f"{transactions} transactions for 200 statuses"


def test_poll_source_keeps_its_rules_while_mysql_is_down(server: FakeMysql) -> None:
    poll = PollRules(CONN, "rules")
    server.table_rows = [("r1", 1, "active", json.dumps({"id": "r1"}))]
    first = list(poll.flat_map(Row(0)))
    assert [(r[0], r[1]) for r in first] == [("upsert", "r1"), ("sync", "")]  # then: every rule id there is
    assert json.loads(first[1][3]) == ["r1"]
    server.up = False
    assert list(poll.flat_map(Row(1))) == []  # used to raise: the job restarted on every tick
    server.up = True
    server.table_rows = [("r1", 2, "active", json.dumps({"id": "r1"}))]
    # the ticks of the next READ_RETRY_S pass without a query: those that queued while a read waited on a
    # lock or a silent server go at once, and the checkpoint barrier with them
    connects = server.connects
    assert list(poll.flat_map(Row(2))) == [] and server.connects == connects
    poll.retry_at = time.monotonic()  # READ_RETRY_S later
    changes = list(poll.flat_map(Row(3)))
    assert [(r[0], r[1], r[2]) for r in changes] == [("upsert", "r1", 2)]  # an edit, not a delete + add


@pytest.mark.parametrize("value", [0, -1000])
def test_cdc_keepalive_must_be_positive(value: int) -> None:
    from riskctl.config import load_settings
    from riskctl.errors import ConfigError
    from riskctl.flink.job import _rules_cdc

    # load_settings refuses such a value (tests/unit/config); the job checks again for settings built in code
    settings = load_settings(env={"RISKCTL_MYSQL_PASSWORD": "x"})
    settings.job.cdc_keepalive_ms = value
    with pytest.raises(ConfigError, match="job.cdc_keepalive_ms must be a positive number"):
        _rules_cdc(None, None, settings)  # type: ignore[arg-type]
