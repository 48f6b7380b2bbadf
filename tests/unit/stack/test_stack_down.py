"""What `riskctl stack down` and `status` make of a service that did not stop on SIGTERM, and of one that lost
its pid file. Real processes stand in for the services: a small Python program listening on the service's
port, with the words of its command line and the owner mark in its environment as the stack's own have."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from riskctl.config import load_settings
from riskctl.errors import ServiceError
from riskctl.stack.process import ALIVE, ENDED, KILLED, pid_alive, start_time
from riskctl.stack.services import OWNER_ENV, Kafka, MariaDB, Orphan, Stopped, StopReport
from tests.helpers import run_riskctl

#: listens on 127.0.0.1:argv[1] (or on nothing: 0); argv[2] "ignore-term" ignores SIGTERM; then sleeps
LISTEN = """
import signal, socket, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if int(sys.argv[1]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
print("ready", flush=True)
time.sleep(120)
"""


@contextmanager
def service_like(
    port: int,
    *words: str,
    env: Mapping[str, str] | None = None,
    term: str = "term",
    python: str = sys.executable,
    user: int | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """A process listening on ``port`` in a session of its own (as the stack spawns), ``words`` on its command
    line. A thread reaps it as soon as it ends, as init reaps a service whose `stack up` has exited: a zombie
    child of the test would otherwise count as still running."""
    proc = subprocess.Popen(
        [python, "-c", LISTEN, str(port), term, *words],
        stdout=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
        start_new_session=True,
        user=user,
    )
    reaper = threading.Thread(target=proc.wait, daemon=True)
    reaper.start()
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        reaper.join(10)


def _ended(proc: subprocess.Popen[str]) -> int | None:
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        return None


# -- a service that ignores SIGTERM --------------------------------------------------------------------------
def test_down_says_that_it_killed_a_service_that_ignored_sigterm(stack_env: dict[str, str]) -> None:
    """`stack down` said "stopped" of a broker it had to SIGKILL after 20 s: the user did not know that it
    had been killed (MariaDB and Kafka recover at their next start, which takes longer and may need a
    look)."""
    kafka = Kafka(load_settings(env=stack_env))
    kafka.dir.mkdir(parents=True)
    mark = {**os.environ, OWNER_ENV: kafka.owner}
    with service_like(0, "kafka.Kafka", env=mark, term="ignore-term") as proc:
        kafka.pid_files[0].write_text(str(proc.pid))
        assert kafka.pids() == [proc.pid]
        res = run_riskctl("stack", "down", "--timeout", "1", env={**os.environ, **stack_env})
        assert res.returncode == 0, res.stderr
        assert _ended(proc) == -signal.SIGKILL
    assert res.stdout.splitlines() == [
        "flink    was not running",
        "mariadb  was not running",
        f"kafka    killed after 1 s (did not stop on SIGTERM); it may need recovery at its next start "
        f"(see {kafka.log})",
    ]
    assert not kafka.pid_files[0].exists()


def test_a_service_that_stops_on_sigterm_is_stopped_and_the_json_says_how(stack_env: dict[str, str]) -> None:
    kafka = Kafka(load_settings(env=stack_env))
    kafka.dir.mkdir(parents=True)
    mark = {**os.environ, OWNER_ENV: kafka.owner}
    with service_like(0, "kafka.Kafka", env=mark) as proc:
        kafka.pid_files[0].write_text(str(proc.pid))
        res = run_riskctl("stack", "down", "--json", env={**os.environ, **stack_env})
        assert res.returncode == 0, res.stderr
        assert _ended(proc) == -signal.SIGTERM
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["kafka"] == {
        "name": "kafka",
        "stopped": True,
        "killed": [],
        "still_running": [],
        "pid_file_lost": [],
        "detail": "stopped",
    }
    assert rows["mariadb"]["stopped"] is False and rows["mariadb"]["detail"] == "was not running"


def test_the_stop_line_names_the_parts_of_a_service_of_several_processes() -> None:
    orphan = Orphan(30, 18081, 1)
    report = StopReport(
        "flink",
        "/s/flink/log/jobmanager.out",
        20.0,
        [
            Stopped(30, "", ENDED, orphan),
            Stopped(31, "taskmanager", ENDED),
            Stopped(32, "taskmanager-2", KILLED),
        ],
    )
    assert report.summary() == (
        "stopped: pid 30 (on port 18081, its pid file lost), taskmanager (pid 31); "
        "killed after 20 s (did not stop on SIGTERM): taskmanager-2 (pid 32); "
        "it may need recovery at its next start (see /s/flink/log/jobmanager.out)"
    )
    stuck = StopReport("kafka", "/s/kafka/kafka.log", 0.5, [Stopped(40, "kafka", ALIVE)])
    assert stuck.summary() == (
        "NOT stopped, still running after SIGKILL; its pid file is kept, retry 'riskctl stack down'"
    )
    assert stuck.to_dict()["still_running"] == [40]


# -- a service that lost its pid file ------------------------------------------------------------------------
def test_a_service_without_its_pid_file_is_this_stacks_and_down_stops_it(stack_env: dict[str, str]) -> None:
    """The stack folder removed (or the pid file) while the broker ran: the broker was shown as "foreign", as
    if another program held the port, `stack down` left it running and `stack up` failed on the port. Its
    owner mark names this stack's folder: it is shown as this stack's, and stopped."""
    kafka = Kafka(load_settings(env=stack_env))
    port = kafka.stack.kafka_port
    mark = {**os.environ, OWNER_ENV: kafka.owner}
    env = {**os.environ, **stack_env}
    with service_like(port, "kafka.Kafka", env=mark) as proc:
        assert not kafka.dir.exists()  # no pid file, no folder even
        st = kafka.status()
        assert (st.state, st.pid) == ("orphaned", proc.pid)
        assert (
            st.detail
            == f"its pid file is lost (this stack's process on port {port}); 'riskctl stack down' stops it"
        )
        res = run_riskctl("stack", "status", "--json", env=env)
        assert res.returncode == 3, res.stderr  # not running as the stack runs it
        row = json.loads(res.stdout)[0]
        assert (row["name"], row["state"], row["pid"]) == ("kafka", "orphaned", proc.pid)
        with pytest.raises(
            ServiceError, match=f"held by this stack's kafka \\(pid {proc.pid}\\), whose pid file"
        ):
            kafka.start(timeout=5)
        res = run_riskctl("stack", "down", env=env)
        assert res.returncode == 0, res.stderr
        assert (
            f"kafka    stopped: pid {proc.pid} (on port {port}, its pid file lost)" in res.stdout.splitlines()
        )
        assert _ended(proc) == -signal.SIGTERM
    assert kafka.status().state == "stopped"


def test_a_stale_pid_file_beside_the_service_running_without_it(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The pid file names a pid now reused by another program, and the broker runs unrecorded: the program is
    left alone, the broker is stopped."""
    kafka = Kafka(load_settings(env=stack_env))
    kafka.dir.mkdir(parents=True)
    mark = {**os.environ, OWNER_ENV: kafka.owner}
    with (
        service_like(0, "some-other-program") as stranger,
        service_like(kafka.stack.kafka_port, "kafka.Kafka", env=mark) as broker,
    ):
        kafka.pid_files[0].write_text(str(stranger.pid))
        st = kafka.status()
        assert (st.state, st.pid) == ("orphaned", broker.pid)
        report = kafka.shut_down(timeout=5)
        assert [(p.pid, p.outcome) for p in report.processes] == [(broker.pid, ENDED)]
        assert _ended(broker) is not None  # reaped by the stop itself (this process is its parent)
        assert pid_alive(stranger.pid)
        assert not kafka.pid_files[0].exists()


@pytest.mark.parametrize(
    "case",
    [
        "another stack's mark",
        "the mark of a folder beside",
        "the mark of another service of this stack",
        "no mark",
        "the mark but not the service's program",
    ],
)
def test_a_process_on_the_port_that_is_not_this_stacks_service_stays_foreign(
    stack_env: dict[str, str], tmp_path: Path, case: str
) -> None:
    """Never taken for ours, never stopped: a same-named service of another stack (the shared one, a test's),
    one started before the mark existed, or a program that inherited a service's environment (the Python
    driver of a job that the JobManager runs)."""
    kafka = Kafka(load_settings(env=stack_env))
    marks = {
        "another stack's mark": Kafka(
            load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path / "other")})
        ).owner,
        "the mark of a folder beside": kafka.owner + "2",
        "the mark of another service of this stack": MariaDB(load_settings(env=stack_env)).owner,
        "no mark": None,
        "the mark but not the service's program": kafka.owner,
    }
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    mark = marks[case]
    if mark is not None:
        env[OWNER_ENV] = mark
    words = "python-driver" if case == "the mark but not the service's program" else "kafka.Kafka"
    with service_like(kafka.stack.kafka_port, words, env=env) as proc:
        st = kafka.status()
        assert (st.state, st.pid) == ("foreign", None)
        assert kafka.stop() is False
        with pytest.raises(ServiceError, match="is already in use by pid"):
            kafka.start(timeout=5)
        assert proc.poll() is None and pid_alive(proc.pid)


