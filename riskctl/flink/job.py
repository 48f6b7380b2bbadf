"""The riskctl job: Kafka events -> keyed engine (RocksDB, TTL) with rules broadcast from MySQL -> Kafka.

::

    Kafka events (raw, with topic/partition/offset) --parse--> dead-letter topic (bad records)
        | valid events, event-time watermarks (bounded out-of-orderness, idleness)
        | key by user_id
        +-- connect -- rules (MySQL CDC | JDBC poll | rules folder), broadcast
        v
    RiskFunction (KeyedBroadcastProcessFunction, thread mode)
        +--> decisions topic (key = event_id)      +--> alerts topic (key = alert_id)
        +--> rule-status topic and the MySQL table rule_status

Sources and sinks are declared with Flink SQL DDL (the Kafka connector's metadata columns carry each record's
topic, partition and offset to the dead-letter records; its sinks key records by a column), and joined to the
DataStream part with ``to_data_stream`` / ``from_data_stream`` in one job graph (``attach_as_datastream``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.common import Duration, Row, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    DataStream,
    FlatMapFunction,
    KeyedStream,
    MapFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment, Table

from riskctl.config import Settings
from riskctl.config.checks import refused
from riskctl.config.settings import engine_dedup
from riskctl.core.events import MAX_ID_LENGTH, MAX_TS
from riskctl.core.jsondoc import load_json_document
from riskctl.core.rules import load_rules
from riskctl.flink.risk_function import (
    ALERT,
    DEAD,
    DECISION,
    RAW_EVENT,
    RECORD,
    REPLY,
    RULE_CHANGE,
    RULES_STATE,
    STATUS,
    SYNC,
    TAGGED,
    RiskFunction,
)
from riskctl.store.migrations import quote, table_names

LOG = logging.getLogger(__name__)
#: ``max.request.size`` of the job's Kafka producers (the client's default, set explicitly): a dead letter is
#: at most ``job.dead_letter_max_bytes`` (<= 1,000,000), so it always fits with its key
SINK_MAX_REQUEST_BYTES = 1_048_576
#: how long a statement of the job's MySQL operators waits for a lock (seconds), and for the server's answer
MYSQL_LOCK_WAIT_S = 5
MYSQL_READ_TIMEOUT_S = 15
#: after a failed read of the rules (poll source), the next one is tried this many seconds later
READ_RETRY_S = 5
#: the largest value of a Kafka client setting of type INT (``fetch.max.wait.ms``)
KAFKA_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class MysqlConn:
    """Where and as whom the job reaches MySQL (the rules table, the rule-status table)."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def of(cls, settings: Settings) -> MysqlConn:
        """The connection settings of ``settings``."""
        return cls(
            settings.mysql_host,
            settings.mysql_port,
            settings.mysql.user,
            settings.mysql_password,
            settings.mysql.database,
        )

    def connect(self, *, autocommit: bool = False) -> Any:
        """A pymysql connection (inside a TaskManager, where there is no Settings, only these values).

        Every wait is bounded, since the operators that use it run in the job's tasks: a statement waiting
        on a lock (``LOCK TABLES``, an ``ALTER TABLE``, another session's open transaction) blocked the rules
        poll for as long as the lock was held (MariaDB's ``lock_wait_timeout`` is a day), and with it every
        checkpoint of the job. The session gives up on a lock after :data:`MYSQL_LOCK_WAIT_S` (an error the
        operators handle: the poll tries again at its next tick, a status is queued), and a server that stops
        answering (a network cut) after :data:`MYSQL_READ_TIMEOUT_S`.
        """
        import pymysql

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            autocommit=autocommit,
            connect_timeout=5,
            read_timeout=MYSQL_READ_TIMEOUT_S,
            write_timeout=MYSQL_READ_TIMEOUT_S,
            init_command=(
                f"SET SESSION lock_wait_timeout = {MYSQL_LOCK_WAIT_S}, "
                f"innodb_lock_wait_timeout = {MYSQL_LOCK_WAIT_S}"
            ),
        )


def _q(value: object) -> str:
    """A SQL string literal for Flink DDL options."""
    return "'" + str(value).replace("'", "''") + "'"


def _with(options: Mapping[str, object]) -> str:
    return ",\n".join(f"{_q(k)} = {_q(v)}" for k, v in options.items())


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        msg = f"{name} must be a positive number of milliseconds, got {value!r}"
        raise refused(msg)


class StartOfTime(TimestampAssigner):  # type: ignore[misc]
    """Stamps rule changes with timestamp 0; with idleness, the rules stream then never holds event time.

    The decide operator's watermark is the minimum of its *active* inputs. A broadcast input without
    watermarks would stay at Long.MIN_VALUE and no event-time timer would ever fire; one at Long.MAX_VALUE
    (or a finished, bounded rules source) would push the watermark to the end of time whenever the events
    input is idle, and timers registered after that never fire. So the rules stream is idle except for the
    moment a change passes (its watermark 0 cannot move the operator's watermark back).
    """

    def extract_timestamp(self, value: Row, record_timestamp: int) -> int:
        return 0


