"""riskctl.flink.watch: the root cause of a Java trace, the exception history, the rate-limited restart lines,
the refusal that cannot heal, and the watch loop over a scripted job."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from py4j.protocol import Py4JNetworkError

from riskctl.flink import watch as watch_module
from riskctl.flink.watch import (
    FAILED,
    Failure,
    MiniClusterJob,
    RestartReporter,
    cannot_heal,
    failures,
    root_cause,
    task_of,
    watch,
)

FRAMES = (
    "\n\tat org.apache.flink.runtime.taskmanager.Task.run(Task.java:575)"
    "\n\tat java.base/java.lang.Thread.run(Thread.java:840)"
)

# as the MiniCluster's exception history holds it (2026-12-05, a refusal of RiskFunction.open())
PEMJA = (
    "pemja.core.PythonException: <class 'RuntimeError'>: something broke\n"
    "\tat /tmp/pkg/riskctl/flink/risk_function.open(risk_function.py:350)\n"
    "\tat pemja.core.PythonInterpreter.invokeMethodNoArgs(Native Method)" + FRAMES
)

# a job's end when the strategy gives up, as the JobClient's result future fails (trimmed)
GAVE_UP = (
    "java.util.concurrent.ExecutionException: org.apache.flink.runtime.client.JobExecutionException: Job "
    "execution failed." + FRAMES + "\nCaused by: org.apache.flink.runtime.client.JobExecutionException: Job "
    "execution failed." + FRAMES + "\n\t... 12 more\nCaused by: org.apache.flink.runtime.JobException: "
    "Recovery is suppressed by ExponentialDelayRestartBackoffTimeStrategy(initialBackoffMS=1000, "
    "attemptsBeforeResetBackoff=2, currentRestartAttempt=3)" + FRAMES + "\nCaused by: java.io.IOException: "
    'Cannot run program "/nonexistent/py": error=2, No such file or directory' + FRAMES + "\nCaused by: "
    "java.io.IOException: error=2, No such file or directory" + FRAMES + "\n\t... 20 more"
)


def test_a_python_exception_reads_as_python_class_and_message() -> None:
    assert root_cause(PEMJA) == "RuntimeError: something broke"


def test_the_deepest_cause_unless_its_parent_says_the_same_with_more_words() -> None:
    assert root_cause(GAVE_UP) == (
        'java.io.IOException: Cannot run program "/nonexistent/py": error=2, No such file or directory'
    )
    wrapped = (
        "java.lang.RuntimeException: org.apache.kafka.common.errors.TimeoutException: no broker"
        + FRAMES
        + "\nCaused by: org.apache.kafka.common.errors.TimeoutException: no broker"
        + FRAMES
    )
    # a wrapper whose message is its cause's toString() adds nothing: the cause itself
    assert root_cause(wrapped) == "org.apache.kafka.common.errors.TimeoutException: no broker"


def test_a_message_of_several_lines_is_one_line_and_suppressed_blocks_are_not_causes() -> None:
    trace = (
        "pemja.core.PythonException: <class 'ValueError'>: bad value\nsecond line\n  third"
        + FRAMES
        + "\n\tSuppressed: java.lang.IllegalStateException: closing\n\t\tat x.y(Z.java:1)"
    )
    assert root_cause(trace) == "ValueError: bad value second line third"


def test_a_long_cause_is_cut_and_no_text_says_so() -> None:
    long = root_cause("java.lang.IllegalStateException: " + "x" * 1000, limit=80)
    assert len(long) == 80
    assert long.startswith("java.lang.IllegalStateException: xxx")
    assert long.endswith("…")
    assert root_cause("") == "(no exception text)"
    assert root_cause("java.lang.NullPointerException" + FRAMES) == "java.lang.NullPointerException"


def test_task_of_names_the_first_operator() -> None:
    name = "decide -> *anonymous_datastream_source$2*[6] -> (Calc[7] -> sink[8]: Writer) (1/2) - execution #3"
    assert task_of(name) == "decide"
    assert task_of("Source: riskctl_file_ticks[4] (1/1) - execution #0") == "Source: riskctl_file_ticks[4]"
    assert task_of(None) is None


def _entry(ts: int, trace: str = PEMJA, task: str | None = "decide (1/1) - execution #1") -> dict[str, Any]:
    return {"exceptionName": trace.split(":")[0], "stacktrace": trace, "timestamp": ts, "taskName": task}


def _doc(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"root-exception": None, "exceptionHistory": {"entries": list(entries), "truncated": False}}


def test_failures_of_the_history_newer_than_the_last_seen_oldest_first() -> None:
    doc = _doc(_entry(300), _entry(200, task=None), _entry(100))  # the REST API's order: newest first
    assert [f.timestamp_ms for f in failures(doc)] == [100, 200, 300]
    assert failures(doc, after_ms=200) == [Failure(300, "RuntimeError: something broke", "decide")]
    assert failures(doc)[1].describe() == "RuntimeError: something broke"
    assert failures({"exceptionHistory": None}) == []
    assert failures({}) == []


def test_restart_lines_are_rate_limited_with_the_failures_folded_in() -> None:
    r = RestartReporter(interval_s=10)
    a = Failure(1, "RuntimeError: a", "decide")
    b = Failure(2, "RuntimeError: b")
    assert r.failed(a, now=0) == "riskctl job failed (failure 1), restarting: RuntimeError: a (in decide)"
    assert r.failed(a, now=1) is None
    assert r.failed(a, now=2) is None
    assert r.due(now=9.9) is None
    assert r.due(now=10) == (
        "riskctl job failed (failures 2-3, 2 in the last 10 s), restarting: RuntimeError: a (in decide)"
    )
    assert r.due(now=30) is None  # nothing new
    assert r.failed(a, now=31) == "riskctl job failed (failure 4), restarting: RuntimeError: a (in decide)"
    assert r.failed(a, now=32) is None
    assert r.failed(b, now=33) is None
    # causes differ: the line says which one it shows
    assert (
        r.due(now=41)
        == "riskctl job failed (failures 5-6, 2 in the last 10 s), restarting: latest: RuntimeError: b"
    )
    assert r.failures == 6


def test_the_code_refusal_of_risk_function_cannot_heal() -> None:
    from riskctl.flink.risk_function import RiskFunction

    fn = RiskFunction(lateness_ms=0, state_ttl_ms=60_000, rules_wait_ms=0)
    fn.code = "0123456789abcdef"  # built with other sources than this interpreter imported
    with pytest.raises(RuntimeError) as refused:
        fn.open(None)  # type: ignore[arg-type]
    trace = f"pemja.core.PythonException: <class 'RuntimeError'>: {refused.value}" + FRAMES
    assert cannot_heal(root_cause(trace))
    assert not cannot_heal(root_cause(PEMJA))
    assert not cannot_heal(
        "java.io.IOException: this TaskManager's Python runs riskctl x, built with riskctl y"
    )


class ScriptedJob:
    """A job whose exception history and end follow a script, one step per poll."""

    def __init__(self, steps: list[tuple[Mapping[str, Any] | None, str | None]]) -> None:
        self.steps = steps
        self.polls = 0
        self.cancelled = False

    def exceptions(self) -> Mapping[str, Any] | None:
        return self.steps[min(self.polls, len(self.steps) - 1)][0]

    def outcome(self) -> str | None:
        end = self.steps[min(self.polls, len(self.steps) - 1)][1]
        self.polls += 1
        return end

    def cancel(self) -> None:
        self.cancelled = True


def _watch(job: ScriptedJob) -> tuple[int, list[str]]:
    now = [0.0]
    out = io.StringIO()

    def sleep(s: float) -> None:
        now[0] += s

    code = watch(job, out, interval_s=10, poll_s=1, clock=lambda: now[0], sleep=sleep, log_dir="/logs/1")
    return code, out.getvalue().splitlines()


def test_watch_reports_each_restart_then_the_cause_of_the_end() -> None:
    io_error = 'java.io.IOException: Cannot run program "/nonexistent/py": error=2, No such file or directory'
    job = ScriptedJob(
        [
            (_doc(), None),
            (_doc(_entry(100, io_error + FRAMES)), None),
            (_doc(_entry(100, io_error + FRAMES)), None),
            (None, None),  # the REST endpoint did not answer this time
            (_doc(_entry(200, io_error + FRAMES), _entry(100, io_error + FRAMES)), None),
            *[(_doc(_entry(200, io_error + FRAMES), _entry(100, io_error + FRAMES)), None)] * 10,
            (None, GAVE_UP),
        ]
    )
    code, lines = _watch(job)
    assert code == FAILED
    assert lines == [
        f"riskctl job failed (failure 1), restarting: {io_error} (in decide)",
        f"riskctl job failed (failure 2), restarting: {io_error} (in decide)",  # folded, then due 10 s later
        "error: the job failed and the restart strategy gave up (job.restart_*): "
        f"{io_error} (Flink's log: /logs/1)",
    ]
    assert not job.cancelled


def test_watch_ends_with_0_when_the_job_ends_without_an_error() -> None:
    assert _watch(ScriptedJob([(_doc(), None), (None, "")])) == (0, [])


def test_run_tells_the_minicluster_s_rest_address_once_the_job_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The address is Flink's free port of the moment: it is how a user (or a test) reaches the running job's
    REST API without choosing a port that something else may take first."""
    monkeypatch.setattr(watch_module, "rest_address", lambda client: "http://127.0.0.1:41701")
    monkeypatch.setattr(watch_module, "_gateway_pid", lambda: None)
    monkeypatch.setattr(watch_module, "watch", lambda job, out, log_dir=None: 0)
    client = SimpleNamespace(get_job_id=lambda: "j1", get_job_execution_result=lambda: None)
    caplog.set_level(logging.WARNING, logger="riskctl.job")
    assert watch_module.run(lambda: client, io.StringIO()) == 0
    told = [r.getMessage() for r in caplog.records if r.name == "riskctl.job"]
    assert told == ["riskctl job j1 running; the MiniCluster's REST API at http://127.0.0.1:41701"]


