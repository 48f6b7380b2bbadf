"""What ``riskctl run`` says while its job runs on the embedded MiniCluster: each failure that restarts the
job (one line on stderr with the failure's number and its root cause, rate-limited), and the cause when the
job ends FAILED (one ``error: ...`` line, exit 1).

Without this the client sat in ``env.execute()`` and said nothing while the job failed and restarted, every
few seconds, for as long as the restart strategy allowed (with no attempt cap: forever): the cause was only in
Flink's log file. Where the facts come from, none of them log text:

- the job's end: the JobClient of ``env.execute_async()`` (its execution-result future completes when the job
  is FINISHED, FAILED or CANCELED; PyFlink 1.20's ``pyflink.common.JobClient``);
- each failure: the JobManager's exception history, ``GET /jobs/<id>/exceptions`` of the MiniCluster's REST
  endpoint (``exceptionHistory.entries``: one entry per failure that made the job restart or fail, newest
  first, each with a ``timestamp``, the ``exceptionName`` and the Java ``stacktrace`` with its ``Caused by:``
  chain). The MiniCluster of a local environment starts that endpoint on a free port (``rest.bind-port: 0``
  unless set, PerJobMiniClusterFactory); its address is ``MiniCluster.getRestAddress()``, reached through the
  JobClient's ``miniCluster`` field (Flink 1.20's MiniClusterJobClient; without it, only the end is reported);
- the JVM's own end (SIGKILL, OOM killer, crash): a call into it fails, and the JVM (this process's child)
  can be waited for. One ``error: ...`` line with its signal or status, exit 1, and none of py4j's connection
  tracebacks (it logs them before its error reaches riskctl, and at exit once per Java object).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TextIO, TypeVar

log = logging.getLogger("riskctl.job")

#: a cause is cut to this many characters (a Python message can hold a whole repr)
MAX_CAUSE_CHARS = 300
#: at most one restart line per this many seconds; the failures in between are folded into the next line
REPORT_INTERVAL_S = 10.0
#: how often the job's end and its exception history are looked at: below the shortest default backoff (1 s),
#: so that each restart is seen before the next failure (the history keeps 16; the end is seen at once)
POLL_INTERVAL_S = 0.5
#: the exit status of a job that ended FAILED, or that riskctl cancelled as it cannot run (ExitCode.ERROR)
FAILED = 1

# Flink's failure when the restart strategy refuses another attempt (the cause of the job's end, above the
# failure's own)
_SUPPRESSED = "org.apache.flink.runtime.JobException: Recovery is suppressed"
# a Python exception raised in thread mode reaches Java as pemja's PythonException: "<class 'X'>: message"
_PEMJA = "pemja.core.PythonException"
_PYTHON_CLASS = re.compile(r"<class '([^']+)'>(?::\s*(.*))?", re.DOTALL)


def root_cause(trace: str, limit: int = MAX_CAUSE_CHARS) -> str:
    """``Class: message`` of the root cause of a Java stack trace, on one line, at most ``limit`` characters.

    The root cause is the deepest ``Caused by:``, unless the exception it caused repeats its message with
    more words (Java's ``IOException: Cannot run program "x": error=2, No such file or directory`` over
    ``IOException: error=2, No such file or directory``). A Python exception (pemja's
    ``PythonException: <class 'RuntimeError'>: ...``) reads ``RuntimeError: ...``."""
    chain = [_split(" ".join(" ".join(lines).split())) for lines in _headers(trace)]
    if not chain:
        return "(no exception text)"
    i = len(chain) - 1
    while i > 0 and _adds_to(chain[i - 1], chain[i]):
        i -= 1
    name, message = chain[i]
    return shorten(f"{name}: {message}" if message else name, limit)


def _headers(trace: str) -> list[list[str]]:
    """The header lines (class and message, a message may span lines) of each throwable of a trace."""
    headers: list[list[str]] = []
    current: list[str] | None = None
    for line in trace.splitlines():
        if line.startswith("Caused by: "):
            current = [line.removeprefix("Caused by: ")]
            headers.append(current)
        elif not headers:
            current = [line]
            headers.append(current)
        elif current is not None and line and not line.startswith("\t"):
            # Java's printStackTrace starts a frame, "... N more" and a "Suppressed:" block with a tab
            # (pemja's Python frames too); a message's own lines may start with spaces
            current.append(line)
        else:
            current = None  # the frames: this throwable's header is complete
    return headers


def _split(header: str) -> tuple[str, str]:
    name, _, message = header.partition(": ")
    if name == _PEMJA:
        found = _PYTHON_CLASS.match(message)
        if found:
            return found.group(1), (found.group(2) or "").strip()
    return name, message


def _adds_to(parent: tuple[str, str], cause: tuple[str, str]) -> bool:
    """Whether ``parent``'s message is ``cause``'s with more words (not a wrapper naming its class)."""
    p_message, (c_name, c_message) = parent[1], cause
    return bool(c_message) and c_message in p_message and c_name not in p_message


def shorten(text: str, limit: int = MAX_CAUSE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def task_of(task_name: str | None) -> str | None:
    """The first operator of a task's name (``decide -> ... (1/2) - execution #3`` -> ``decide``)."""
    if not task_name:
        return None
    first = task_name.split(" -> ")[0]
    return re.sub(r"\s*\(\d+/\d+\).*$", "", first).strip() or None


