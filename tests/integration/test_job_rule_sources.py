"""The other rule sources (JDBC poll, a rules folder) and the exactly-once delivery option, end to end."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyflink.common import Row

from riskctl.config import PROJECT_ROOT, Settings
from riskctl.core.rules import load_rules
from tests.integration.support import Job, S, consume_until, ev, new_job, start_job, wait_rules, wait_status

pytestmark = pytest.mark.integration


def _velocity(job: Job, amounts: tuple[int, ...]) -> dict[str, dict]:
    u = job.user("v")
    events = [ev(f"{u}-{i}", u, "transfer", i * S, amount=a) for i, a in enumerate(amounts)]
    job.send(events)
    return {k.split("-")[-1]: v for k, v in job.decisions_for([e["event_id"] for e in events]).items()}


def test_poll_source_with_exactly_once_delivery(stack: Settings, tmp_path: Path) -> None:
    job = new_job(stack, tmp_path)
    start_job(
        job,
        tmp_path / "job.log",
        {
            "RISKCTL_JOB_RULES_SOURCE": "poll",
            "RISKCTL_JOB_POLL_INTERVAL_MS": "500",
            "RISKCTL_JOB_DELIVERY": "exactly-once",
            "RISKCTL_JOB_PARALLELISM": "1",
        },
    )
    try:
        wait_rules(job)
        d = _velocity(job, (30_000, 25_000))
        assert [d["0"]["action"], d["1"]["action"]] == ["PASS", "REVIEW"]
        # exactly-once: the decisions are in committed transactions, visible to read_committed consumers
        ids = {v["event_id"] for v in d.values()}
        committed = consume_until(
            stack,
            job.topics["decisions"],
            lambda rs: ids <= {r["event_id"] for r in rs},
            timeout=60,
            isolation_level="read_committed",
        )
        assert ids <= {r["event_id"] for r in committed}
        # a rule edit reaches the job through the poll
        from tests.integration.support import edit_velocity

        version, committed_at = edit_velocity(job, 10_000)
        status = wait_status(job, "transfer_velocity", version)
        assert status["state"] == "accepted"
        assert status["seen_at_ms"] / 1000 - committed_at < 3.0  # one poll interval plus the query
        d = _velocity(job, (6_000, 6_000))
        assert d["1"]["action"] == "REVIEW"
    finally:
        job.proc.stop()


def test_rules_folder_source_picks_up_edits(stack: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    shutil.copytree(PROJECT_ROOT / "rules", folder)
    job = new_job(stack, tmp_path)
    start_job(
        job,
        tmp_path / "job.log",
        {
            "RISKCTL_JOB_RULES_SOURCE": "file",
            "RISKCTL_JOB_RULES_DIR": str(folder),
            "RISKCTL_JOB_POLL_INTERVAL_MS": "500",
            "RISKCTL_JOB_PARALLELISM": "1",
        },
    )
    try:
        wait_rules(job)
        d = _velocity(job, (30_000, 25_000))
        assert d["1"]["action"] == "REVIEW"
        text = (folder / "transfer_velocity.yaml").read_text()
        edited = text.replace("when: transfer_sum_5m > 50000", "when: transfer_sum_5m > 10000")
        assert edited != text
        (folder / "transfer_velocity.yaml").write_text("version: 2\n" + edited)
        status = wait_status(job, "transfer_velocity", 2)
        assert status["state"] == "accepted"
        time.sleep(0.5)
        d = _velocity(job, (6_000, 6_000))
        assert d["1"]["action"] == "REVIEW"
        (fired,) = [r for r in d["1"]["rules"] if r["id"] == "transfer_velocity"]
        assert fired["version"] == 2
    finally:
        job.proc.stop()


def test_the_mysql_operators_give_up_on_a_lock_instead_of_blocking_the_job(stack: Settings) -> None:
    """A lock on the rules or status table (LOCK TABLES, an ALTER TABLE, an open transaction) held the rules
    poll's SELECT for as long as it lasted (MariaDB's lock_wait_timeout is a day), and the poll runs in a task
    of the job, so no checkpoint could complete meanwhile. Both operators now give up after
    MYSQL_LOCK_WAIT_S: the poll keeps its rules until a later tick, a status stays queued until written."""
    import threading
    import uuid

    from riskctl.flink.job import MYSQL_LOCK_WAIT_S, MysqlConn, PollRules, RecordRuleStatus
    from riskctl.store.migrations import migrate, quote, table_names
    from riskctl.store.rules_store import RuleStore
    from tests.integration.support import connect_mysql

    table = f"t{uuid.uuid4().hex[:8]}_rules"
    names = table_names(table)
    admin = connect_mysql(stack)
    migrate(admin, rules_table=table)
    store = RuleStore(connect_mysql(stack), table)
    store.apply(store.plan(load_rules(PROJECT_ROOT / "rules")), author="tests")
    store.conn.close()
    poll = PollRules(MysqlConn.of(stack), table)
    assert poll.current(), "the rules are read while nothing holds a lock"
    status = RecordRuleStatus(MysqlConn.of(stack), names.status, retry_ms=0)
    status.open(None)
    row = Row(
        None, json.dumps({"rule_id": "r1", "version": 1, "state": "accepted", "reason": None, "field": None})
    )
    locker = connect_mysql(stack)
    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLES {quote(table)} WRITE, {quote(names.status)} WRITE")
        done: dict[str, Any] = {}

        def run(out: dict[str, Any] = done) -> None:
            start = time.monotonic()
            try:
                poll.current()
            except Exception as exc:  # noqa: BLE001 - what the operator raised, if anything
                out["error"] = exc
            out["seconds"] = time.monotonic() - start

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(MYSQL_LOCK_WAIT_S + 10)
        assert not worker.is_alive(), "the rules poll still waits on the lock"
        assert done["seconds"] < MYSQL_LOCK_WAIT_S + 5, done
        # the status operator never waits (its writer thread does): the decide task goes on
        start = time.monotonic()
        status.map(row)
        assert time.monotonic() - start < 1.0
        time.sleep(MYSQL_LOCK_WAIT_S + 2)  # the writer gave up on the lock at least once
        assert status.writer.is_alive()
        assert status.pending, "the status is kept for later"
    finally:
        with locker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        locker.close()
    deadline = time.monotonic() + MYSQL_LOCK_WAIT_S + 10
    while status.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not status.pending
    with admin.cursor() as cur:
        cur.execute(f"SELECT state FROM {quote(names.status)} WHERE rule_id = 'r1'")  # noqa: S608
        assert cur.fetchall() == (("accepted",),)
        for name in (names.status, names.history, table):
            cur.execute(f"DROP TABLE {quote(name)}")
    status.close()
    admin.close()


def test_a_status_the_status_table_cannot_hold_does_not_hold_back_the_others(stack: Settings) -> None:
    """A rules table whose rule_id was widened by ALTER TABLE lets a row's id outgrow the status table's
    VARCHAR(64): the job refuses the rule, but MySQL refuses its status ('Data too long', strict mode). The
    status stayed first in the queue, retried forever, and no later status reached MySQL: every 'rules apply
    --wait' timed out for the life of the job (found in review)."""
    import uuid

    from riskctl.flink.job import MysqlConn, RecordRuleStatus
    from riskctl.store.migrations import migrate, quote, table_names
    from tests.integration.support import connect_mysql

    table = f"t{uuid.uuid4().hex[:8]}_rules"
    names = table_names(table)
    admin = connect_mysql(stack)
    migrate(admin, rules_table=table)
    status = RecordRuleStatus(MysqlConn.of(stack), names.status, retry_ms=0)
    status.open(None)

    def row(rule_id: str, state: str) -> Row:
        doc = {"rule_id": rule_id, "version": 1, "state": state, "reason": "r", "field": "id"}
        return Row(None, json.dumps(doc))

    try:
        status.map(row("x" * 65, "refused"))
        status.map(row("r1", "accepted"))
        deadline = time.monotonic() + 10
        while status.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not status.pending
        with admin.cursor() as cur:
            cur.execute(f"SELECT rule_id, state FROM {quote(names.status)}")  # noqa: S608
            assert cur.fetchall() == (("r1", "accepted"),)
    finally:
        status.close()
        with admin.cursor() as cur:
            for name in (names.status, names.history, table, *names.console().values()):
                cur.execute(f"DROP TABLE IF EXISTS {quote(name)}")
        admin.close()


