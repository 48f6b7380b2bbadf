"""Two processes starting (or stopping) the same service at once: the second waits for the first, then finds
the service running, instead of spawning it a second time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from riskctl.config import PROJECT_ROOT, Settings, load_settings
from riskctl.errors import ServiceError
from riskctl.stack.process import LockTimeout, describe_holder, locked, pid_alive, read_pid, spawn
from riskctl.stack.services import Kafka, Service
from tests.helpers import free_port, within

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"pid {os.getpid()}: the holder".encode(), 0)
print("held", flush=True)
time.sleep(60)
"""


class Slow(Service):
    """A service whose start takes a while before it spawns (as Kafka formats its storage first), and which
    counts its spawns in the file ``spawned``."""

    name = "slow"
    folder = "slow"

    def __init__(self, settings: Settings, port: int) -> None:
        super().__init__(settings)
        self.port = port

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def log(self) -> Path:
        return self.dir / "slow.log"

    def healthy(self) -> bool:
        pid = read_pid(self.pid_files[0])
        return (self.dir / "ready").exists() and pid is not None and pid_alive(pid)

    def _start(self) -> None:
        time.sleep(0.5)
        with (self.dir / "spawned").open("a") as f:
            f.write("x\n")
        code = f"import pathlib, time; pathlib.Path({str(self.dir / 'ready')!r}).touch(); time.sleep(60)"
        spawn([sys.executable, "-c", code], log=self.log, pid_file=self.pid_files[0])


def test_two_starts_at_once_spawn_the_service_once(tmp_path: Path) -> None:
    settings = load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)})
    port = free_port()
    first, second = Slow(settings, port), Slow(settings, port)
    results: list[bool] = []

    def up(svc: Slow) -> None:
        results.append(svc.start(timeout=20))

    threads = [threading.Thread(target=up, args=(svc,)) for svc in (first, second)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == [False, True]  # one started it, the other found it running
        assert (first.dir / "spawned").read_text() == "x\n"  # spawned once: no unrecorded twin
        assert first.pids() == second.pids() and len(first.pids()) == 1
    finally:
        first.stop()
    assert not first.pids()


def test_a_held_lock_names_its_holder_after_the_timeout(tmp_path: Path) -> None:
    settings = load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)})
    svc = Slow(settings, free_port())
    svc.dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(svc.lock_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(LockTimeout) as timeout:
            with locked(svc.lock_file, timeout=0.3):
                pass
        assert timeout.value.holder == f"pid {holder.pid}: the holder"
        with pytest.raises(ServiceError) as err:
            with svc._locked("'riskctl stack down'", timeout=0.3):
                pass
        text = str(err.value)
        assert f"another process (pid {holder.pid}: the holder) is still starting or stopping it" in text
        assert "retry 'riskctl stack down'" in text
        # a holder killed with -9 leaves no stale lock behind
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        with locked(svc.lock_file, timeout=5):
            assert f"pid {os.getpid()}:" in svc.lock_file.read_text()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_reentrant_in_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with locked(path, timeout=1):
        with locked(path, timeout=1):  # start() stops what it started when it fails
            pass
        got: list[str] = []

        def other() -> None:
            try:
                with locked(path, timeout=0.3):
                    got.append("taken")
            except LockTimeout:
                got.append("waited")

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert got == ["waited"]  # another thread waits like another process


#: holds the lock given as argv[1] and writes argv[2] ("PID": its pid) into it, until a line on its stdin
HOLD_UNTIL_TOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, sys.argv[2].replace("PID", str(os.getpid())).encode(), 0)
print("held", flush=True)
sys.stdin.readline()
"""


def _holder(lock_file: Path, line: str) -> subprocess.Popen[str]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_UNTIL_TOLD, str(lock_file), line],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _release(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None and holder.stdin is not None:
        holder.stdin.write("go\n")
        holder.stdin.close()
    holder.wait(10)


def test_down_waiting_for_another_commands_lock_says_so_once(stack_env: dict[str, str]) -> None:
    """`riskctl stack down` behind a `stack up` that holds a service's lock waited up to 5 minutes without a
    word: a hang, to whoever ran it. It now says, once, what it waits for, who holds it and for how long."""
    kafka = Kafka(load_settings(env=stack_env))
    holder = _holder(
        kafka.lock_file, "pid PID: /opt/x/.venv/bin/python /opt/x/.venv/bin/riskctl stack up --flink"
    )
    down = subprocess.Popen(
        [sys.executable, "-m", "riskctl.cli.main", "stack", "down"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **stack_env},
        cwd=PROJECT_ROOT,
    )
    try:
        assert down.stdout is not None
        seen: list[str] = []

        def until_waiting() -> None:
            while not seen or "waiting" not in seen[-1]:
                line = down.stdout.readline()  # type: ignore[union-attr]
                assert line, f"down ended or said nothing of the wait: {seen}"
                seen.append(line.rstrip("\n"))

        within(until_waiting, seconds=60)
        who = f"pid {holder.pid} (riskctl stack up --flink)"
        assert seen[-1] == f"kafka    waiting up to 300 s: {who} is starting or stopping it"
        _release(holder)
        out, err = down.communicate(timeout=60)
        assert down.returncode == 0, err
        assert out.splitlines() == ["kafka    was not running"]  # said once; then what it did
        assert "waiting" not in err
    finally:
        _release(holder)
        if down.poll() is None:
            down.kill()
            down.wait()


def test_up_waiting_for_the_lock_says_so_and_a_free_lock_says_nothing(tmp_path: Path) -> None:
    settings = load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)})
    svc = Slow(settings, free_port())
    holder = _holder(svc.lock_file, "pid PID: the holder")
    told: list[str] = []

    def waiting(text: str) -> None:
        told.append(text)
        _release(holder)  # the holder lets go once the waiting command has said that it waits

    svc.on_wait = waiting
    try:
        assert svc.start(timeout=20) is True
        # up waits for twice its timeout and a minute
        assert told == [f"waiting up to 100 s: pid {holder.pid} (the holder) is starting or stopping it"]
        told.clear()
        svc.stop()  # the lock is free: no word of a wait
        assert svc.start(timeout=20) is True
        assert told == []
    finally:
        _release(holder)
        svc.stop()


def test_a_holder_that_has_not_written_its_line_is_told_as_unknown_after_a_moment(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = _holder(lock, "")  # a line not written (yet): the waiting one does not name a stale holder
    told: list[str] = []
    try:
        with pytest.raises(LockTimeout):
            with locked(lock, timeout=1.5, interval=0.05, on_wait=told.append):
                pass
        assert told == [""]
        assert describe_holder("") == "another process"
    finally:
        _release(holder)
    # a holder that let go leaves no line behind: the next one to wait does not name a process long gone
    with locked(lock, timeout=1):
        pass
    assert lock.read_text() == ""


def test_the_holders_line_is_told_short() -> None:
    assert describe_holder("pid 12: /a/.venv/bin/python -m riskctl.cli.main stack down") == (
        "pid 12 (riskctl stack down)"
    )
    assert (
        describe_holder("pid 12: /a/.venv/bin/python /a/.venv/bin/riskctl stack up")
        == "pid 12 (riskctl stack up)"
    )
    assert describe_holder("pid 12: pytest tests/unit") == "pid 12 (pytest tests/unit)"
    assert describe_holder("pid 12: ") == "pid 12"
    assert describe_holder("garbage") == "another process"
