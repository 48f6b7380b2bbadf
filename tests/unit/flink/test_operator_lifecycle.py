"""The job's operators across many open/close cycles in one interpreter (thread mode: the TaskManager's
interpreter outlives every attempt of the job, so what an attempt leaves behind piles up restart after
restart). The rule-status operator is driven as in test_mysql_outage_operators.py, without a cluster.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from riskctl.flink import job
from riskctl.flink.job import MysqlConn, RecordRuleStatus
from tests.unit.flink.test_mysql_outage_operators import FakeMysql, _status, _until

CONN = MysqlConn("127.0.0.1", 1, "u", "p", "db")
CYCLES = 50


class CountingMysql(FakeMysql):
    """FakeMysql that counts the connections not closed yet; a closed connection fails its statements, as
    a pymysql connection closed under a running statement does."""

    def __init__(self) -> None:
        super().__init__()
        self.open: set[CountingMysql.Conn] = set()
        self.guard = threading.Lock()

    def connect(self, **_: Any) -> CountingMysql.Conn:
        self.connects += 1
        if not self.up:
            raise ConnectionRefusedError('(2003, "Can\'t connect to MySQL server")')
        conn = CountingMysql.Conn(self)
        with self.guard:
            self.open.add(conn)
        return conn

    class Conn(FakeMysql.Connection):
        def __init__(self, server: CountingMysql) -> None:
            super().__init__(server)
            self.closed = False

        def cursor(self) -> FakeMysql.Cursor:
            return CountingMysql.Cur(self)

        def close(self) -> None:
            self.closed = True
            server: Any = self.server
            with server.guard:
                server.open.discard(self)

    class Cur(FakeMysql.Cursor):
        def __init__(self, conn: CountingMysql.Conn) -> None:
            super().__init__(conn.server)
            self.conn = conn

        def execute(self, sql: str, args: tuple[Any, ...] | None = None) -> None:
            super().execute(sql, args)
            if self.conn.closed:
                raise ConnectionError("(0, 'Not connected')")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingMysql]:
    fake = CountingMysql()
    monkeypatch.setattr(MysqlConn, "connect", lambda self, autocommit=False: fake.connect())
    yield fake
    # the interpreter-wide registries must not carry one test's operators or statuses into the next
    for op in list(getattr(job, "_STATUS_WRITERS", {}).values()):
        op.close()
    getattr(job, "_UNWRITTEN", {}).clear()


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "riskctl-rule-status")


def _started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """The threads alive now that were not alive at ``before``: what the test left behind. (Not a count
    against ``threading.active_count()``: a thread of an earlier test ending meanwhile made that count one
    short in CI.)"""
    return [t for t in threading.enumerate() if t not in before]


def test_open_close_cycles_leave_no_thread_or_connection(server: CountingMysql) -> None:
    before = set(threading.enumerate())
    for i in range(CYCLES):
        op = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
        op.open(None)
        op.map(_status("a", i + 1))
        op.close()
        op.close()  # idempotent
    assert _started_since(before) == []
    assert server.open == set()
    assert server.rows["a"][1] == CYCLES


def test_attempts_whose_close_never_ran_leave_one_writer_and_one_connection(server: CountingMysql) -> None:
    """A TaskManager whose job restarted 50 times without the operator's close (a task that failed in a
    way that skipped it) held 50 writer threads, each with its MySQL connection, for the JVM's life."""
    before = set(threading.enumerate())
    ops = []
    for i in range(CYCLES):
        op = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
        op.open(None)  # never closed
        op.map(_status(f"r{i}", 1))
        ops.append(op)
        assert _until(lambda i=i: f"r{i}" in server.rows)
    assert _until(lambda: len(_started_since(before)) <= 1), _started_since(before)
    assert _threads() == 1
    assert len(server.open) <= 1
    ops[0].map(_status("late", 1))  # a status reaching a retired operator is written by the current one
    assert _until(lambda: "late" in server.rows)
    ops[-1].close()
    assert _started_since(before) == []
    assert server.open == set()


def test_statuses_close_could_not_write_are_written_by_the_next_attempt(server: CountingMysql) -> None:
    """A restart during a MySQL outage dropped the statuses queued in the failed attempt: the next attempt
    does not send them again (its rules come from broadcast state), so ``rules apply --wait`` waited on."""
    server.up = False
    first = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    first.open(None)
    first.map(_status("a", 2))
    first.close()  # the last attempt fails: MySQL is still away
    assert "a" not in server.rows
    server.up = True
    second = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    second.open(None)
    try:
        assert _until(lambda: server.rows.get("a", (None, 0))[1] == 2)
    finally:
        second.close()
    assert server.open == set()