#: The rule-status operator open in this interpreter for each status table, ``(host, port, database, table)``
#: -> operator. In thread mode the interpreter is the TaskManager's and outlives every attempt of the job: an
#: operator that opens retires the one before it for the same table (its writer thread ends and closes its
#: connection), so attempts whose ``close`` was skipped or raised leave no thread or connection behind. Until
#: then such an operator holds neither for long: its writer ends after ``IDLE_CLOSE_S`` with nothing queued.
_STATUS_WRITERS: dict[tuple[str, int, str, str], RecordRuleStatus] = {}
#: statuses an operator could not write to MySQL by the time it closed, per status table: the next operator
#: for that table in this interpreter (the job's next attempt) writes them. At most one per rule.
_UNWRITTEN: dict[tuple[str, int, str, str], dict[str, tuple[object, ...]]] = {}
#: guards both, and is taken before an operator's own lock
_WRITERS_LOCK = threading.Lock()


class RecordRuleStatus(MapFunction):  # type: ignore[misc]
    """Writes each rule status into MySQL's status table (so ``riskctl rules apply --wait`` can see it).

    The writes happen in a thread of their own, never in ``map``: the operator is chained to the decide
    operator at parallelism 1, and a write per status (a round trip and a commit) held the decide task, so a
    bulk of rule changes applied at the pace of MySQL's commits while events waited (3,000 updates of one rule
    were applied 5.5 s after the last write, 1.7 s without the writes: bench/rule_bulk_job.py). The thread
    writes what is queued, the latest status per rule, in one transaction at a time, so a burst costs a few
    commits, not one per status.

    MySQL being away must not stop the job (a failed write used to raise, and Flink restarted the whole
    job): a status that cannot be written stays queued and is written once MySQL answers again; attempts are
    at least ``retry_ms`` apart, so a server that is down costs one refused connection per ``retry_ms``.
    Every status also goes to the Kafka rule-status topic, whatever happens here.

    Lifecycle (thread mode: one interpreter per TaskManager, across restarts and jobs). The writer thread
    alone uses the MySQL connection and closes it when it ends. It ends, and closes it, after ``IDLE_CLOSE_S``
    with nothing queued: statuses come with rule changes only, so an operator Flink dropped without its
    ``close`` (a cancelled task, a failed attempt) held an idle thread and connection until the next operator
    of its table opened, possibly the next job. A status queued after that starts a new writer. ``close``
    asks the writer to make a last attempt and waits ``CLOSE_WAIT_S`` for it; what is still unwritten then is
    kept in :data:`_UNWRITTEN` for the next operator of the same status table in this interpreter. ``open``
    retires the previous operator of its table if that one was never closed (its thread ends, its queued
    statuses are taken over), so restarts never pile up threads or connections. ``close`` may be called any
    number of times, also after a failed ``open``.
    """

    #: how long ``close`` waits for the queued statuses to be written (a last attempt)
    CLOSE_WAIT_S = 10.0
    #: how long the writer waits with nothing queued before it closes its connection and ends (MySQL's own
    #: ``wait_timeout`` would drop an idle connection anyway)
    IDLE_CLOSE_S = 60.0

    def __init__(self, conn: MysqlConn, status_table: str, retry_ms: int = 1000) -> None:
        self.conn_info = conn
        self.table = quote(status_table)
        self.retry_ms = retry_ms
        self.conn: Any = None
        self.pending: dict[str, tuple[object, ...]] = {}
        self.next_attempt = 0.0
        self.lock: Any = None
        self.wake: Any = None
        self.stopping: Any = None
        #: the writer thread; None before open, after close, and once it ended for being idle (``lock``)
        self.writer: Any = None
        #: a newer operator of this table opened in this interpreter without this one closing: its thread
        #: ends, and a status it still gets goes to that operator
        self.retired = False

    @property
    def key(self) -> tuple[str, int, str, str]:
        """The status table this operator writes, as :data:`_STATUS_WRITERS` knows it."""
        return (self.conn_info.host, self.conn_info.port, self.conn_info.database, self.table)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.close()  # opened again without a close: the previous writer first
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.retired = False
        self.next_attempt = 0.0
        with _WRITERS_LOCK:
            left = _UNWRITTEN.pop(self.key, {})
            previous = _STATUS_WRITERS.get(self.key)
            if previous is not None and previous is not self:
                left.update(previous._retire())  # noqa: SLF001 - the same class
            self.pending = left
            _STATUS_WRITERS[self.key] = self
        if left:
            LOG.info("rule status: %d status(es) left unwritten by the previous attempt, queued", len(left))
        try:
            with self.lock:
                self._start_writer()
        except BaseException:
            self._release()
            raise
        self.wake.set()

    def _start_writer(self) -> None:
        """Start a writer thread (``lock`` held by the caller)."""
        writer = threading.Thread(target=self._write_loop, name="riskctl-rule-status", daemon=True)
        writer.start()
        self.writer = writer

    def _retire(self) -> dict[str, tuple[object, ...]]:
        """Stop this operator's writer without a last attempt and hand over its queue (``_WRITERS_LOCK``
        held by the caller)."""
        LOG.warning("rule status: an operator of %s was never closed; its writer is stopped", self.table)
        self.retired = True
        self.stopping.set()
        self.wake.set()
        with self.lock:
            taken, self.pending = self.pending, {}
        return taken

    def _connect(self) -> None:
        self.conn = self.conn_info.connect(autocommit=True)

    def _sql(self) -> str:
        # the table name is a checked, quoted identifier; values go as parameters
        insert = f"INSERT INTO {self.table} (rule_id, version, state, reason, field)"  # noqa: S608
        return (
            f"{insert} VALUES (%s, %s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE state = VALUES(state), reason = VALUES(reason), field = VALUES(field), "
            "seen_at = CURRENT_TIMESTAMP(3)"
        )

    def map(self, value: Row) -> Row:
        """Queue the status of a rule status row (the latest per rule wins) for the writer; pass the row
        on."""
        doc = json.loads(value[1])
        status = (doc["rule_id"], doc["version"], doc["state"], doc["reason"], doc["field"])
        if self.retired:
            self._forward(str(doc["rule_id"]), status)
            return value
        self._queue(str(doc["rule_id"]), status)
        return value

    def _queue(self, rule_id: str, status: tuple[object, ...]) -> None:
        """Queue a status for the writer, starting one if the last ended for being idle."""
        with self.lock:  # the writer decides to end under it, after seeing nothing queued
            self.pending[rule_id] = status
            if self.writer is None and not self.stopping.is_set():
                self._start_writer()
        self.wake.set()

    def _forward(self, rule_id: str, status: tuple[object, ...]) -> None:
        """A status reaching a retired operator (two live operators of one status table in this
        interpreter): queued with the operator that retired it, or for the next one."""
        with _WRITERS_LOCK:
            owner = _STATUS_WRITERS.get(self.key)
            if owner is None:
                _UNWRITTEN.setdefault(self.key, {})[rule_id] = status
                return
            owner._queue(rule_id, status)  # noqa: SLF001 - the same class

    def _write_loop(self) -> None:
        """The writer thread: write what is queued whenever something is; after a failure, wait
        ``retry_ms``; after ``IDLE_CLOSE_S`` with nothing queued, end (:meth:`_end_idle`). Asked to stop by
        ``close``, it makes a last attempt (not when retired); it closes its connection whatever happens."""
        idle = False
        try:
            while not self.stopping.is_set():
                if not self.wake.wait(self.IDLE_CLOSE_S) and self._end_idle():
                    idle = True
                    return
                self.wake.clear()
                while not self.stopping.is_set() and not self.flush(time.monotonic()):
                    self.stopping.wait(max(0.0, self.next_attempt - time.monotonic()))
            if not self.retired:  # close: a last attempt
                self.next_attempt = 0.0
                self.flush(time.monotonic())
        finally:
            if not idle:  # an idle end closed it already: self.conn may be the next writer's by now
                self._drop_connection()

    def _end_idle(self) -> bool:
        """Whether the writer ends for being idle: True when nothing is queued, its connection closed.

        The connection is closed first, while this thread is still the writer, and the decision is taken
        under ``lock``, where ``_queue`` looks for a writer: a status queued before it is written by this
        thread, one queued after it starts the next, which never shares a connection with this one.
        """
        self._drop_connection()
        with self.lock:
            if self.pending or self.wake.is_set() or self.stopping.is_set():
                return False
            if self.writer is threading.current_thread():
                self.writer = None
            return True

    def flush(self, now: float) -> bool:
        """Write the queued statuses in one transaction; False (and keep them) when MySQL does not take
        them. A status queued again meanwhile (a newer one for the rule) stays queued."""
        if now < self.next_attempt:
            return False
        with self.lock:
            batch = list(self.pending.items())
        if not batch:
            return True
        fresh = self.conn is None
        try:
            try:
                self._write(batch)
            except Exception:  # noqa: BLE001 - a connection MySQL dropped (a restart): once more, a new one
                if fresh:
                    raise
                self._drop_connection()
                self._write(batch)
        except Exception as exc:  # noqa: BLE001 - any driver or network error: keep the statuses, retry later
            self._drop_connection()
            self.next_attempt = now + self.retry_ms / 1000
            LOG.warning(
                "rule status: writing %d status(es) to MySQL %s:%s failed (%s: %s); retrying in %d ms",
                len(batch),
                self.conn_info.host,
                self.conn_info.port,
                type(exc).__name__,
                exc,
                self.retry_ms,
            )
            return False
        with self.lock:
            for rule_id, args in batch:
                if self.pending.get(rule_id) is args:
                    del self.pending[rule_id]
            return not self.pending

    def _write(self, batch: list[tuple[str, tuple[object, ...]]]) -> None:
        import pymysql

        if self.conn is None:
            self._connect()
        sql = self._sql()
        with self.conn.cursor() as cur:
            cur.execute("BEGIN")
            for rule_id, args in batch:
                try:
                    cur.execute(sql, args)
                except pymysql.err.DataError as exc:
                    # a status the table cannot hold (a rule_id longer than its column: a rules table
                    # widened by ALTER TABLE) is dropped, not retried: kept first in the queue, it held
                    # back every later status for the life of the job (found in review)
                    LOG.warning("rule status of %r not written to MySQL (kept on Kafka): %s", rule_id, exc)
            cur.execute("COMMIT")

    def _drop_connection(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001, S110 - the connection is already broken
                pass
        self.conn = None

    def close(self) -> None:
        if self.stopping is not None:  # also when the writer ended idle: a status mapped now starts none
            self.stopping.set()
            self.wake.set()
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.join(self.CLOSE_WAIT_S)
            if writer.is_alive():  # in a MySQL call (bounded by the driver's timeouts): it ends by itself
                LOG.warning(
                    "rule status: the writer did not end within %s s; it closes its connection when MySQL "
                    "answers",
                    self.CLOSE_WAIT_S,
                )
        self._release()

    def _release(self) -> None:
        """Leave the registry; keep what could not be written for this table's next operator."""
        with _WRITERS_LOCK:
            if _STATUS_WRITERS.get(self.key) is self:
                del _STATUS_WRITERS[self.key]
            if self.lock is None:
                return
            with self.lock:
                left, self.pending = self.pending, {}
            if left:
                kept = _UNWRITTEN.setdefault(self.key, {})
                kept.update(left)
                LOG.warning(
                    "rule status: %d status(es) not written to MySQL %s:%s by close (kept on Kafka, and for "
                    "the job's next attempt on this TaskManager)",
                    len(left),
                    self.conn_info.host,
                    self.conn_info.port,
                )


#: the longest ``job.lateness_ms`` the events source can express: Flink SQL takes a day-time interval literal
#: with the default precision only (DAY(2): 99 days; the planner refuses ``DAY(3)`` and ``SECOND(3, 3)``)
MAX_LATENESS_MS = 100 * 86_400_000 - 1


def _lateness_interval(lateness_ms: int) -> str:
    """The watermark's bounded out-of-orderness as a Flink SQL ``DAY TO SECOND(3)`` literal.

    ``INTERVAL 'x.yyy' SECOND`` has a leading precision of 2: a lateness of 100 s or more failed the job's
    start with Calcite's "Interval field value 120 exceeds precision of SECOND(2) field".
    """
    if not 0 <= lateness_ms <= MAX_LATENESS_MS:
        msg = f"job.lateness_ms must be at most {MAX_LATENESS_MS} (99 days 23:59:59.999), got {lateness_ms}"
        raise refused(msg)
    days, rest = divmod(lateness_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"


def event_time_column_sql(event_time_ms: str, past_clock: bool) -> str:
    """The SQL of the source's event-time column (TIMESTAMP_LTZ(3), what its watermarks follow) from
    ``event_time_ms`` (:func:`event_time_sql`): unless ``past_clock``, at most the wall clock of the record's
    reading (``CURRENT_ROW_TIMESTAMP()``).

    The watermark is shared by every user of a partition, and a timer fires for whoever's it is once the
    watermark passes it. An event stamped ahead of the clock by less than ``max_clock_skew_ms`` passes the
    door, so without this cap one such event of one user moved event time up to that far ahead for all of
    them: every absence deadline within it fired at once (``new_device_without_2fa`` alerted on users whose
    2FA was still to come). With it, the event is still decided at its own ``ts`` for its own user, and event
    time moves only as far as the clock.
    """
    column = f"TO_TIMESTAMP_LTZ({event_time_ms}, 3)"
    if past_clock:
        return column
    return f"LEAST({column}, CURRENT_ROW_TIMESTAMP())"


def event_time_sql(text: str, max_clock_skew_ms: int) -> str:
    """The SQL of a record's event time in ms (BIGINT), from ``text``, the record as a STRING expression:
    its ``ts`` when that reads as an integer between 0 and ``now + max_clock_skew_ms``, else 0. Replay reads
    the same number in Python (``riskctl.core.door.watermark_ts``; tests/integration/test_event_time_sql.py
    holds the two to each other on hostile records).
    """
    ts = f"TRY_CAST(JSON_VALUE({text}, '$.ts') AS BIGINT)"
    # 0 <= ts <= MAX_TS and ts - skew <= now, with two reads of ts (each parses the record): the test reads it
    # clamped to [-1, MAX_TS + 1], where MAX_TS + 1 - skew is ahead of now (the skew is at most
    # MAX_CLOCK_SKEW_MS) and no subtraction overflows; a ts below 0 passes it and counts as 0. In BIGINT ms,
    # then as timestamps: no interval arithmetic (SECOND(2) precision limits). NULL (no integer) fails it.
    clamped = f"GREATEST(LEAST({ts}, {MAX_TS + 1}), -1)"
    return (
        f"CASE WHEN TO_TIMESTAMP_LTZ({clamped} - {max_clock_skew_ms}, 3) <= CURRENT_ROW_TIMESTAMP() "
        f"THEN GREATEST({ts}, 0) ELSE 0 END"
    )


def _events(t_env: StreamTableEnvironment, settings: Settings) -> KeyedStream:
    """The raw event records, keyed by user and with event-time watermarks, all on the Java side.

    Java reads the Kafka records, takes ``user_id`` and ``ts`` out of the JSON (``JSON_VALUE``), generates
    per-partition watermarks and partitions by user; the record reaches Python once, in the decide operator,
    which validates it. Python operators in front of the decide one (parse, timestamps, key) cost more than
    their work: in thread mode every Python operator shares the one interpreter lock, and the decide thread
    waited on the source thread's Python (bench/flink_profile/README.md). A record that is not valid JSON or
    has no usable ``user_id`` gets a short well-formed key ('' without one) and is sent to the dead letters by
    the decide operator.

    The value is read as BYTES (format raw), so Python gets the original bytes (invalid UTF-8 is kept for the
    dead letter; a STRING column would have replaced it by U+FFFD); Java decodes a copy (``CAST AS STRING``,
    replacing invalid bytes) only to read ``user_id`` and ``ts``. Event time cannot be hijacked: a ``ts``
    that Flink's cast does not read as an integer in [0, 9999-12-31], or more than ``max_clock_skew_ms`` ahead
    of the wall clock (``CURRENT_ROW_TIMESTAMP()``, evaluated per record) counts as 0 for watermarks, the rule
    Python applies before deciding (``riskctl.core.door``); and one it takes moves them at most to that clock
    (:func:`event_time_column_sql`). (Flink 1.20 SQL has no OCTET_LENGTH for BYTES, so
    an oversized record with a valid ``ts`` still moves event time, within the skew.)
    """
    job = settings.job
    startup = {"committed": "group-offsets", "earliest": "earliest-offset", "latest": "latest-offset"}
    if job.starting_offsets not in startup:
        msg = f"job.starting_offsets must be one of {', '.join(startup)}, got {job.starting_offsets!r}"
        raise refused(msg)
    if job.source_fetch_wait_ms > KAFKA_INT_MAX:
        # the Kafka client's fetch.max.wait.ms is an int: a larger value failed every start of the source's
        # readers (ConfigException 'Not a number of type INT'), and the job restarted forever
        msg = f"job.source_fetch_wait_ms must be at most {KAFKA_INT_MAX}, got {job.source_fetch_wait_ms}"
        raise refused(msg)
    options = {
        "connector": "kafka",
        "topic": job.events_topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap,
        "properties.group.id": job.group_id,
        "properties.auto.offset.reset": "earliest",
        # the client's default wait, 500 ms, is a latency floor when traffic is thin
        "properties.fetch.max.wait.ms": job.source_fetch_wait_ms,
        "properties.fetch.min.bytes": job.source_fetch_min_bytes,
        "properties.reconnect.backoff.max.ms": job.kafka_reconnect_backoff_max_ms,
        "scan.startup.mode": startup[job.starting_offsets],
        "scan.topic-partition-discovery.interval": "60 s",
        "format": "raw",
    }
    t_env.get_config().set("table.exec.source.idle-timeout", f"{job.idleness_ms} ms")
    limits = job.limits()
    text = "CAST(`raw` AS STRING)"
    rowtime = event_time_column_sql(event_time_sql(text, limits.max_clock_skew_ms), job.event_time_past_clock)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE riskctl_events (
            `raw` BYTES,
            `topic` STRING METADATA VIRTUAL,
            `partition` INT METADATA VIRTUAL,
            `offset` BIGINT METADATA VIRTUAL,
            `rowtime` AS {rowtime},
            WATERMARK FOR `rowtime` AS `rowtime` - {_lateness_interval(job.lateness_ms)}
        ) WITH ({_with(options)})
    """)
    # The key crosses into Python as a str: a lone surrogate (JSON "\\ud800") in it failed the job (pemja's
    # UTF-16 decoding raised UnicodeDecodeError outside any Python code of ours), and an id of any length
    # would be a key of that length. The key is the id read once (each read parses the record), cut to one
    # character over MAX_ID_LENGTH and through UTF-8 and back, where Java writes a lone surrogate as '?': a
    # valid id is its own key, any other a short well-formed one, under which Python dead-letters the record
    # before it touches any state; a record without a user_id gets the key ''.
    user_id = f"SUBSTRING(JSON_VALUE({text}, '$.user_id') FROM 1 FOR {MAX_ID_LENGTH + 1})"
    key = f"COALESCE(DECODE(ENCODE({user_id}, 'UTF-8'), 'UTF-8'), '')"
    keyed_rows = t_env.sql_query(
        f"SELECT {key} AS k, ROW(`raw`, `topic`, `partition`, `offset`) AS v FROM riskctl_events"  # noqa: S608 - constants of ours
    )
    # to_append_stream with a RowTypeInfo: the embedded Python operator cannot read to_data_stream's
    # ExternalTypeInfo (ClassCastException to RowTypeInfo)
    stream = t_env.to_append_stream(keyed_rows, Types.ROW_NAMED(["k", "v"], [Types.STRING(), RAW_EVENT]))
    # PyFlink's key_by adds a Python operator that turns each record into Row(key, record) for Java's
    # KeyByKeySelector; the query above already has that shape, so the Java selector is used directly.
    j_keyed = stream._j_data_stream.keyBy(
        get_gateway().jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    return KeyedStream(j_keyed, RAW_EVENT, stream)


def _rules_cdc(
    env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, settings: Settings
) -> DataStream:
    c = MysqlConn.of(settings)
    job = settings.job
    _positive("job.cdc_keepalive_ms", job.cdc_keepalive_ms)
    options = {
        "connector": "mysql-cdc",
        "hostname": c.host,
        "port": c.port,
        "username": c.user,
        "password": c.password,
        "database-name": c.database,
        "table-name": settings.job.rules_table,
        "server-id": settings.job.cdc_server_id,
        "server-time-zone": "UTC",
        "scan.startup.mode": "initial",
        # one reader: the rules table is small, and a single binlog reader keeps changes in commit order
        "scan.incremental.snapshot.chunk.size": "8096",
        # The binlog client's keep-alive thread notices a lost connection and reconnects; Debezium sets its
        # period (and the server heartbeat it asks for, 0.8 x the period) from this option, default 60 s:
        # after a MySQL outage a rule edit waited about that long to arrive (docs/operations.md). Read from
        # the connector's MySqlStreamingChangeEventSource (KEEP_ALIVE_INTERVAL_MS ->
        # BinaryLogClient.setKeepAliveInterval).
        "debezium.connect.keep.alive.interval.ms": job.cdc_keepalive_ms,
    }
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE riskctl_rules (
            rule_id STRING, version INT, status STRING, document STRING,
            PRIMARY KEY (rule_id) NOT ENFORCED
        ) WITH ({_with(options)})
    """)
    changelog = t_env.to_changelog_stream(t_env.from_path("riskctl_rules"))

    def to_change(row: Row) -> Row:
        kind = row.get_row_kind().name
        op = "delete" if kind == "DELETE" else "upsert"
        return Row(op=op, rule_id=row[0], version=row[1], document=_with_status(row[3], row[2], row[1]))

    return (
        changelog.filter(lambda row: row.get_row_kind().name != "UPDATE_BEFORE")
        .map(to_change, output_type=RULE_CHANGE)
        .set_parallelism(1)
        .name("rule-changes")
    )


def _with_status(document: str | None, status: str | None, version: int | None) -> str | None:
    """The table's status and version columns win over the document's (an enable/disable edits only them).

    A document that does not load (hostile: too deep, too large, duplicate keys; or not JSON) passes as is,
    for the decide operator to refuse with the reason; it never fails this operator. So does a NULL one.
    """
    if document is None:
        return None
    try:
        doc = load_json_document(document)
    except ValueError:  # RuleSetError
        return document
    if isinstance(doc, dict):
        if status:
            doc["status"] = status
        if version is not None:
            doc["version"] = version
        return json.dumps(doc)
    return document


def _ticks(t_env: StreamTableEnvironment, name: str, interval_ms: int) -> DataStream:
    """An unbounded stream of ticks, one per ``interval_ms`` (at most one per ms; at least one per second).

    Used instead of a bounded source: a finished source ends its stream with a watermark at the end of time.
    """
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE {name} (n BIGINT) WITH (
            'connector' = 'datagen', 'rows-per-second' = '{max(1, round(1000 / max(1, interval_ms)))}'
        )
    """)
    return t_env.to_data_stream(t_env.from_path(name))


def _rules_file(t_env: StreamTableEnvironment, settings: Settings) -> DataStream:
    """The rules of a folder, re-read every ``poll_interval_ms``: editing a file updates the job."""
    load_rules(settings.job.rules_dir)  # fail now, at submission, on a bad folder
    ticks = _ticks(t_env, "riskctl_file_ticks", settings.job.poll_interval_ms)
    return (
        ticks.flat_map(PollFolder(settings.job.rules_dir), output_type=RULE_CHANGE)
        .set_parallelism(1)
        .name("rules-folder")
    )


def _rules_poll(
    env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, settings: Settings
) -> DataStream:
    """Periodic JDBC-style query of the rules table, for databases without binlog access.

    A datagen table ticks once per ``poll_interval_ms``; each tick queries MySQL (pymysql) and emits the
    differences to the previous result as rule changes.
    """
    ticks = _ticks(t_env, "riskctl_poll_ticks", settings.job.poll_interval_ms)
    return (
        ticks.flat_map(PollRules(MysqlConn.of(settings), settings.job.rules_table), output_type=RULE_CHANGE)
        .set_parallelism(1)
        .name("rules-poll")
    )


class _Differ(FlatMapFunction):  # type: ignore[misc]
    """Emits the differences between the previous and the current {rule id: (version, document)}.

    What it saw is not checkpointed: after a restart it starts from nothing, while the decide operator's
    broadcast state still holds the rules of the checkpoint, among them any rule removed since (while the job
    was stopped, or after the last checkpoint). So its first complete read after a start is followed by a
    ``sync`` row listing every current rule id (``document``, a JSON list): the decide operator deletes the
    rules it holds that are not in it.
    """

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, str]] = {}
        self.synced = False  # the sync row went out (once per start)
        self.complete = True  # the last read saw the whole source (a folder: every file read)
        self.retry_at = 0.0  # after a failed read, ticks before this (monotonic) time are skipped

    def current(self) -> dict[str, tuple[int, str]]:
        """The rules as the source has them now: rule id -> (version, document as JSON text)."""
        raise NotImplementedError

    def flat_map(self, value: Row) -> Iterator[Row]:
        """On each tick: a change row for every rule added, changed or removed since the last tick."""
        if time.monotonic() < self.retry_at:
            return
        try:
            current = self.current()
        except Exception as exc:  # noqa: BLE001 - a source away (MySQL down): keep the rules, ask later
            # the ticks that queued while this read waited (up to MYSQL_READ_TIMEOUT_S) pass at once, and with
            # them the checkpoint barrier behind them
            self.retry_at = time.monotonic() + READ_RETRY_S
            LOG.warning(
                "%s: reading the rules failed (%s: %s); next try in %d s",
                self,
                type(exc).__name__,
                exc,
                READ_RETRY_S,
            )
            return
        for rule_id, (version, doc) in current.items():
            if self.seen.get(rule_id) != (version, doc):
                yield Row(op="upsert", rule_id=rule_id, version=version, document=doc)
        for rule_id, (version, _) in self.seen.items():
            if rule_id not in current:
                yield Row(op="delete", rule_id=rule_id, version=version, document=None)
        self.seen = current
        if not self.synced and self.complete:
            self.synced = True
            yield Row(op=SYNC, rule_id="", version=0, document=json.dumps(sorted(current)))


class PollFolder(_Differ):
    """Reads a rules folder (YAML); a rule that fails to load is sent as is, for the job to refuse.

    The files are parsed again only when one of them changed (path, size or modification time): parsing the
    YAML every tick held the GIL that the decide operator needs (thread mode; bench/flink_profile/README.md).
    A file that cannot be read or is refused as a whole (being written, or hostile: see docs/rules.md#limits)
    keeps the rules it last gave, so the job keeps running them (as with a refused version in MySQL) instead
    of deleting them; it is read again at the next tick.
    """

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._cached: dict[str, tuple[int, str]] = {}
        self._by_file: dict[str, dict[str, tuple[int, str]]] = {}

    def current(self) -> dict[str, tuple[int, str]]:
        from riskctl.core.rules import rule_files

        try:
            files = rule_files(Path(self.folder))
        except (OSError, ValueError) as exc:  # the folder went away: keep the rules it gave
            LOG.warning("rules folder %s not read: %s", self.folder, exc)
            self.complete = False
            return dict(self._cached)
        try:
            signature = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),))
        except OSError:
            signature = None  # a file went away between the listing and the stat: read everything
        if signature is not None and signature == self._signature:
            self.complete = True  # the signature is kept only after a complete read
            return dict(self._cached)
        out, complete = self._read(files, self._by_file)
        self.complete = complete
        self._signature = signature if complete else None  # a file being written: read again next tick
        self._cached = out
        return dict(out)

    @staticmethod
    def _read(
        files: list[Path], by_file: dict[str, dict[str, tuple[int, str]]] | None = None
    ) -> tuple[dict[str, tuple[int, str]], bool]:
        """{rule id: (version, document)} of ``files``; ``by_file`` (updated) holds what each file gave last,
        used for a file that cannot be read now.
        """
        from riskctl.core.rules import _documents, read_rule_file

        by_file = {} if by_file is None else by_file
        out: dict[str, tuple[int, str]] = {}
        complete = True
        for file in files:
            try:
                docs = list(_documents(read_rule_file(file), file.name))
            except (OSError, ValueError) as exc:  # ValueError: RuleSetError, a refused (or hostile) file
                LOG.warning("rules file %s not read, keeping its previous rules: %s", file, exc)
                complete = False
                out.update(by_file.get(str(file), {}))
                continue  # a file being written; the next tick reads it again
            mine: dict[str, tuple[int, str]] = {}
            for _, doc in docs:
                if isinstance(doc, dict) and isinstance(doc.get("id"), str):
                    given = doc.get("version")
                    version = given if isinstance(given, int) else 1
                    mine[doc["id"]] = (version, json.dumps(doc, default=str))
            by_file[str(file)] = mine
            out.update(mine)
        for gone in set(by_file) - {str(f) for f in files}:
            del by_file[gone]
        return out, complete


class PollRules(_Differ):
    """Queries the rules table (for databases without binlog access)."""

    def __init__(self, conn: MysqlConn, table: str) -> None:
        super().__init__()
        self.conn_info = conn
        self.table = table

    def current(self) -> dict[str, tuple[int, str]]:
        conn = self.conn_info.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT rule_id, version, status, document FROM {quote(self.table)}")  # noqa: S608
                rows = cur.fetchall()
        finally:
            conn.close()
        # a NULL version or document (ALTER TABLE) passes on for the decide operator to refuse: int(None)
        # failed every read, and no later rule edit reached the job (found in review)
        out = {}
        for rule_id, version, status, document in rows:
            v = None if version is None else int(version)
            out[rule_id] = (v, _with_status(document, status, v))
        return out  # type: ignore[return-value]

    def __str__(self) -> str:
        return f"rules poll of {self.table} on {self.conn_info.host}:{self.conn_info.port}"


def _kafka_sink(t_env: StreamTableEnvironment, name: str, topic: str, settings: Settings) -> str:
    options: dict[str, object] = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap,
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "properties.linger.ms": str(settings.job.sink_linger_ms),
        # explicit, since every dead letter is built to fit below it (job.dead_letter_max_bytes <= 1,000,000)
        "properties.max.request.size": str(SINK_MAX_REQUEST_BYTES),
        "properties.reconnect.backoff.max.ms": settings.job.kafka_reconnect_backoff_max_ms,
    }
    if settings.job.delivery == "exactly-once":
        options["sink.delivery-guarantee"] = "exactly-once"
        options["sink.transactional-id-prefix"] = f"{settings.job.group_id}-{name}"
        options["properties.transaction.timeout.ms"] = "900000"
    elif settings.job.delivery == "at-least-once":
        options["sink.delivery-guarantee"] = "at-least-once"
    else:
        msg = f"job.delivery must be at-least-once or exactly-once, got {settings.job.delivery!r}"
        raise refused(msg)
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {name} (k STRING, v BYTES) WITH ({_with(options)})")
    return name


def _check_checkpointing(settings: Settings) -> None:
    """Refuse the settings that need checkpoints when ``job.checkpoint_interval_ms`` is 0 (none).

    Flink CDC reads the binlog only after a checkpoint completed: without checkpoints the job ran the rules of
    the table's snapshot and no edit ever arrived (``riskctl rules apply --wait`` timed out, silently for the
    job). An exactly-once sink commits its transactions on checkpoints: none of its records became visible to
    ``read_committed`` consumers.
    """
    job = settings.job
    if job.checkpoint_interval_ms > 0:
        return
    if job.rules_source == "cdc":
        msg = (
            "job.rules_source cdc needs checkpoints (Flink CDC reads rule edits from the binlog only after a "
            "checkpoint completed): set job.checkpoint_interval_ms above 0, or use job.rules_source poll"
        )
        raise refused(msg)
    if job.delivery == "exactly-once":
        msg = (
            "job.delivery exactly-once needs checkpoints (the sinks commit their transactions on each "
            "checkpoint): set job.checkpoint_interval_ms above 0, or use job.delivery at-least-once"
        )
        raise refused(msg)


def build_pipeline(env: StreamExecutionEnvironment, settings: Settings) -> None:
    """Add the whole risk pipeline to ``env`` (call ``env.execute`` afterwards)."""
    job = settings.job
    _check_checkpointing(settings)
    t_env = StreamTableEnvironment.create(env)

    events = _events(t_env, settings)

    if job.rules_source == "cdc":
        rules = _rules_cdc(env, t_env, settings)
    elif job.rules_source == "poll":
        rules = _rules_poll(env, t_env, settings)
    elif job.rules_source == "file":
        rules = _rules_file(t_env, settings)
    else:
        msg = f"job.rules_source must be cdc, poll or file, got {job.rules_source!r}"
        raise refused(msg)

    rules = rules.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps()
        .with_idleness(Duration.of_millis(200))
        .with_timestamp_assigner(StartOfTime())
    )
    dedup_window_ms, dedup_all = engine_dedup(job.dedup, job.dedup_window_ms)
    decided = (
        events.connect(rules.broadcast(RULES_STATE))
        .process(
            RiskFunction(
                lateness_ms=job.lateness_ms,
                dedup_window_ms=dedup_window_ms,
                dedup_all=dedup_all,
                too_late_action=job.too_late_action,
                state_ttl_ms=job.state_ttl_ms,
                state_ttl_margin_ms=job.state_ttl_margin_ms,
                rules_wait_ms=job.rules_wait_ms,
                limits=job.limits(),
                replies=bool(settings.serve.replies_topic),
                cache_keys=job.state_cache_keys,
                fast_path=job.fast_path,
                compaction_nice=job.compaction_nice,
                event_time_past_clock=job.event_time_past_clock,
            ),
            output_type=TAGGED,
        )
        .name("decide")
        .uid("riskctl-decide")
    )

    # The split into channels is a SQL filter (a Java Calc per sink) on one table of the tagged records: a
    # Python filter + map per channel costs three Python calls per record in the decide task (thread mode:
    # each crosses JNI and converts the row both ways); see bench/flink_profile/README.md.
    t_env.create_temporary_view("riskctl_decided", t_env.from_data_stream(decided))

    def channel(ch: str) -> Table:
        # ch is one of our channel constants, quoted as a SQL literal
        return t_env.sql_query(f"SELECT k, v FROM riskctl_decided WHERE ch = {_q(ch)}")  # noqa: S608

    status = channel(STATUS)
    if job.rules_source != "file":
        status = t_env.from_data_stream(
            t_env.to_data_stream(status)
            .map(
                RecordRuleStatus(
                    MysqlConn.of(settings), table_names(job.rules_table).status, job.status_retry_ms
                ),
                output_type=RECORD,
            )
            .set_parallelism(1)
            .name("rule-status-to-mysql")
        )

    sinks = t_env.create_statement_set()
    for name, topic, table in (
        ("decisions_sink", job.decisions_topic, channel(DECISION)),
        ("alerts_sink", job.alerts_topic, channel(ALERT)),
        ("dead_letter_sink", job.dead_letter_topic, channel(DEAD)),
        ("rule_status_sink", job.rule_status_topic, status),
    ):
        sinks.add_insert(_kafka_sink(t_env, name, topic, settings), table)
    if settings.serve.replies_topic:  # decisions for riskctl serve, keyed (partitioned) by reply_to
        sinks.add_insert(
            _kafka_sink(t_env, "replies_sink", settings.serve.replies_topic, settings), channel(REPLY)
        )
    sinks.attach_as_datastream()


def topics(settings: Settings) -> list[str]:
    """The Kafka topics the job reads and writes."""
    j = settings.job
    return [j.events_topic, j.decisions_topic, j.alerts_topic, j.dead_letter_topic, j.rule_status_topic]