@dataclass(frozen=True)
class Failure:
    """One entry of the job's exception history: a failure that made the job restart (or fail)."""

    timestamp_ms: int
    cause: str
    task: str | None = None

    def describe(self) -> str:
        return f"{self.cause} (in {self.task})" if self.task else self.cause


def failures(doc: Mapping[str, Any], after_ms: int = -1) -> list[Failure]:
    """The entries of a ``/jobs/<id>/exceptions`` document newer than ``after_ms``, oldest first."""
    history = doc.get("exceptionHistory") or {}
    out = []
    for entry in history.get("entries") or []:
        ts = entry.get("timestamp")
        if not isinstance(ts, int) or ts <= after_ms:
            continue
        trace = entry.get("stacktrace") or entry.get("exceptionName") or ""
        out.append(Failure(ts, root_cause(str(trace)), task_of(entry.get("taskName"))))
    return sorted(out, key=lambda f: f.timestamp_ms)


#: the refusal of RiskFunction.open() when the TaskManager's interpreter imported other riskctl sources than
#: the job was built with (riskctl/flink/risk_function.py; the unit test raises the real one)
_CODE_MISMATCH = re.compile(r"^RuntimeError: this TaskManager's Python runs riskctl \w+ .*built with riskctl")


def cannot_heal(cause: str) -> bool:
    """Whether a failure of a job on *this process's* MiniCluster will fail every restart the same way.

    The code-fingerprint refusal: the MiniCluster's TaskManager runs in this process's JVM, and its embedded
    interpreter imported riskctl once (the sources changed between the job's build and that import, e.g. an
    edit or a ``git pull`` while ``riskctl run`` started). It keeps those modules for the JVM's life, so every
    restart lands on the same interpreter and is refused again, forever with no attempt cap; only a new
    process heals it. On a cluster the same refusal can heal (a restarted or new TaskManager takes the job),
    so ``riskctl submit`` jobs are not watched by this.
    """
    return bool(_CODE_MISMATCH.match(cause))


