"""Service.start on processes that die while starting: one silent death is retried, a logged one is not."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from riskctl.config import Settings, load_settings
from riskctl.errors import ServiceError
from riskctl.stack.process import exit_status, pid_alive, read_pid, spawn
from riskctl.stack.services import Service


class Scripted(Service):
    """Its n-th start runs the n-th Python snippet of ``scripts``; healthy once the file ``ready`` exists."""

    name = "scripted"
    folder = "scripted"

    def __init__(self, settings: Settings, scripts: list[str]) -> None:
        super().__init__(settings)
        self.scripts = scripts
        self.starts = 0
        with socket.socket() as sock:  # a port nothing listens on (the service itself listens on none)
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def log(self) -> Path:
        return self.dir / "scripted.log"

    @property
    def ready(self) -> Path:
        return self.dir / "ready"

    def healthy(self) -> bool:
        pid = read_pid(self.pid_files[0])
        return self.ready.exists() and pid is not None and pid_alive(pid)

    def _start(self) -> None:
        code = self.scripts[self.starts].replace("READY", repr(str(self.ready)))
        self.starts += 1
        spawn([sys.executable, "-c", code], log=self.log, pid_file=self.pid_files[0])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)})


SERVE = "import pathlib, time; pathlib.Path(READY).touch(); time.sleep(60)"


def test_two_silent_deaths_give_up_with_the_exit_status(settings: Settings) -> None:
    svc = Scripted(settings, ["import os; os._exit(3)", "import os; os._exit(4)", SERVE])
    with pytest.raises(ServiceError) as err:
        svc.start(timeout=20)
    text = str(err.value)
    assert "exited while starting" in text and "exit code 4" in text and "twice" in text, text
    assert svc.starts == 2 and svc.pids() == []


def test_a_death_that_logs_its_reason_is_not_retried(settings: Settings) -> None:
    svc = Scripted(settings, ["import sys; print('lock taken'); sys.exit(5)", SERVE])
    with pytest.raises(ServiceError) as err:
        svc.start(timeout=20)
    text = str(err.value)
    assert "exit code 5" in text and "lock taken" in text, text
    assert svc.starts == 1


class TwoParts(Scripted):
    """A main process that logs and serves, beside a second one (a TaskManager beside its JobManager) that
    runs the n-th snippet, each with its own log."""

    @property
    def pid_files(self) -> list[Path]:
        return [self.dir / "main.pid", self.dir / "part.pid"]

    @property
    def logs(self) -> list[Path]:
        return [self.log, self.dir / "part.log"]

    def healthy(self) -> bool:
        pids = [read_pid(f) for f in self.pid_files]
        return self.ready.exists() and all(p is not None and pid_alive(p) for p in pids)

    def _start(self) -> None:
        main = "import time; print('main started', flush=True); time.sleep(60)"
        spawn([sys.executable, "-c", main], log=self.log, pid_file=self.pid_files[0])
        code = self.scripts[self.starts].replace("READY", repr(str(self.ready)))
        self.starts += 1
        spawn([sys.executable, "-c", code], log=self.logs[1], pid_file=self.pid_files[1])


@pytest.mark.parametrize(
    "kind",
    [Scripted, TwoParts],
    ids=["a silent death", "a part that dies silently though the main log grew"],
)
def test_a_silent_death_at_start_is_retried_once(settings: Settings, kind: type[Scripted]) -> None:
    svc = kind(settings, ["import os; os._exit(3)", SERVE])
    try:
        assert svc.start(timeout=20) is True
        assert svc.starts == 2 and svc.healthy()
    finally:
        svc.stop()


def test_exit_status_of_children() -> None:
    done = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    killed = subprocess.Popen([sys.executable, "-c", suicide])
    for proc in (done, killed):
        while pid_alive(proc.pid):
            pass
    assert exit_status(done.pid) == "exit code 7"
    assert exit_status(killed.pid) == "killed by SIGKILL"
    assert exit_status(done.pid) is None  # reaped already: nothing more to tell


def test_the_stack_s_password_file_is_never_readable_by_others(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was written with the umask's mode (here 666) and chmod-ed to 600 after: readable by every local user
    in between. Now it is created with mode 600; its password is read back, and kept on the next call."""
    import os
    import stat

    from riskctl.stack.services import MariaDB

    monkeypatch.delenv("RISKCTL_MYSQL_PASSWORD", raising=False)
    db = MariaDB(settings)
    modes: list[int] = []
    real_chmod = Path.chmod

    def chmod(self: Path, mode: int, **kwargs: object) -> None:
        modes.append(stat.S_IMODE(self.stat().st_mode))  # what it was until then
        real_chmod(self, mode)

    monkeypatch.setattr(Path, "chmod", chmod)
    old = os.umask(0)
    try:
        first = db.password()
    finally:
        os.umask(old)
    assert all(m == 0o600 for m in modes), [oct(m) for m in modes]
    assert stat.S_IMODE(db.password_file.stat().st_mode) == 0o600
    assert len(first) >= 20 and db.password() == first