def test_a_failure_that_cannot_heal_cancels_the_job_at_once() -> None:
    refusal = (
        "pemja.core.PythonException: <class 'RuntimeError'>: this TaskManager's Python runs riskctl aaaa "
        "(imported when its JVM first ran Python), the job was built with riskctl bbbb: a TaskManager ..."
    )
    job = ScriptedJob([(_doc(), None), (_doc(_entry(100, refusal + FRAMES)), None)])
    code, lines = _watch(job)
    assert code == FAILED
    assert job.cancelled
    assert len(lines) == 1
    assert lines[0].startswith("error: the job cannot run in this process: RuntimeError: this TaskManager's")
    assert lines[0].endswith("run 'riskctl run' again")


def test_a_failure_seen_with_the_end_is_not_reported_as_a_restart() -> None:
    job = ScriptedJob([(_doc(), None), (_doc(_entry(100)), GAVE_UP)])
    code, lines = _watch(job)
    assert code == FAILED
    assert [line.split(":")[0] for line in lines] == ["error"]


def test_restarts_the_job_went_through_before_the_first_look_are_told_at_its_end() -> None:
    """A fast failure loop can end between two looks (in CI the REST endpoint's first answer was slow): the
    history read with the end holds its restarts, all but the newest entry (the end itself)."""
    job = ScriptedJob([(_doc(_entry(300), _entry(200), _entry(100)), GAVE_UP)])
    code, lines = _watch(job)
    assert code == FAILED
    assert lines[:2] == [
        "riskctl job failed (failure 1), restarting: RuntimeError: something broke (in decide)",
        "riskctl job failed (failure 2), restarting: RuntimeError: something broke (in decide)",
    ]
    assert lines[2].startswith("error: the job failed and the restart strategy gave up")
    assert len(lines) == 3


