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
  JobClient's ``miniCluster`` field (Flink 1.20's MiniClusterJobClient; without it, only the end is reported).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

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
    where = f" (Flink's log: {log_dir})" if log_dir else ""
    while True:
        doc = job.exceptions()
        end = job.outcome()  # after the history: a failure seen before the job ended is not its last
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


class MiniClusterJob:
    """A job of ``env.execute_async()`` on the embedded MiniCluster, for :func:`watch`."""

    def __init__(self, job_client: Any) -> None:
        self.client = job_client
        self.job_id = str(job_client.get_job_id())
        self.result = job_client.get_job_execution_result()
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
            if not self.result.done():
                return None
        except Exception as exc:  # noqa: BLE001 - py4j's: the JVM (the MiniCluster, the job) is gone
            return f"the MiniCluster's JVM does not answer: {type(exc).__name__}: {exc}"
        try:
            self.result.result()
        except Exception as exc:  # noqa: BLE001 - py4j's error for the job's own: its text is the cause
            return java_trace(exc)
        return ""

    def cancel(self) -> None:
        try:
            self.client.cancel().result()
        except Exception as exc:  # noqa: BLE001 - ended meanwhile: nothing left to cancel
            log.debug("cancel: %s", exc)


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
