"""The keyed broadcast function that runs the pure engine inside Flink (thread mode).

Per user (the key) the engine's state lives in one RocksDB ``ValueState`` with TTL holding a dict of the
engine's states (features, patterns, ``_engine``; each under its name's code), read once and written at
most once per event: each state access from Python in thread mode crosses into the JVM and RocksDB, so one
read and one write of about a kilobyte costs less than a dozen small reads and writes (the measurement:
docs/engine.md, "Performance").
Rules arrive on the broadcast side, are kept
in broadcast state (so a restore from a checkpoint has them without re-reading MySQL), and are compiled
once per parallel instance.

Start-up: events that arrive before the rule set has been read are held per key (a ``ListState``) until
rules have arrived and none has arrived for ``RULES_SETTLE_MS`` (the snapshot of the rules table, or the
rules folder, arrives as a quick burst), or until ``rules_wait_ms`` of processing time has passed since the
function opened. Then they are decided, in arrival order, with the rules known at that moment (none: PASS).
Holding happens only once, at start-up: later rule edits apply from the next event on. A rule set that is
empty on purpose costs at most ``rules_wait_ms`` of latency at start-up, never a lost or undecided event.
After a restore from a checkpoint, the rules come from broadcast state and nothing new is held; events an
earlier attempt held and checkpointed are decided by their restored hold timer, or before the key's next
event if that comes first (each event reads its key's held events for ``RESTORED_HOLD_MS`` after start-up).

The door: every record reaches Python as the Kafka value's original bytes and gets an outcome, a decision or
a dead letter (``riskctl.core.door``: limits, clock skew against the wall clock, original bytes kept, always
within ``dead_letter_max_bytes``). ``process_element`` never raises: an exception while deciding one event
(the engine, the encoding of its records) dead-letters that event with the exception type and the rule being
evaluated; the key's state stays at its last committed value (the engine changed a decoded copy). A failing
event-time timer is logged with its key and counted, never raised.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedBroadcastProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from riskctl.core import jsoncodec
from riskctl.core.decisions import fit_record
from riskctl.core.door import DEFAULT_LIMITS, Limits, dead_letter, internal_error_reason
from riskctl.core.engine import Engine
from riskctl.core.errors import EventError, RuleError, RuleSetError
from riskctl.core.events import parse_event
from riskctl.core.jsondoc import load_json_document
from riskctl.core.reply import reply_key
from riskctl.core.rules import RuleSet
from riskctl.core.state import EncodedKeyedState
from riskctl.flink import fast_path
from riskctl.flink.env import ttl_config

RECORD = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
#: what the decide operator emits: (channel, key, value). One output, split downstream: PyFlink's embedded
#: (thread-mode) operator does not route side outputs yielded from on_timer. The value is the Kafka record's
#: JSON as UTF-8 bytes (orjson's output, passed on as it is: no Python ``str``, Java ``String`` and Flink
#: ``StringData`` of it on the way, bench/flink_profile/README.md).
TAGGED = Types.ROW_NAMED(
    ["ch", "k", "v"], [Types.STRING(), Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())]
)
DECISION, ALERT, STATUS, DEAD = "decision", "alert", "status", "dead"
#: the copy of a decision for the API instance that sent the event (``riskctl.core.reply``)
REPLY = "reply"
#: what the decide operator reads: a Kafka record's value (its original bytes: Python gets ``bytes``) and
#: where it came from (for the dead letters)
RAW_EVENT = Types.ROW_NAMED(
    ["raw", "topic", "partition", "offset"],
    [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(), Types.INT(), Types.LONG()],
)
RULE_CHANGE = Types.ROW_NAMED(
    ["op", "rule_id", "version", "document"], [Types.STRING(), Types.STRING(), Types.INT(), Types.STRING()]
)
#: a RULE_CHANGE ``op`` of the polling sources (folder, table) after their first complete read: ``document``
#: lists every current rule id (JSON); rules held in broadcast state but not listed are deleted
SYNC = "sync"
#: broadcast state: rule id -> rule document (JSON)
RULES_STATE = MapStateDescriptor("rules", Types.STRING(), Types.STRING())
#: one output record inside the function, ``TAGGED``'s fields: PyFlink's own path gets them as ``Row`` s, the
#: fast path (``riskctl.flink.fast_path``) as they are
Out = tuple[str, str, bytes]
HOLD_RETRY_MS = 100
#: how long after open each event also reads its key's held events, which a restored checkpoint may hold
#: although this instance held nothing: the restored hold timers, already due, fire within this time
RESTORED_HOLD_MS = 10_000
LOG = logging.getLogger(__name__)
RULES_SETTLE_MS = 500


#: the riskctl package's folder
PACKAGE_DIR = Path(__file__).resolve().parents[1]


#: the module whose objects a job ships to its TaskManagers (its operators; RiskFunction's module among its
#: imports): what a TaskManager runs of riskctl is this module and those it imports
JOB_MODULES = ("riskctl.flink.job",)

#: an import statement: ``from <module> import <names>`` (names in parentheses may span lines) or ``import
#: <modules>``
_IMPORT = re.compile(
    rb"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n;]*)|import[ \t]+([^\n;]*))", re.M
)
_COMMENT = re.compile(rb"#[^\n]*")
_NAME = re.compile(rb"([\w.]+)(?:\s+as\s+\w+)?")


def _imported(text: bytes, package: str) -> Iterator[str]:
    """The names ``text`` (a module's source in ``package``) may import modules by: each ``import``'s
    modules, each ``from``'s module and module.name (a name may be a submodule). Any import statement counts,
    inside a function too (the job's operators import lazily); a line of a string that reads as one adds a
    module at most, which only makes the digest cover more. A regular expression rather than ``ast``: this
    runs at every import of this module (the client's, each TaskManager's), 9 ms for the job's 48 files
    against 87 ms to parse them."""
    for found in _IMPORT.finditer(text):
        source, names, modules = found.groups()
        if modules is not None:
            yield from (n.decode() for n in _NAME.findall(_COMMENT.sub(b"", modules)))
            continue
        dots = len(source) - len(source.lstrip(b"."))
        base = source[dots:].decode()
        if dots:  # relative to the package
            parts = package.split(".")[: len(package.split(".")) - (dots - 1)]
            base = ".".join([*parts, base] if base else parts)
        yield base
        for name in _NAME.findall(_COMMENT.sub(b"", names)):
            yield f"{base}.{name.decode()}"


def job_sources(root: Path = PACKAGE_DIR, modules: Iterable[str] = JOB_MODULES) -> dict[str, bytes]:
    """The source files of the riskctl modules a job's operators can run, ``modules`` and every module of the
    package ``root`` they import, directly or not (with each package's ``__init__``), read from their sources:
    path relative to ``root`` -> contents. A module that cannot be read is left out (a file removed
    meanwhile)."""
    out: dict[str, bytes] = {}
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        if parts[0] != root.name or not all(p.isidentifier() for p in parts):
            continue  # another package's (or no module's)
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages on the way
        base = root.joinpath(*parts[1:])
        for path, package in ((base.with_suffix(".py"), ".".join(parts[:-1])), (base / "__init__.py", name)):
            if len(parts) == 1 and path.name != "__init__.py":
                continue
            try:
                text = path.read_bytes()
            except OSError:  # not this kind of module, or gone
                continue
            out[path.relative_to(root).as_posix()] = text
            todo.extend(_imported(text, package))
            break
    return out


def code_fingerprint(root: Path = PACKAGE_DIR, modules: Iterable[str] = JOB_MODULES) -> str:
    """A digest of the riskctl sources a job runs (:func:`job_sources`: their paths and contents) as they are
    on disk.

    Only those: a digest of every source in the package made the decide operator refuse a job after an edit
    of a module no job runs (riskctl/console/accounts.py, saved in the checkout while a test's 'riskctl run'
    started its job: the MiniCluster's Python imported riskctl seconds after the client had, more seconds on
    a loaded machine, and the job ended with exit 1), and TaskManagers refused every job built after an
    upgrade that changed only the CLI or the console."""
    digest = hashlib.sha256()
    for path, text in sorted(job_sources(root, modules).items()):
        digest.update(path.encode() + b"\0" + text + b"\0")
    return digest.hexdigest()[:16]


#: the sources of the riskctl modules a job runs when this interpreter imported this module: the code it
#: runs, whatever is on disk later. In thread mode a TaskManager's embedded interpreter lives as long as its
#: JVM, across jobs, so one started before riskctl changed still runs the old modules;
#: :meth:`RiskFunction.open` refuses to run there.
LOADED_CODE = code_fingerprint()
#: the decide operator's own metrics (Flink counters in the group ``riskctl`` of the operator): what its state
#: cache served and missed (for sizing ``job.state_cache_keys``), the events and timers its guard caught, and
#: the sequences' overflows (partial matches dropped past max_partial, at_least loops stopped at their cap,
#: late replays given up past the work bound or waiting for the user's budget: matches no sequence could find,
#: otherwise invisible), and the later events late re-checks did not reach for their read bound
METRICS = (
    "stateCacheHits",
    "stateCacheMisses",
    "internalErrors",
    "timerErrors",
    "patternOverflows",
    "duplicates",
    "lateRechecksSkipped",
    "tooLate",
)
#: 1 for each subtask whose events take riskctl.flink.fast_path (counted once, at open)
PATH_METRIC = "fastPath"
#: the counters are brought up to date at most this often, each update being a call into the JVM: with an
#: event, and by a processing-time timer a second after (Flink calls a gauge from a metrics thread, which must
#: not enter the decide task's interpreter in thread mode)
METRICS_REPORT_MS = 1000


#: the thread names of RocksDB's compaction pool (``rocksdb:low0``, ...); its flush pool (``rocksdb:high``),
#: which a checkpoint's synchronous phase waits for, is not touched
COMPACTION_THREADS = "rocksdb:low"


def lower_compaction_priority(niceness: int, tasks: Path = Path("/proc/self/task")) -> int:
    """Give RocksDB's compaction threads of this process the ``niceness`` (``job.compaction_nice``; 0 leaves
    them as they are); returns how many have it now.

    In thread mode the decide task's Python runs in the TaskManager's JVM, which also runs RocksDB's
    compactions. On a machine with few cores they take a core from the decide task in bursts (each merges
    the level-0 files into the whole of level 1), and the events queue behind them: the p99 produce ->
    decision at 5,000 events/s was 46 ms with nice 19 against 60-120 ms without, in alternating rounds
    (bench/flink_profile/README.md). A lower priority is what RocksDB's own
    ``Env::LowerThreadPoolCPUPriority`` gives; Flink does not expose it. A compaction still runs whenever a
    core is idle, and RocksDB slows its writes down if compactions fall far behind. Lowering a priority
    needs no privilege; a thread whose niceness is already higher keeps it (raising a priority would need
    one), and a thread that cannot be changed is skipped. RocksDB's thread pool belongs to the process: the
    TaskManager's other jobs' compactions get the niceness too.
    """
    if not niceness:
        return 0
    done = 0
    try:
        threads = list(tasks.iterdir())
    except OSError:  # not Linux, or no /proc
        return 0
    for task in threads:
        try:
            if not (task / "comm").read_text().startswith(COMPACTION_THREADS):
                continue
            tid = int(task.name)
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
            done += 1
        except (OSError, ValueError):  # the thread ended, or another user's
            continue
    return done


#: the job's name for the engine's state over its Flink ValueState (in riskctl.core.state, where the compiled
#: core runs it natively)
FlinkKeyedState = EncodedKeyedState


def dead_letter_out(
    record: Any,
    reason: str,
    field: str | None = None,
    *,
    error: str | None = None,
    rule_id: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Out:
    """A dead-letter record (``riskctl.core.door.dead_letter``) of a ``RAW_EVENT`` record, keyed by its
    coordinates ``topic:partition:offset``."""
    raw, topic, partition, offset = record[0], record[1], record[2], record[3]
    coordinates = {"topic": topic, "partition": partition, "offset": offset}
    doc = dead_letter(
        raw, reason=reason, field=field, error=error, rule_id=rule_id, coordinates=coordinates, limits=limits
    )
    return (DEAD, f"{topic}:{partition}:{offset}", doc.encode())


def status_record(
    rule_id: str, version: int, state: str, reason: str | None = None, field: str | None = None
) -> Row:
    """The rule-status output row: what the job did with one rule version (``state``), and why if refused."""
    return Row(*status_out(rule_id, version, state, reason, field))


def status_out(
    rule_id: str, version: int, state: str, reason: str | None = None, field: str | None = None
) -> Out:
    """:func:`status_record` as the tuple the events side returns (:meth:`RiskFunction.decide_record`)."""
    doc = {
        "rule_id": rule_id,
        "version": version,
        "state": state,
        "reason": reason,
        "field": field,
        "seen_at_ms": int(time.time() * 1000),
    }
    return (STATUS, f"{rule_id}:{version}", json.dumps(doc).encode())


def _stored_version(text: str) -> int:
    """The version a rule document of the broadcast state names (0 if it names none it could be read for)."""
    try:
        version = json.loads(text).get("version", 0)
    except (ValueError, TypeError, AttributeError, RecursionError):
        return 0
    return version if type(version) is int and 0 <= version < 2**63 else 0


def _reason(exc: BaseException) -> tuple[str, str | None]:
    """The reason and field of a refused rule: every error of a :class:`RuleSetError`, else the exception's
    type and text (a bug shows as what it is, not as a restart).
    """
    # bounded: the status table holds the field in a VARCHAR(255), and a hostile document chooses its keys
    if isinstance(exc, RuleSetError) and exc.errors:
        field = exc.errors[0].field
        return "; ".join(e.reason for e in exc.errors)[:2000], field[:255] if field else field
    if isinstance(exc, RuleError):
        return exc.reason[:2000], exc.field[:255] if exc.field else exc.field
    return f"{type(exc).__name__}: {str(exc)[:500]}", "document"


def _check_columns(change: Row) -> None:
    """Refuse a rule row with a NULL rule_id, version or document, naming the column (found in review: a
    ``document`` column renamed by ALTER TABLE reached the job as NULL and was refused as "not valid JSON ...
    char 0"; a NULL version as "version must be an integer >= 1 ..., got 0")."""
    missing = [name for name, i in (("rule_id", 1), ("version", 2), ("document", 3)) if change[i] is None]
    if missing:
        msg = (
            f"the row's {' and '.join(missing)} is NULL (empty): written so by SQL, or the rules table's "
            "column renamed or dropped (ALTER TABLE); the job reads the columns rule_id, version, status, "
            "document"
        )
        raise RuleError(msg, field=missing[0])


class GcSwitch:
    """Turns this interpreter's cyclic collector off while any decide function is open in it.

    Why off at all: :meth:`RiskFunction.open`. The collector's switch and its frozen objects belong to the
    interpreter, and in thread mode that is the TaskManager's, shared by every decide subtask in its slots:
    one subtask turning the collector on at its close, or unfreezing and collecting at its open, did so while
    the others were deciding (their collection pauses back, their frozen objects thawed). So the open
    functions are counted, each at its place, its job and subtask index: the first open (none counted)
    unfreezes, collects, freezes and turns the collector off; the last close collects, unfreezes and turns
    it on; the others only count.

    A function whose close never ran (a failed attempt, a cancelled task) must not keep the collector off
    for good: the next open at its place (the same subtask of the job's next attempt) takes the place over,
    and so does any open of a later attempt of the job, whose places of earlier attempts are all given up (a
    restart stops every decide subtask of the job, and a subtask index may land on another TaskManager at a
    restart: its place here would have waited for it forever). Such an open also runs the first open's
    collection, since the failed attempt's function, its state cache and PyFlink's objects around it are the
    cyclic garbage that collection is for (none of the job's subtasks is deciding then). Limit: a job that
    ended with none of its decide functions closed and never runs here again keeps its places, and the
    collector off, until the TaskManager restarts; no open can tell it from a job still running in another
    slot.
    """

    def __init__(self, collector: Any = gc) -> None:
        self.gc = collector
        self.lock = threading.Lock()
        #: place (job, subtask index) -> (the attempt number, the ticket of the open function holding it)
        self.places: dict[tuple[str, int], tuple[int, object]] = {}

    def opened(self, place: tuple[str, int], attempt: int = 0) -> object:
        """Count an open function at ``place`` of the job's attempt ``attempt`` (Flink's attempt number of
        the subtask); the ticket to give :meth:`closed`."""
        ticket = object()
        with self.lock:
            # an earlier attempt's places of this job: functions whose close never ran, wherever this
            # attempt's subtasks run now
            failed = [p for p, (a, _) in self.places.items() if p[0] == place[0] and a < attempt]
            # the first, or the next attempt of one
            collect = not self.places or place in self.places or bool(failed)
            for p in failed:
                del self.places[p]
            self.places[place] = (attempt, ticket)
            if collect:
                # unfrozen first: what an earlier attempt's open froze (its function among it) is garbage
                # now, and a frozen object is never collected (found in review)
                self.gc.unfreeze()
                self.gc.collect()
                self.gc.freeze()
                self.gc.disable()
        return ticket

    def closed(self, place: tuple[str, int], ticket: object) -> int | None:
        """Uncount the function ``ticket`` opened; the objects collected if it was the last one, else None
        (also when a newer open took its place, or it was counted already)."""
        with self.lock:
            held = self.places.get(place)
            if ticket is None or held is None or held[1] is not ticket:
                return None
            del self.places[place]
            if self.places:
                return None
            found = int(self.gc.collect())
            self.gc.unfreeze()  # what the opens froze is collectable again once they are gone
            self.gc.enable()
            return found


#: the switch of this interpreter's decide functions
GC_SWITCH = GcSwitch()


class RiskFunction(KeyedBroadcastProcessFunction):  # type: ignore[misc]
    """Decides each event of a key with the engine; applies rule changes from the broadcast side."""

    def __init__(
        self,
        *,
        lateness_ms: int,
        state_ttl_ms: int,
        rules_wait_ms: int,
        dedup_window_ms: int = 0,
        dedup_all: bool = False,
        too_late_action: str = "PASS",
        state_ttl_margin_ms: int = 24 * 3_600_000,
        limits: Limits = DEFAULT_LIMITS,
        replies: bool = False,
        cache_keys: int = 80_000,
        fast_path: bool = True,
        compaction_nice: int = 0,
        event_time_past_clock: bool = False,
    ) -> None:
        self.limits = limits
        #: false: an event stamped ahead of the wall clock is decided at the clock's time (Engine.process's
        #: ``clock``), as the source's watermark moves at most to it (job.event_time_past_clock)
        self.event_time_past_clock = event_time_past_clock
        self.compaction_nice = compaction_nice  # for RocksDB's compaction threads, at open()
        self.code = LOADED_CODE  # the code the job was built with (checked where it runs, at open())
        self.fast_path = fast_path  # try riskctl.flink.fast_path at open()
        self.path = "not open"  # which path the events take, once open
        self.state_path = "not open"  # how the state's bytes reach the ValueState, once open
        self.cache_keys = cache_keys  # users whose state bytes stay in memory (FlinkKeyedState's LRU)
        self.replies = replies  # also write the decision of an event with a valid reply_to (REPLY)
        self.internal_errors = 0  # events dead-lettered for an exception while deciding them
        self.timer_errors = 0  # event-time timers whose handling raised (logged, skipped)
        self.lateness_ms = lateness_ms
        self.dedup_window_ms = dedup_window_ms
        self.dedup_all = dedup_all
        self.too_late_action = too_late_action
        self.state_ttl_ms = state_ttl_ms
        self.state_ttl_margin_ms = state_ttl_margin_ms
        self.rules_wait_ms = rules_wait_ms
        self.engine: Engine | None = None
        self.state: FlinkKeyedState | None = None
        self.pending: Any = None
        self.opened_at = 0.0
        self.have_rules = False
        #: the refused statuses of rules a restore could not load, for the next output (subtask 0 only)
        self.unreported: list[Out] = []
        self.held_keys: set[Any] = set()  # keys this instance held events of, not yet decided (start-up)
        self.restored_hold_until = 0.0  # monotonic time until which every event reads its key's held events
        self.last_rule_at = 0.0
        self.started = False
        self.subtask = 0
        #: this job's name at GC_SWITCH: made when the job is built, so every attempt of the job (each
        #: unpickles this function) has it, and another job another
        self.job = uuid.uuid4().hex
        self.gc_ticket: object = None  # GC_SWITCH's, while open
        self.counters: dict[str, Any] = {}  # METRICS -> Flink counter
        self.reported = dict.fromkeys(METRICS, 0)  # what the counters hold
        self.next_report_ms = 0
        #: the time of the processing-time timer registered to report the counters (0: none yet)
        self.report_timer_ms = 0

    def _state_names(self) -> Iterable[str]:
        """The state names of the rules in force (FlinkKeyedState turns a stored code back into its name)."""
        return self.engine.state_names if self.engine is not None else ()

    def open(self, runtime_context: RuntimeContext) -> None:
        if self.code != LOADED_CODE:
            msg = (
                f"this TaskManager's Python runs riskctl {LOADED_CODE} (imported when its JVM first "
                f"ran Python), the job was built with riskctl {self.code}: a TaskManager keeps the Python "
                "modules it imported for its whole life; restart the TaskManagers after installing or "
                "changing riskctl"
            )
            raise RuntimeError(msg)
        desc = ValueStateDescriptor("engine", Types.PICKLED_BYTE_ARRAY())
        # Flink's TTL frees the keys that never come back (processing time, job.state_ttl_margin_ms beyond the
        # engine's own event-time TTL: only a stall longer than that margin can make it drop a key the engine
        # would still read; RocksDB's compaction filter removes it). The cache expires its entries with it.
        # The engine arms no clean-up timer (cleanup_timers=False): with heap timers a checkpoint writes every
        # pending timer in its synchronous phase, while this task waits, and the clean-up timers
        # were one per active key; without them the phase took 41-54 ms at its median instead of 78-85
        # (bench/results/cleanup-timers-ab). A key silent for the TTL still starts from zero at its next
        # event, so decisions are the same (docs/engine.md, "State, timers and TTL").
        flink_ttl_ms = self.state_ttl_ms + self.state_ttl_margin_ms
        desc.enable_time_to_live(ttl_config(flink_ttl_ms))
        value_state = runtime_context.get_state(desc)
        self.state_path = "PyFlink's pickling (job.fast_path is false)"
        java = False
        if self.fast_path:
            # the bytes into the Java state, pickled by FlinkKeyedState, not by PyFlink's wrapper
            value_state, why = fast_path.java_value_state(value_state)
            java = why is None
            self.state_path = "the Java ValueState" if java else f"PyFlink's pickling ({why})"
        self.state = FlinkKeyedState(
            value_state,
            self.cache_keys,
            ttl_ms=flink_ttl_ms,
            known_names=self._state_names,
            pickle_writes=java,
        )
        self.pending = runtime_context.get_list_state(
            ListStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY())
        )
        self.engine = Engine(
            RuleSet(),
            lateness=self.lateness_ms,
            state_ttl=self.state_ttl_ms,
            cleanup_timers=False,
            dedup_window=self.dedup_window_ms,
            dedup_all=self.dedup_all,
            too_late_action=self.too_late_action,
        )
        self.opened_at = time.monotonic()
        self.restored_hold_until = self.opened_at + RESTORED_HOLD_MS / 1000
        # No cyclic GC in the TaskManager's interpreter while the job runs: a collection pauses the decide
        # task, and in thread mode that was the largest source of tail latency at low rates, even with
        # runner.tune_gc's bounded collections (the stalls measured: bench/flink_profile/README.md). The
        # engine's state is acyclic and reference counting frees it; the last close in this interpreter
        # reports any cyclic garbage that accumulated anyway, so a leak shows in the TaskManager's output.
        # What exists at the first open (modules, rules) is frozen, so that final collection skips it.
        # Unfrozen and collected first: the interpreter outlives a restart, and a failed attempt's function
        # (its state cache of up to job.state_cache_keys users) and PyFlink's operators around it are cyclic
        # garbage. They were frozen by that attempt's own open (they existed then), and a frozen object is
        # never collected: without the unfreeze each restart kept the previous attempt's cache for the JVM's
        # life (found in review). The switch is the interpreter's, shared by the decide subtasks in this
        # TaskManager's slots: GC_SWITCH counts them, so only the first open and the last close touch it.
        self.subtask = runtime_context.get_index_of_this_subtask()
        self.gc_ticket = GC_SWITCH.opened((self.job, self.subtask), runtime_context.get_attempt_number())
        group = runtime_context.get_metrics_group().add_group("riskctl")
        self.counters = {name: group.counter(name) for name in (*METRICS, PATH_METRIC)}
        from riskctl.core import native

        self.path = "PyFlink's own (job.fast_path is false)"
        if self.fast_path:
            why = fast_path.install(
                self, self.decide_record, RAW_EVENT.get_field_names(), TAGGED.get_field_names()
            )
            self.path = "the fast path" if why is None else f"PyFlink's own ({why})"
            if why is None:
                self.counters[PATH_METRIC].inc()
        lowered = lower_compaction_priority(self.compaction_nice)
        LOG.info(
            "decide subtask %s: engine core %s (compiled modules: %s); events by %s; state bytes by %s; %s "
            "RocksDB compaction threads at nice %s",
            self.subtask,
            native.status,
            ", ".join(native.compiled()) or "none",
            self.path,
            self.state_path,
            lowered,
            self.compaction_nice,
        )

    def counts(self) -> dict[str, int]:
        """The current values of :data:`METRICS`."""
        state = self.state
        return {
            "stateCacheHits": state.hits if state is not None else 0,
            "stateCacheMisses": state.misses if state is not None else 0,
            "internalErrors": self.internal_errors,
            "timerErrors": self.timer_errors,
            "patternOverflows": self.engine.pattern_overflow if self.engine is not None else 0,
            "duplicates": self.engine.duplicates if self.engine is not None else 0,
            "lateRechecksSkipped": self.engine.rechecks_skipped if self.engine is not None else 0,
            "tooLate": self.engine.too_late if self.engine is not None else 0,
        }

    def report_metrics(self, now_ms: int) -> None:
        """Bring the Flink counters up to ``counts()``, and the next report ``METRICS_REPORT_MS`` later."""
        self.next_report_ms = now_ms + METRICS_REPORT_MS
        for name, value in self.counts().items():
            delta = value - self.reported[name]
            counter = self.counters.get(name)
            if delta and counter is not None:
                counter.inc(delta)
                self.reported[name] = value

    def close(self) -> None:
        self.report_metrics(int(time.time() * 1000))
        ticket, self.gc_ticket = self.gc_ticket, None
        found = GC_SWITCH.closed((self.job, self.subtask), ticket)
        if found is None:
            LOG.info(
                "decide subtask %s closed; the collection is left to the last one open here", self.subtask
            )
        else:
            LOG.info("decide subtask %s closed: %s objects of cyclic garbage collected", self.subtask, found)
        if self.state is not None:  # for sizing job.state_cache_keys
            looked_up = self.state.hits + self.state.misses
            LOG.info(
                "decide subtask %s: state cache of %s users, %s hits in %s look-ups",
                self.subtask,
                self.cache_keys,
                self.state.hits,
                looked_up,
            )

    # -- rules --------------------------------------------------------------------------------------------
    def _restore_rules(self, ctx: Any) -> None:
        """After a restore the broadcast state holds the rules; compile them once, on first use.

        A stored document that no longer loads (it was accepted by an older version, whose limits were
        wider) is skipped and logged: one bad rule never stops the job. Subtask 0 also reports it as
        ``refused`` with the reason (:attr:`unreported`, sent with its next output): MySQL's status table
        still said the version was accepted, and the source, restored at its offset, sends it no more.
        """
        if self.have_rules:
            return
        stored = list(ctx.get_broadcast_state(RULES_STATE).items())
        if stored:
            assert self.engine is not None
            for rule_id, text in stored:
                try:
                    self.engine.upsert_rule(
                        load_json_document(text, source="broadcast state", rule_id=rule_id)
                    )
                except Exception as exc:  # noqa: BLE001 - any failure refuses this rule, never the job
                    reason, field = _reason(exc)
                    LOG.warning("rule %r from broadcast state not restored: %s", rule_id, reason)
                    if self.subtask == 0:
                        version = _stored_version(text)
                        self.unreported.append(status_out(rule_id, version, "refused", reason, field))
            self.have_rules = self.started = True

    def _take_unreported(self) -> list[Out]:
        taken, self.unreported = self.unreported, []
        return taken

    def process_broadcast_element(self, value: Row, ctx: Any) -> Iterator[Any]:
        """Apply one rule change. Whatever goes wrong with one rule (a hostile document, a bug in a
        check) becomes a ``refused`` status with the reason: it never escapes and never stops the job.
        """
        assert self.engine is not None
        self._restore_rules(ctx)
        for out in self._take_unreported():
            yield Row(*out)
        rule_id, version = str(value[1]), 0
        try:
            op, version, document = value[0], int(value[2] or 0), value[3]
            rules = ctx.get_broadcast_state(RULES_STATE)
            status = None
            if op == SYNC:  # the source was read whole: what it lacks goes
                yield from self._sync(document, rules)
            elif op == "delete":
                self.engine.delete_rule(rule_id)
                rules.remove(rule_id)
                status = status_record(rule_id, version, "deleted")
            else:
                _check_columns(value)
                doc = load_json_document(document, source="rule change", rule_id=rule_id)
                if not isinstance(doc, dict):
                    msg = "the rule document must be a JSON object"
                    raise RuleError(msg, rule_id=rule_id, field="document")
                if doc.setdefault("id", rule_id) != rule_id:  # it would run under one id, deleted by another
                    msg = f"the document's id {str(doc['id'])[:100]!r} is not its row's rule_id {rule_id!r}"
                    raise RuleError(msg, rule_id=rule_id, field="id")
                doc["version"] = version
                self.engine.upsert_rule(doc)
                rules.put(rule_id, json.dumps(doc))
                status = status_record(rule_id, version, "accepted")
        except Exception as exc:  # noqa: BLE001 - RuleSetError, RuleError, and anything unforeseen
            reason, field = _reason(exc)
            status = status_record(rule_id, version, "refused", reason, field)
        self.have_rules = True
        self.last_rule_at = time.monotonic()
        if self.subtask == 0 and status is not None:  # every subtask sees every rule; one status is enough
            yield status

    def _sync(self, document: Any, rules: Any) -> Iterator[Any]:
        """Delete the rules held that the source no longer has (``document``: its rule ids, a JSON list)."""
        assert self.engine is not None
        current = json.loads(document)
        if not isinstance(current, list):
            msg = "a sync row lists the rule ids"
            raise RuleError(msg, field="document")
        for rule_id in sorted(set(rules.keys()) - set(current)):
            stored = rules.get(rule_id)
            self.engine.delete_rule(rule_id)
            rules.remove(rule_id)
            try:
                version = int(json.loads(stored).get("version") or 0)
            except (TypeError, ValueError, AttributeError):
                version = 0
            LOG.info("rule %r: not in its source any more (removed while the job was down): deleted", rule_id)
            if self.subtask == 0:
                yield status_record(rule_id, version, "deleted")

    # -- events ---------------------------------------------------------------------------------------------
    def _holding(self) -> bool:
        if self.started:
            return False
        now = time.monotonic()
        settled = self.have_rules and (now - self.last_rule_at) * 1000 >= RULES_SETTLE_MS
        if settled or (now - self.opened_at) * 1000 >= self.rules_wait_ms:
            self.started = True
            return False
        return True

    def process_element(self, value: Row, ctx: Any) -> list[Row]:
        """PyFlink's own path (the fast path, when installed, calls :meth:`decide_record` directly)."""
        return [Row(*out) for out in self.decide_record(None, value, ctx)]

    def decide_record(self, key: Any, value: Any, ctx: Any) -> list[Out]:
        """The outputs of one record of the events side (``RAW_EVENT``'s fields); ``key``: the current key's
        string, or None to ask the context."""
        # Never raises: a record that could stop the job would restart it on the same record, forever.
        # Lists, not generators, all the way down: PyFlink iterates what this returns, and every generator
        # layer costs a frame per event (bench/decide_budget.py).
        try:
            outs = self._element(value, ctx, _plain_key(ctx.get_current_key()) if key is None else key)
        except Exception as exc:  # noqa: BLE001 - whatever failed outside the per-event guard
            self.internal_errors += 1
            LOG.exception("decide: record %s:%s:%s dead-lettered", value[1], value[2], value[3])
            outs = [self._internal_error(value, exc, None)]
        if self.unreported:  # rules a restore could not load: once, after a restore
            return self._take_unreported() + outs
        return outs

    def _element(self, value: Any, ctx: Any, key: str) -> list[Out]:
        now_ms = int(time.time() * 1000)
        if now_ms >= self.next_report_ms:
            self.report_metrics(now_ms)
        if self.report_timer_ms < self.next_report_ms:
            # What this event counts is reported by the next report: with a later event, or by this timer
            # if none comes (an idle tail stays counted). Once per report: after a report by a timer, the
            # events of the second that followed had none, and their counts waited for the next event,
            # for over a minute in the door tests (stop 49).
            self.report_timer_ms = self.next_report_ms
            ctx.timer_service().register_processing_time_timer(self.next_report_ms)
        try:
            event = parse_event(value[0], self.limits, now_ms)
        except EventError as exc:
            return [dead_letter_out(value, exc.reason, exc.field, limits=self.limits)]
        self._restore_rules(ctx)
        if self._holding():
            # the record is kept with its event, so a failure when it is decided can dead-letter it
            self.pending.add((event, tuple(value)))
            self.held_keys.add(key)
            ctx.timer_service().register_processing_time_timer(
                ctx.timer_service().current_processing_time() + HOLD_RETRY_MS
            )
            return []
        if (self.held_keys or self.restored_hold_until) and (
            key in self.held_keys or self._restored_window()
        ):  # start-up: this key's held events first, this instance's or restored ones
            return self._flush_pending(ctx, key, now_ms) + self._decide(event, value, ctx, key, now_ms)
        return self._decide(event, value, ctx, key, now_ms)

    def _restored_window(self) -> bool:
        """Whether events still read their key's held events for a restored checkpoint's sake."""
        if self.restored_hold_until and time.monotonic() < self.restored_hold_until:
            return True
        self.restored_hold_until = 0.0  # over: after start-up no event reads the held events
        return False

    def _internal_error(self, record: Any, exc: BaseException, rule_id: str | None) -> Out:
        return dead_letter_out(
            record, internal_error_reason(exc), error=type(exc).__name__, rule_id=rule_id, limits=self.limits
        )

    def _flush_pending(self, ctx: Any, key: str, now_ms: int) -> list[Out]:
        """Decide the current key's held events, in arrival order (none: one state read), by the clock
        ``now_ms``."""
        rows: list[Out] = []
        held = list(self.pending.get() or [])
        self.held_keys.discard(key)
        if held:
            self.pending.clear()
            for item in held:
                if isinstance(item, dict):  # held by a version that kept the event only
                    event, record = item, (None, None, None, None)
                else:
                    event, record = item
                rows += self._decide(event, record, ctx, key, now_ms)
        return rows

    def _decide(self, event: dict[str, Any], record: Any, ctx: Any, key: str, now_ms: int) -> list[Out]:
        """Decide one event that arrived by the clock ``now_ms``; any exception dead-letters it (with the rule
        being evaluated) and rolls back."""
        assert self.engine is not None and self.state is not None
        self.state.begin(key)
        try:
            result = self.engine.process(self.state, event, None if self.event_time_past_clock else now_ms)
            decision = result.decision
            assert decision is not None
            record = decision.to_dict()
            doc = fit_record(record, jsoncodec.dumpb(record))
            rows = [(DECISION, decision.event_id, doc)]
            reply = reply_key(event) if self.replies else None
            if reply is not None:
                rows.append((REPLY, reply, doc))
            if result.alerts:
                rows += self._alert_rows(result)
            self.state.commit()
        except Exception as exc:  # noqa: BLE001 - the guard: one event never stops the job
            self.state.abort()
            self.internal_errors += 1
            rule_id = self.engine.current_rule
            LOG.warning(
                "decide: event %r of key %r dead-lettered (%s, rule %s); %s so far in subtask %s",
                event.get("event_id"),
                key,
                type(exc).__name__,
                rule_id,
                self.internal_errors,
                self.subtask,
            )
            return [self._internal_error(record, exc, rule_id)]
        self._register(result, ctx)
        return rows

    @staticmethod
    def _alert_rows(result: Any) -> list[Out]:
        rows = []
        for alert in result.alerts:
            alert_doc = alert.to_dict()
            rows.append(
                (ALERT, str(alert_doc.get("alert_id")), fit_record(alert_doc, jsoncodec.dumpb(alert_doc)))
            )
        return rows

    @staticmethod
    def _register(result: Any, ctx: Any) -> None:
        if not result.timers and not result.cancelled:  # most events and timers: no call into the context
            return
        timers = ctx.timer_service()
        for ts in result.cancelled:  # first: a time both cancelled and asked for again stays registered
            timers.delete_event_time_timer(ts)
        for ts in result.timers:
            timers.register_event_time_timer(ts)

    def on_timer(self, timestamp: int, ctx: Any) -> list[Row]:
        # Never raises (a timer that raised would restart the job, and fire again after the restore).
        try:
            outs = self._timer(timestamp, ctx)
            if self.unreported:
                outs = self._take_unreported() + outs
            return [Row(*out) for out in outs]
        except Exception:  # noqa: BLE001 - whatever failed outside the per-timer guard
            self.timer_errors += 1
            LOG.exception("decide: timer at %s of key %r failed", timestamp, ctx.get_current_key())
            return []

    def _timer(self, timestamp: int, ctx: Any) -> list[Out]:
        assert self.engine is not None and self.state is not None
        self._restore_rules(ctx)
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:  # holding at start-up, or the metrics
            now_ms = int(time.time() * 1000)
            self.report_metrics(now_ms)
            if self._holding():
                ctx.timer_service().register_processing_time_timer(
                    ctx.timer_service().current_processing_time() + HOLD_RETRY_MS
                )
                return []
            # Always read: after a restore this instance does not know which keys hold events.
            return self._flush_pending(ctx, _plain_key(ctx.get_current_key()), now_ms)
        key = _plain_key(ctx.get_current_key())
        self.state.begin(key)
        try:
            result = self.engine.on_timer(self.state, timestamp)
            rows = self._alert_rows(result)
            self.state.commit()
            self._register(result, ctx)
        except Exception:  # noqa: BLE001 - a failing timer is logged and counted, never raised
            self.state.abort()
            self.timer_errors += 1
            LOG.exception(
                "decide: timer at %s of key %r failed (%s timer errors so far in subtask %s)",
                timestamp,
                key,
                self.timer_errors,
                self.subtask,
            )
            return []
        return rows


def _plain_key(key: Any) -> Any:
    """The key as the fast path sees it, the user id: PyFlink's context gives it as ``Row(k)``. The state
    cache must see one form for a key, whichever path the event or timer took."""
    return key[0] if isinstance(key, Row) else key