class RestartReporter:
    """The restart lines: the first failure at once, then at most one line per ``interval_s``, the failures
    in between folded into it (their count, and the latest cause)."""

    def __init__(self, interval_s: float = REPORT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.failures = 0  # failures seen (each one a restart)
        self.reported = 0  # failures covered by a line already
        self.last_line_at: float | None = None
        self.latest: Failure | None = None
        self.causes: set[str] = set()  # of the failures not reported yet

    def failed(self, failure: Failure, now: float) -> str | None:
        """Count a failure; the line to print now, or None when it is folded into a later one."""
        self.failures += 1
        self.latest = failure
        self.causes.add(failure.cause)
        return self.due(now)

    def due(self, now: float, *, force: bool = False) -> str | None:
        """The line for the failures not reported yet, if the last line is ``interval_s`` old (or none, or
        ``force``: the job has ended, no later line will come)."""
        if self.latest is None or self.reported == self.failures:
            return None
        if not force and self.last_line_at is not None and now - self.last_line_at < self.interval_s:
            return None
        first, last = self.reported + 1, self.failures
        if first == last:
            line = f"riskctl job failed (failure {last}), restarting: {self.latest.describe()}"
        else:
            since = "" if self.last_line_at is None else f" in the last {now - self.last_line_at:.0f} s"
            latest = "latest: " if len(self.causes) > 1 else ""
            line = (
                f"riskctl job failed (failures {first}-{last}, {last - first + 1}{since}), restarting: "
                f"{latest}{self.latest.describe()}"
            )
        self.reported = self.failures
        self.last_line_at = now
        self.causes.clear()
        return line


class WatchedJob(Protocol):
    """What :func:`watch` needs of a running job (:class:`MiniClusterJob` for the real one)."""

    def exceptions(self) -> Mapping[str, Any] | None:
        """The ``/jobs/<id>/exceptions`` document, or None when it cannot be read now."""

    def outcome(self) -> str | None:
        """None while the job runs; ``""`` when it ended without an error; else the text of its error (a Java
        stack trace with its causes)."""

    def cancel(self) -> None: ...


def watch(
    job: WatchedJob,
    out: TextIO = sys.stderr,
    *,
    interval_s: float = REPORT_INTERVAL_S,
    poll_s: float = POLL_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log_dir: str | None = None,
) -> int:
    """Report the job's restarts on ``out`` until it ends; its exit status: 0 when it ended without an
    error, :data:`FAILED` when it failed (one ``error: ...`` line) or cannot heal (cancelled, same line)."""
    reporter = RestartReporter(interval_s)
    seen_ms = -1
    where = _where(log_dir)
    while True:
        doc = job.exceptions()
        try:
            end = job.outcome()  # after the history: a failure seen before the job ended is not its last
        except JvmEnded as exc:
            print(f"error: {exc}{where}", file=out, flush=True)
            return FAILED
        if end is not None:
            # The job can fail its last attempts between two looks (a slow first answer of the REST endpoint,
            # a fast failure, a failure between the look at the history and the one at the end): the history
            # read once more now holds them (the one read before the end if the endpoint closed meanwhile).
            # All but its newest made the job restart; the newest of a failed job is its end, told by the
            # error line. Those already counted are not newer than seen_ms.
            last = job.exceptions() or doc
            new = failures(last, seen_ms) if last else []
            lines = [reporter.failed(f, clock()) for f in (new[:-1] if end else new)]
            for line in (*lines, reporter.due(clock(), force=True)):
                if line:
                    print(line, file=out, flush=True)
            if not end:
                return 0
            cause = root_cause(end)
            if cause.startswith(_SUPPRESSED):
                # no cause below Flink's own (a trace cut short): the last failure of the history says more
                cause = reporter.latest.cause if reporter.latest else cause
            # no count of restarts here: those of the last second before the end may not have been seen
            how = " and the restart strategy gave up (job.restart_*)" if _SUPPRESSED in end else ""
            print(f"error: the job failed{how}: {cause}{where}", file=out, flush=True)
            return FAILED
        new = failures(doc, seen_ms) if doc else []
        for failure in new:
            seen_ms = max(seen_ms, failure.timestamp_ms)
            if cannot_heal(failure.cause):
                job.cancel()
                print(
                    f"error: the job cannot run in this process: {failure.cause}. riskctl's sources changed "
                    "while 'riskctl run' started its job, and its MiniCluster keeps the Python modules it "
                    "imported: run 'riskctl run' again",
                    file=out,
                    flush=True,
                )
                return FAILED
            line = reporter.failed(failure, clock())
            if line:
                print(line, file=out, flush=True)
        if not new:
            line = reporter.due(clock())
            if line:
                print(line, file=out, flush=True)
        sleep(poll_s)


class JvmEnded(Exception):  # noqa: N818 - an event, told as the command's error line
    """The JVM of the MiniCluster (the job's) ended while the job ran: killed (SIGKILL, the OOM killer) or
    crashed. The job is gone with it; nothing is left to watch or to cancel."""


class MiniClusterJob:
    """A job of ``env.execute_async()`` on the embedded MiniCluster, for :func:`watch`."""

    def __init__(self, job_client: Any, jvm_pid: int | None = None) -> None:
        self.client = job_client
        self.job_id = str(job_client.get_job_id())
        self.result = job_client.get_job_execution_result()
        self.jvm_pid = jvm_pid if jvm_pid is not None else _gateway_pid()
        self.rest_url = rest_address(job_client)
        if self.rest_url is None:
            log.warning("the MiniCluster's REST address is unknown: restarts are not reported, only the end")

    def exceptions(self) -> Mapping[str, Any] | None:
        if self.rest_url is None:
            return None
        url = f"{self.rest_url}/jobs/{self.job_id}/exceptions"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (the MiniCluster's http:// address)
                doc = json.loads(resp.read())
        except (OSError, ValueError, http.client.HTTPException):  # the cluster shutting down with the job
            return None
        return doc if isinstance(doc, dict) else None

    def outcome(self) -> str | None:
        try:
            if not call_jvm(self.jvm_pid, self.result.done):
                return None
        except JvmEnded:
            raise
        except Exception as exc:  # noqa: BLE001 - py4j's: the JVM (the MiniCluster, the job) does not answer
            return f"the MiniCluster's JVM does not answer: {type(exc).__name__}: {exc}"
        try:
            call_jvm(self.jvm_pid, self.result.result)
        except JvmEnded:
            raise
        except Exception as exc:  # noqa: BLE001 - py4j's error for the job's own: its text is the cause
            return java_trace(exc)
        return ""

    def cancel(self) -> None:
        try:
            call_jvm(self.jvm_pid, lambda: self.client.cancel().result())
        except Exception as exc:  # noqa: BLE001 - ended meanwhile: nothing left to cancel
            log.debug("cancel: %s", exc)


def run(execute_async: Callable[[], Any], out: TextIO = sys.stderr, *, log_dir: str | None = None) -> int:
    """Submit the job (``env.execute_async``, on this process's MiniCluster) and :func:`watch` it; the exit
    status. The JVM's end while the job is submitted is told as while it runs (a SIGKILL then came with
    py4j's tracebacks of ``executeAsync``)."""
    pid = _gateway_pid()
    try:
        job = call_jvm(pid, lambda: MiniClusterJob(execute_async(), jvm_pid=pid))
    except JvmEnded as exc:
        print(f"error: {exc}{_where(log_dir)}", file=out, flush=True)
        return FAILED
    if job.rest_url is not None:
        # where to read the job while it runs (its vertices, metrics, checkpoints): a free port Flink picks
        log.warning("riskctl job %s running; the MiniCluster's REST API at %s", job.job_id, job.rest_url)
    return watch(job, out, log_dir=log_dir)


def _where(log_dir: str | None) -> str:
    return f" (Flink's log: {log_dir})" if log_dir else ""


def call_jvm(pid: int | None, call: Callable[[], _T]) -> _T:
    """``call()`` (a call into the JVM of process ``pid``), with py4j's log records held: a call that fails
    because the JVM has ended raises :class:`JvmEnded` and its records (connection tracebacks) are dropped,
    with all of py4j's to come (at exit it logs one per Java object it can no longer release); otherwise
    they are logged as they would have been."""
    with _py4j_records() as held:
        try:
            result = call()
        except Exception as exc:
            # a Java exception (the job's failure) is an answer of a JVM that runs: no wait for its end
            answered = getattr(exc, "java_exception", None) is not None
            how = None if answered or pid is None else jvm_end(pid)
            if how is None:
                raise
            _ended(pid, how, held)
        # a call can outlive a failed one inside it (rest_address catches py4j's errors): their tracebacks
        if pid is not None and any(r.exc_info for r in held) and (how := jvm_end(pid)) is not None:
            _ended(pid, how, held)
        return result


def _ended(pid: int | None, how: str, held: list[logging.LogRecord]) -> NoReturn:
    held.clear()
    _silence_py4j()
    msg = f"the job's JVM (pid {pid}) ended unexpectedly ({how}): the job and its MiniCluster are gone"
    raise JvmEnded(msg) from None


_T = TypeVar("_T")

#: the loggers py4j's records are made on: its modules', and the root logger (GatewayClient.send_command
#: logs "Exception while sending command." with logging.exception)
_PY4J_LOGGERS = ("py4j", "py4j.java_gateway", "py4j.clientserver", "")


def _is_py4j(record: logging.LogRecord) -> bool:
    return record.name.partition(".")[0] == "py4j" or f"{os.sep}py4j{os.sep}" in record.pathname


class _Py4jFilter(logging.Filter):
    """Keeps py4j's records from the handlers: in ``held`` while a call runs, or for good once the JVM is
    gone (``held`` None)."""

    def __init__(self, held: list[logging.LogRecord] | None) -> None:
        super().__init__()
        self.held = held

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_py4j(record):
            return True
        if self.held is not None:
            self.held.append(record)
        return False


@contextmanager
def _py4j_records() -> Iterator[list[logging.LogRecord]]:
    """py4j's records logged in the block, held; those left in the list are logged at its end."""
    held: list[logging.LogRecord] = []
    hold = _Py4jFilter(held)
    loggers = [logging.getLogger(name or None) for name in _PY4J_LOGGERS]
    for logger in loggers:
        logger.addFilter(hold)
    try:
        yield held
    finally:
        for logger in loggers:
            logger.removeFilter(hold)
        for record in held:
            logging.getLogger(None if record.name == "root" else record.name).handle(record)


#: py4j's records once the JVM is gone: none is told (addFilter adds it once to each logger)
_SILENCED = _Py4jFilter(None)


def _silence_py4j() -> None:
    for name in _PY4J_LOGGERS:
        logging.getLogger(name or None).addFilter(_SILENCED)


def _gateway_pid() -> int | None:
    """The pid of the JVM of PyFlink's gateway (the MiniCluster's), asked while it runs."""
    try:
        from pyflink.java_gateway import get_gateway

        return int(get_gateway().jvm.java.lang.ProcessHandle.current().pid())
    except Exception as exc:  # noqa: BLE001 - then a dead JVM is told as one that does not answer
        log.debug("the JVM's pid: %s", exc)
        return None


def jvm_end(pid: int, wait_s: float = 1.0) -> str | None:
    """How the process ``pid`` (a child of this one: PyFlink starts its JVM) ended, ``"killed by SIGKILL"``
    or ``"exit status 1"``, or None if it still runs after ``wait_s`` (a call into it failed: a process
    being killed closes its sockets a moment before it can be waited for)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            # WNOWAIT: looked at, not reaped (the Popen of PyFlink's launch_gateway may still wait for it)
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already, or not a child: only whether it is there
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return "it is gone"
            except PermissionError:
                pass  # another user's process has the pid now: told as running, not as gone
            info = None
        if info is not None:
            if info.si_code == os.CLD_EXITED:
                return f"exit status {info.si_status}"
            try:
                return f"killed by {signal.Signals(info.si_status).name}"
            except ValueError:
                return f"killed by signal {info.si_status}"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def java_trace(exc: BaseException) -> str:
    """The Java stack trace (with its ``Caused by:`` chain) of a py4j error, else the error's text."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            from pyflink.java_gateway import get_gateway

            return str(get_gateway().jvm.org.apache.flink.util.ExceptionUtils.stringifyException(java))
        except Exception:  # noqa: BLE001, S110 - the plain text below
            pass
    return f"{type(exc).__name__}: {exc}"


def rest_address(job_client: Any) -> str | None:
    """The REST address of the MiniCluster running the job of ``job_client`` (a PyFlink JobClient), or None
    when its Java client is not Flink 1.20's MiniClusterJobClient."""
    try:
        j_client = job_client._j_job_client  # noqa: SLF001 - PyFlink keeps the Java client there
        field = j_client.getClass().getDeclaredField("miniCluster")
        field.setAccessible(True)
        uri = field.get(j_client).getRestAddress().get()
        return str(uri.toString()).rstrip("/")
    except Exception as exc:  # noqa: BLE001 - another Flink, another client: no restart lines
        log.debug("no MiniCluster REST address: %s", exc)
        return None
