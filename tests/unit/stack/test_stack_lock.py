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

from riskctl.config import Settings, load_settings
from riskctl.errors import ServiceError
from riskctl.stack.process import LockTimeout, locked, pid_alive, read_pid, spawn
from riskctl.stack.services import Service
from tests.helpers import free_port

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