def test_a_failure_between_the_last_look_and_the_end_gets_its_own_line() -> None:
    """The last look at the history can race the end: the job restarts (200) and fails (300) after the
    history was read and before its end is seen. The history is read once more after the end."""
    job = ScriptedJob(
        [
            (_doc(_entry(100)), None),
            (_doc(_entry(100)), GAVE_UP),  # read before the end: 200 and 300 not in it yet
            (_doc(_entry(300), _entry(200), _entry(100)), GAVE_UP),  # the read after the end
        ]
    )
    code, lines = _watch(job)
    assert code == FAILED
    assert [line.split(" restarting")[0] for line in lines[:2]] == [
        "riskctl job failed (failure 1),",
        "riskctl job failed (failure 2),",  # 100 is not told twice, 300 is the end's
    ]
    assert lines[2].startswith("error: the job failed and the restart strategy gave up")
    assert len(lines) == 3


def test_a_job_ending_without_an_error_still_tells_its_last_restarts() -> None:
    job = ScriptedJob([(_doc(), None), (_doc(), ""), (_doc(_entry(100)), "")])
    assert _watch(job) == (
        0,
        ["riskctl job failed (failure 1), restarting: RuntimeError: something broke (in decide)"],
    )


# A stand-in for the JVM: a process that accepts py4j's connection, reads its command, and then kills itself
# (``die``) or closes the connection without an answer (``mute``), as a JVM killed or not answering.
_FAKE_JVM = """
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.recv(1000)
    if sys.argv[1] == "die":
        os.kill(os.getpid(), 9)
    c.close()
"""


@pytest.fixture
def fake_jvm(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[str], tuple[MiniClusterJob, int]]]:
    """A MiniClusterJob whose result is a py4j object of a fake JVM (``die`` or ``mute``), and its pid;
    py4j's records are in ``caplog``."""
    from py4j.java_gateway import GatewayParameters, JavaGateway, JavaObject

    caplog.set_level(logging.DEBUG)
    made: list[tuple[subprocess.Popen[str], JavaGateway, JavaObject]] = []

    def make(how: str) -> tuple[MiniClusterJob, int]:
        jvm = subprocess.Popen([sys.executable, "-c", _FAKE_JVM, how], stdout=subprocess.PIPE, text=True)
        assert jvm.stdout is not None
        gateway = JavaGateway(gateway_parameters=GatewayParameters(port=int(jvm.stdout.readline())))
        result = JavaObject("o1", gateway._gateway_client)
        made.append((jvm, gateway, result))
        client = SimpleNamespace(get_job_id=lambda: "j1", get_job_execution_result=lambda: result)
        return MiniClusterJob(client, jvm_pid=jvm.pid), jvm.pid

    yield make
    for jvm, gateway, result in made:
        jvm.kill()
        jvm.wait()
        # py4j releases a Java object from a weakref callback, at a GC that can come amid a later import:
        # CPython 3.11 then failed in pytest's assertion rewriting ("AST constructor recursion depth
        # mismatch"). Released here instead.
        gateway.detach(result)
    for name in watch_module._PY4J_LOGGERS:  # the silence after a JVM's end is for the process's life
        logging.getLogger(name or None).removeFilter(watch_module._SILENCED)


