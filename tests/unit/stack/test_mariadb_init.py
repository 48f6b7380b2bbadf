"""MariaDB's datadir is created by mariadb-install-db (faked here): an init that did not finish leaves nothing
that breaks the next start."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest

from riskctl.config import load_settings
from riskctl.errors import ServiceError
from riskctl.stack import process, services
from riskctl.stack.process import pid_alive
from riskctl.stack.services import MariaDB
from tests.helpers import free_port, within

# like the real one: on a datadir holding an empty ibdata1 of an init that was interrupted, it fails
INSTALL_DB = """#!/bin/sh
for a; do case $a in --datadir=*) d=${a#--datadir=};; esac; done
if [ -e "$d/ibdata1" ]; then echo "[ERROR] InnoDB: File ./ib_logfile0 was not found"; exit 1; fi
mkdir -p "$d/mysql" && : >"$d/ibdata1" && : >"$d/ib_logfile0"
"""
MARIADBD = "#!/bin/sh\nexit 0\n"  # a server that stops at once: _start() returns without a bootstrap


@pytest.fixture
def mariadb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MariaDB:
    bins = tmp_path / "bin"
    bins.mkdir()
    for name, text in (("mariadb-install-db", INSTALL_DB), ("mariadbd", MARIADBD)):
        (bins / name).write_text(text)
        (bins / name).chmod((bins / name).stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(MariaDB, "binary", staticmethod(lambda name: str(bins / name)))
    env = {"RISKCTL_STACK_DIR": str(tmp_path / "stack"), "RISKCTL_STACK_MYSQL_PORT": str(free_port())}
    return MariaDB(load_settings(env=env))


def test_an_interrupted_init_is_done_again_from_scratch(mariadb: MariaDB) -> None:
    # what an init killed half-way (a crash, Ctrl-C, a full disk) left: files, no mysql/
    mariadb.datadir.mkdir(parents=True)
    (mariadb.datadir / "ibdata1").write_bytes(b"")
    (mariadb.datadir / "aria_log.00000001").write_bytes(b"\0" * 100)
    init_dir = mariadb.datadir.with_name("data.init")
    init_dir.mkdir()
    (init_dir / "ibdata1").write_bytes(b"")  # and an interrupted init of this very code
    mariadb._start()
    assert (mariadb.datadir / "mysql").is_dir()
    assert not (mariadb.datadir / "aria_log.00000001").exists()
    assert not init_dir.exists()


def test_a_datadir_that_holds_databases_is_kept(mariadb: MariaDB) -> None:
    (mariadb.datadir / "mysql").mkdir(parents=True)
    (mariadb.datadir / "riskctl").mkdir()
    mariadb._start()
    assert (mariadb.datadir / "riskctl").is_dir()


# the real one runs a server that, on a full disk, waits for free space for ever
HANGING_INSTALL_DB = """#!/bin/sh
sleep 300 &
echo $! >"$(dirname "$0")/child.pid"
echo "[Warning] Disk is full writing './aria_log.00000001' (Errcode: 28). Waiting for someone to free space"
sleep 300
"""


def test_an_init_that_hangs_on_a_full_disk_is_stopped_and_says_so(
    mariadb: MariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin" / "mariadb-install-db").write_text(HANGING_INSTALL_DB)
    monkeypatch.setattr(services, "INSTALL_DB_TIMEOUT", 1.0)
    monkeypatch.setattr(process.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 3 << 20))
    with pytest.raises(ServiceError) as err:
        within(mariadb._start, seconds=30)
    text = str(err.value)
    assert "mariadb-install-db did not finish in 1 s" in text, text
    assert f"Only 3 MB are free on the disk of {mariadb.dir}: free some space and retry" in text
    assert "Waiting for someone to free space" in text  # its last words
    child = int((tmp_path / "bin" / "child.pid").read_text())
    assert not pid_alive(child)  # its whole process group is gone, not only the script


def test_a_failed_start_on_a_nearly_full_disk_says_so(
    mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 3 << 20))
    (mariadb.datadir / "mysql").mkdir(parents=True)
    with pytest.raises(ServiceError) as err:
        mariadb.start(timeout=5)  # the fake server exits at once
    assert "exited while starting" in str(err.value)
    assert "Only 3 MB are free on the disk of" in str(err.value)


def test_a_file_that_cannot_be_written_is_an_error_not_a_traceback(
    mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(MariaDB, "_install_db", full)
    monkeypatch.setattr(process.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(ServiceError) as err:
        mariadb.start(timeout=5)
    assert str(err.value).startswith("mariadb: [Errno 28] No space left on device. Only 0 MB are free")


def test_a_ctrl_c_during_the_init_stops_it_too(tmp_path: Path) -> None:
    """mariadb-install-db runs in a session of its own (to be stopped whole): a Ctrl-C, which reaches only
    riskctl's process group, must stop it as well, or it goes on writing the datadir the next start clears."""
    script = tmp_path / "init.sh"
    child = f"sleep 300 &\necho $! >{tmp_path}/child.pid\n"
    text = f"#!/bin/sh\n{child}sleep 0.3\nkill -INT {os.getpid()}\nsleep 300\n"
    script.write_text(text)
    script.chmod(0o755)
    # Python turns SIGINT into KeyboardInterrupt only if it was not ignored when it started, and a shell
    # starts background jobs with SIGINT ignored (CI may run the suite so): the test sets the handler itself
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            process.run_bounded([str(script)], log=tmp_path / "init.log", timeout=60)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not pid_alive(int((tmp_path / "child.pid").read_text()))