def test_a_close_that_gives_up_waiting_leaves_no_connection(
    server: CountingMysql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close used to close the connection under the writer when MySQL took longer than CLOSE_WAIT_S: the
    writer's statement failed, it opened a new connection for its retry, and nobody closed that one."""
    monkeypatch.setattr(RecordRuleStatus, "CLOSE_WAIT_S", 0.1)
    before = set(threading.enumerate())
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    op.open(None)
    op.map(_status("a", 1))
    assert _until(lambda: "a" in server.rows)  # the writer holds a connection
    server.delay = 0.3
    written = len(server.statements)
    op.map(_status("b", 1))
    assert _until(lambda: len(server.statements) >= written + 2)  # BEGIN, and the insert under way
    start = time.monotonic()
    op.close()
    assert time.monotonic() - start < 1.0
    assert _until(lambda: _started_since(before) == [])
    assert server.open == set()


def test_an_open_that_fails_half_way_leaves_nothing(
    server: CountingMysql, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = set(threading.enumerate())
    previous = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    previous.open(None)  # an attempt never closed
    server.up = False
    previous.map(_status("a", 1))

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    with pytest.raises(RuntimeError, match="start new thread"):
        op.open(None)
    monkeypatch.undo()
    assert _until(lambda: _started_since(before) == [])  # the previous writer stopped
    assert job._STATUS_WRITERS == {}  # noqa: SLF001
    op.close()  # after a failed open: nothing to do, no error
    server.up = True
    monkeypatch.setattr(MysqlConn, "connect", lambda self, autocommit=False: server.connect())
    nxt = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    nxt.open(None)
    try:  # the statuses of the previous attempt were not lost with the failed open
        assert _until(lambda: "a" in server.rows)
    finally:
        nxt.close()
    assert server.open == set()


class _Operation:
    """Stands for PyFlink's operation around a function: it and the objects around it refer to each other,
    so a failed attempt's function is freed only by the cyclic collector."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.me = self


def _decide_job() -> bytes:
    """The decide function as the job graph holds it: pickled once, when the job is built."""
    from riskctl.flink.risk_function import RiskFunction

    return pickle.dumps(RiskFunction(lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0, fast_path=False))


def _decide_attempt(close: bool, job: bytes) -> Any:
    """One attempt of the decide operator: open, its state cache filled, closed or not; a weak reference
    to its function."""
    import weakref

    from tests.unit.flink.test_flink_keyed_state import FakeRuntime, FakeValueState

    fn = pickle.loads(job)  # noqa: S301 - pickled by the test; each attempt unpickles the job's function
    operation = _Operation(fn)  # alive while the attempt runs, as PyFlink's is
    fn.open(FakeRuntime(FakeValueState()))
    assert fn.state is not None
    fn.state._cache["user"] = (b"x" * 1_000_000, time.monotonic())  # noqa: SLF001 - what a cache holds
    if close:
        fn.close()
    del operation
    return weakref.ref(fn)


@pytest.mark.parametrize("close", [True, False])
def test_a_decide_attempts_function_is_freed_by_the_next_attempt(close: bool) -> None:
    """open() froze every object alive at that moment (gc.freeze), the attempt's own function, its state
    cache and PyFlink's operation among them, and frozen objects are never collected: each restart kept the
    failed attempt's state cache (up to job.state_cache_keys users, ~100 MB at the default) for the life of
    the TaskManager."""
    import gc

    try:
        job = _decide_job()
        attempts = [_decide_attempt(close, job) for _ in range(CYCLES)]
        alive = sum(1 for ref in attempts[:-1] if ref() is not None)
        assert alive == 0, f"{alive} of {CYCLES - 1} earlier attempts' functions still in memory"
        gc.collect()
        if close:
            assert attempts[-1]() is None, "closed, the last attempt's function is collectable"
    finally:
        gc.enable()
        gc.unfreeze()


def _subtask(job: bytes, index: int, attempt: int = 0) -> Any:
    """An attempt's decide function of ``job`` (:func:`_decide_job`), opened as subtask ``index`` of the job's
    attempt ``attempt``."""
    from tests.unit.flink.test_flink_keyed_state import FakeRuntime, FakeValueState

    class Runtime(FakeRuntime):
        def get_index_of_this_subtask(self) -> int:
            return index

        def get_attempt_number(self) -> int:
            return attempt

    fn = pickle.loads(job)  # noqa: S301 - pickled by the test
    fn.open(Runtime(FakeValueState()))
    return fn


def test_the_collector_stays_off_until_the_last_decide_subtask_in_the_interpreter_closes() -> None:
    """Two decide subtasks in one TaskManager share its interpreter, and the collector's switch is the
    interpreter's: the first to close turned it on under the other, still deciding."""
    import gc

    job = _decide_job()
    a, b = _subtask(job, 0), _subtask(job, 1)
    assert not gc.isenabled()
    a.close()
    assert not gc.isenabled(), "subtask 1 still decides"
    a.close()  # twice: counted once
    assert not gc.isenabled()
    b.close()
    assert gc.isenabled()


def test_a_later_subtasks_open_does_not_collect_under_the_open_ones() -> None:
    """The second subtask's open unfroze and collected the whole interpreter while the first decided (a full
    collection pause in its task); only the first open collects, and the last close."""
    import gc
    import weakref

    job = _decide_job()
    a = _subtask(job, 0)
    garbage = _Operation(None)  # cyclic garbage made while subtask 0 decides
    gone = weakref.ref(garbage)
    del garbage
    b = _subtask(job, 1)
    assert gone() is not None, "subtask 1's open ran a collection"
    b.close()
    assert gone() is not None, "subtask 1's close ran a collection"
    a.close()
    assert gone() is None  # the last close collects
    assert gc.isenabled()


def test_a_function_never_closed_is_replaced_by_its_subtasks_next_attempt() -> None:
    """A subtask whose close never ran (a failed attempt) must not keep the collector off for good: its next
    attempt takes its place, and the collector is on once the open ones have closed."""
    import gc

    job = _decide_job()
    _subtask(job, 0)  # never closed
    b = _subtask(job, 1)
    b.close()
    assert not gc.isenabled(), "subtask 0's attempt may still be deciding"
    a2, b2 = _subtask(job, 0), _subtask(job, 1)
    a2.close()
    assert not gc.isenabled()
    b2.close()
    assert gc.isenabled()


def test_a_failed_attempts_subtask_moved_to_another_taskmanager_does_not_keep_the_collector_off() -> None:
    """A restart may put a subtask index on another TaskManager (a TaskManager lost, slots given anew): the
    failed attempt ran subtask 0 here, never closed; the next attempt runs subtask 1 here. Subtask 0's place
    waited for an open that never comes here: that open did not collect the failed attempt's garbage, and the
    collector stayed off after the job had ended, for every later job too."""
    import gc
    import weakref

    job = _decide_job()
    _subtask(job, 0)  # attempt 0, which failed: never closed
    garbage = _Operation(None)  # the failed attempt's cyclic garbage
    gone = weakref.ref(garbage)
    del garbage
    b = _subtask(job, 1, attempt=1)  # attempt 1's subtask 0 runs on another TaskManager
    assert gone() is None, "the next attempt's open left the failed attempt's garbage"
    assert not gc.isenabled()
    b.close()
    assert gc.isenabled(), "the failed attempt's subtask 0 still counted as open here"


def test_decide_subtasks_of_two_jobs_count_apart_and_a_close_without_open_counts_nothing() -> None:
    import gc

    first, other = _decide_job(), _decide_job()
    a, b = _subtask(first, 0), _subtask(other, 0)  # subtask 0 of two jobs in one TaskManager
    never_opened = pickle.loads(first)  # noqa: S301 - an open that failed before it was counted
    never_opened.close()
    assert not gc.isenabled()
    a.close()
    assert not gc.isenabled(), "the other job's subtask still decides"
    b.close()
    assert gc.isenabled()


IDLE_S = 0.2


@pytest.fixture
def idle_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    # raising=False: on a RecordRuleStatus without an idle end the tests fail on what they check
    monkeypatch.setattr(RecordRuleStatus, "IDLE_CLOSE_S", IDLE_S, raising=False)


def test_an_idle_writer_closes_its_connection_and_ends_and_the_next_status_starts_one(
    server: CountingMysql, idle_soon: None
) -> None:
    """An operator Flink dropped without its close (a cancelled task) kept its writer thread and its MySQL
    connection, idle, until the next operator of its table opened: maybe the next job, maybe never."""
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    op.open(None)
    op.map(_status("a", 1))
    assert _until(lambda: "a" in server.rows)
    assert _until(lambda: _threads() == 0), "the writer still runs, idle"
    assert server.open == set()
    op.map(_status("b", 1))  # a rule change after that
    assert _until(lambda: "b" in server.rows)
    assert _threads() == 1
    op.close()
    assert _threads() == 0
    assert server.open == set()


def test_a_status_queued_as_the_writer_ends_is_written(server: CountingMysql, idle_soon: None) -> None:
    """The writer decides to end under the operator's lock, where map looks for one: a status queued just
    before is written by it, one queued just after starts the next writer."""
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    end_idle = op._end_idle  # noqa: SLF001
    arrivals = iter([("before", True), ("after", False)])

    def racing_end() -> bool:
        rule, before = next(arrivals, (None, False))
        if rule is not None and before:
            op.map(_status(rule, 1))  # the writer has seen the timeout, not yet taken the lock
        ended = end_idle()
        if rule is not None and not before:
            op.map(_status(rule, 1))  # decided, the thread not yet gone
        return ended

    op._end_idle = racing_end  # type: ignore[method-assign]  # noqa: SLF001
    op.open(None)
    assert _until(lambda: "before" in server.rows)
    assert _until(lambda: "after" in server.rows)
    assert _until(lambda: _threads() == 0)
    assert server.open == set()
    op.close()


def test_statuses_never_get_lost_to_a_writer_ending_meanwhile(
    server: CountingMysql, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RecordRuleStatus, "IDLE_CLOSE_S", 0.001, raising=False)  # it ends all the time
    op = RecordRuleStatus(CONN, "rule_status", retry_ms=50)
    op.open(None)
    for i in range(200):
        op.map(_status(f"r{i}", 1))
        time.sleep(0.002 * (i % 3))
    assert _until(lambda: len(server.rows) == 200), 200 - len(server.rows)
    assert _until(lambda: _threads() == 0)
    assert server.open == set()
    op.close()