def test_a_killed_jvm_is_one_error_line_and_py4j_logs_no_traceback(
    fake_jvm: Callable[[str], tuple[MiniClusterJob, int]], caplog: pytest.LogCaptureFixture
) -> None:
    job, pid = fake_jvm("die")
    out = io.StringIO()
    assert watch(job, out, sleep=lambda s: None) == FAILED
    assert out.getvalue().splitlines() == [
        f"error: the job's JVM (pid {pid}) ended unexpectedly (killed by SIGKILL): the job and its "
        "MiniCluster are gone"
    ]
    with pytest.raises(Py4JNetworkError):  # as py4j's release of its objects at exit: it cannot connect
        job.result.isDone()
    assert [r.getMessage() for r in caplog.records if watch_module._is_py4j(r)] == []


def test_a_jvm_that_runs_but_does_not_answer_keeps_py4j_records(
    fake_jvm: Callable[[str], tuple[MiniClusterJob, int]], caplog: pytest.LogCaptureFixture
) -> None:
    job, _ = fake_jvm("mute")
    end = job.outcome()
    assert end is not None
    assert end.startswith("the MiniCluster's JVM does not answer: Py4JError: An error occurred while calling")
    told = [r for r in caplog.records if r.getMessage() == "Exception while sending command."]
    assert told
    assert told[0].exc_info


def test_the_job_s_own_failure_is_told_without_waiting_for_the_jvm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that failed makes its result raise py4j's Py4JJavaError: the JVM answered, so its end is not
    waited for (jvm_end polls up to 1 s: every FAILED end was told a second late)."""

    class JavaError(Exception):
        java_exception = object()  # as py4j's Py4JJavaError

    def fail() -> None:
        raise JavaError("java.lang.IllegalStateException: the job failed")

    looked: list[int] = []
    monkeypatch.setattr(watch_module, "jvm_end", lambda pid, wait_s=1.0: looked.append(pid))
    monkeypatch.setattr(watch_module, "java_trace", str)  # not PyFlink's gateway: it would start a JVM
    result = SimpleNamespace(done=lambda: True, result=fail)
    client = SimpleNamespace(get_job_id=lambda: "j1", get_job_execution_result=lambda: result)
    end = MiniClusterJob(client, jvm_pid=1).outcome()
    assert end is not None and "the job failed" in end
    assert looked == []


def test_a_jvm_killed_while_the_job_is_submitted_is_the_same_one_line(
    fake_jvm: Callable[[str], tuple[MiniClusterJob, int]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGKILL during env.execute_async (the job's submission, before the watch) printed py4j's tracebacks
    and a Python one of 'An error occurred while calling o87.executeAsync' (found by the real test)."""
    job, pid = fake_jvm("die")
    monkeypatch.setattr(watch_module, "_gateway_pid", lambda: pid)
    out = io.StringIO()
    assert watch_module.run(job.result.executeAsync, out, log_dir="/logs/1") == FAILED
    assert out.getvalue().splitlines() == [
        f"error: the job's JVM (pid {pid}) ended unexpectedly (killed by SIGKILL): the job and its "
        "MiniCluster are gone (Flink's log: /logs/1)"
    ]
    assert [r.getMessage() for r in caplog.records if watch_module._is_py4j(r)] == []


def test_a_call_that_swallows_the_jvm_s_end_still_tells_it(
    fake_jvm: Callable[[str], tuple[MiniClusterJob, int]], caplog: pytest.LogCaptureFixture
) -> None:
    """rest_address catches py4j's errors: a SIGKILL while MiniClusterJob read the REST address returned
    normally, and py4j's tracebacks of it were logged (the real test failed 1 run in 10)."""
    job, pid = fake_jvm("die")

    def swallowed() -> None:
        try:
            job.result.getRestAddress()
        except Exception:  # noqa: BLE001, S110 - as rest_address
            pass

    with pytest.raises(watch_module.JvmEnded, match=f"pid {pid}"):
        watch_module.call_jvm(pid, swallowed)
    assert [r.getMessage() for r in caplog.records if watch_module._is_py4j(r)] == []