def test_a_process_of_another_user_is_never_this_stacks(stack_env: dict[str, str]) -> None:
    """Another user's process with this stack's mark and words, on the port or named by a stale pid file: not
    ours. Run as root, `stack down` stopped one named by a pid file; as another user it failed on it (EPERM).
    (Run by another user its environment cannot be read at all: foreign too.)"""
    if os.getuid() != 0:
        pytest.skip("starting a process of another user needs root")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 for the user nobody")
    kafka = Kafka(load_settings(env=stack_env))
    kafka.dir.mkdir(parents=True)
    mark = {"PATH": "/usr/bin:/bin", OWNER_ENV: kafka.owner}
    with service_like(kafka.stack.kafka_port, "kafka.Kafka", env=mark, python=python, user=65534) as proc:
        assert f"{OWNER_ENV}={kafka.owner}".encode() in Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert kafka.status().state == "foreign"
        kafka.pid_files[0].write_text(str(proc.pid))
        assert kafka.pids() == []
        assert kafka.status().state == "foreign"
        assert kafka.stop() is False
        assert proc.poll() is None


def test_a_process_found_once_is_not_stopped_when_its_pid_is_another_process_by_then(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the look at the port and the signal, the process may end and its pid be reused: the stack
    signals it only if it is the very process it found (same start time), still marked as its own."""
    kafka = Kafka(load_settings(env=stack_env))
    mark = {**os.environ, OWNER_ENV: kafka.owner}
    with service_like(kafka.stack.kafka_port, "kafka.Kafka", env=mark) as proc:
        started = start_time(proc.pid)
        assert started is not None
        assert kafka.orphans() == [Orphan(proc.pid, kafka.stack.kafka_port, started)]
        # the process found had started at another time: it is another one now
        monkeypatch.setattr(kafka, "orphans", lambda: [Orphan(proc.pid, kafka.stack.kafka_port, started - 1)])
        assert kafka.stop() is False
        assert proc.poll() is None