def test_the_rules_poll_reads_on_past_a_row_with_a_null_version(stack: Settings) -> None:
    """A version column made NULL-able by ALTER TABLE and one row's version NULL: int(None) failed every read
    of the rules poll, which kept its rules and never saw a later edit of any rule (found in review). The row
    now passes on with no version, for the decide operator to refuse ("the row's version is NULL")."""
    import uuid

    from riskctl.flink.job import MysqlConn, PollRules
    from riskctl.store.migrations import drop_store, quote
    from riskctl.store.rules_store import RuleStore
    from tests.integration.support import connect_mysql

    table = f"t{uuid.uuid4().hex[:8]}_rules"
    admin = connect_mysql(stack)
    store = RuleStore(connect_mysql(stack), table)
    try:
        store.apply(store.plan(load_rules(PROJECT_ROOT / "rules")), author="tests")
        with admin.cursor() as cur:
            cur.execute(f"ALTER TABLE {quote(table)} MODIFY version INT NULL")
            cur.execute(f"UPDATE {quote(table)} SET version = NULL WHERE rule_id = 'bot_cadence'")  # noqa: S608
        current = PollRules(MysqlConn.of(stack), table).current()
        assert current["bot_cadence"][0] is None
        assert current["transfer_velocity"][0] == 1
        assert len(current) == len(load_rules(PROJECT_ROOT / "rules"))
    finally:
        store.conn.close()
        drop_store(admin, table)
        admin.close()


