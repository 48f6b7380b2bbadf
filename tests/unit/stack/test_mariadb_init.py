"""MariaDB's datadir is created by mariadb-install-db (faked here): an init that did not finish leaves nothing
that breaks the next start."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from riskctl.config import load_settings
from riskctl.stack.services import MariaDB
from tests.helpers import free_port

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