@dataclass
class StatusTable:
    """A fresh rules store's status table on the real MariaDB, for RecordRuleStatus operators."""

    names: Any
    #: a connection of the tests' own (not counted in ``opened``)
    admin: Any
    #: the MySQL thread ids of the connections the operators opened
    opened: list[int]

    def op(self, stack: Settings) -> Any:
        from riskctl.flink.job import MysqlConn, RecordRuleStatus

        return RecordRuleStatus(MysqlConn.of(stack), self.names.status, retry_ms=100)

    def left(self) -> list[int]:
        """The operators' connections still open on the server."""
        with self.admin.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST")
            return sorted(set(self.opened) & {r[0] for r in cur.fetchall()})

    def written(self) -> list[tuple[str, int]]:
        from riskctl.store.migrations import quote

        with self.admin.cursor() as cur:
            cur.execute(f"SELECT rule_id, version FROM {quote(self.names.status)}")  # noqa: S608
            return sorted(cur.fetchall())


@pytest.fixture
def status_table(stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[StatusTable]:
    import uuid

    from riskctl.flink.job import MysqlConn
    from riskctl.store.migrations import drop_store, migrate, table_names
    from tests.integration.support import connect_mysql

    table = f"t{uuid.uuid4().hex[:8]}_rules"
    admin = connect_mysql(stack)
    migrate(admin, rules_table=table)
    opened: list[int] = []
    real = MysqlConn.connect

    def counted(self: MysqlConn, *, autocommit: bool = False) -> Any:
        conn = real(self, autocommit=autocommit)
        opened.append(conn.thread_id())
        return conn

    monkeypatch.setattr(MysqlConn, "connect", counted)
    try:
        yield StatusTable(table_names(table), admin, opened)
    finally:
        drop_store(admin, table)
        admin.close()


def _status(rule_id: str, version: int) -> Row:
    doc = {"rule_id": rule_id, "version": version, "state": "accepted", "reason": None, "field": None}
    return Row(None, json.dumps(doc))


def _writers() -> int:
    import threading

    return sum(1 for t in threading.enumerate() if t.name == "riskctl-rule-status")


def _until(condition: Any, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


def test_attempts_of_the_status_operator_leave_no_mysql_connection(
    stack: Settings, status_table: StatusTable
) -> None:
    """The TaskManager's interpreter outlives every attempt of the job: 20 attempts of the status operator,
    half of them never closed (a failure that skipped close), against the real MariaDB. Each writes a status;
    at the end no connection any of them opened is left on the server, and no writer thread in here."""
    t = status_table
    ops = []
    for attempt in range(1, 21):
        op = t.op(stack)
        op.open(None)
        op.map(_status("r1", attempt))
        assert _until(lambda: not op.pending)  # noqa: B023 - waited for within the iteration
        if attempt % 2:
            op.close()
        ops.append(op)
    assert _writers() == 1  # the last attempt's, not closed
    ops[-1].close()
    assert _until(lambda: not t.left() and not _writers())
    assert len(t.opened) >= 20
    assert t.left() == [], f"{len(t.left())} of the operators' {len(t.opened)} connections still open"
    assert _writers() == 0
    assert t.written() == [("r1", v) for v in range(1, 21)]  # each attempt's status


def test_an_idle_status_writer_leaves_mariadb_and_the_next_status_reconnects(
    stack: Settings, status_table: StatusTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator never closed (Flink dropped it) kept its writer thread and MySQL connection, idle, until
    another operator of its table opened. Now both go after IDLE_CLOSE_S with nothing queued, against the
    real MariaDB, and a later status is written by a new writer."""
    from riskctl.flink.job import RecordRuleStatus

    monkeypatch.setattr(RecordRuleStatus, "IDLE_CLOSE_S", 0.5, raising=False)
    t = status_table
    op = t.op(stack)
    try:
        op.open(None)  # never closed until the end
        op.map(_status("r1", 1))
        assert _until(lambda: ("r1", 1) in t.written())
        assert _until(lambda: not t.left() and not _writers()), (
            "the writer or its connection still there, idle"
        )
        op.map(_status("r2", 1))
        assert _until(lambda: ("r2", 1) in t.written())
        assert len(t.opened) == 2
    finally:
        op.close()
