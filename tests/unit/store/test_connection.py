"""riskctl.store.connection.connect: the session settings each connection starts with (pymysql is replaced
by a recorder of what it is asked)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pymysql
import pytest

from riskctl.store.connection import connect

_SETTINGS: Any = SimpleNamespace(
    mysql_host="127.0.0.1",
    mysql_port=3306,
    mysql_password="x",
    mysql=SimpleNamespace(user="riskctl", database="riskctl"),
)


def _init_command(monkeypatch: pytest.MonkeyPatch, **options: Any) -> str:
    asked: dict[str, Any] = {}
    monkeypatch.setattr(pymysql, "connect", lambda **kw: asked.update(kw))
    connect(_SETTINGS, **options)
    return str(asked["init_command"])


def test_the_lock_wait_is_set_by_the_connections_init_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI and the console each ran their own 'SET SESSION innodb_lock_wait_timeout' after connecting;
    # pymysql runs init_command on every connect of the connection, a reconnect included.
    assert _init_command(monkeypatch, lock_wait_s=7) == (
        "SET time_zone = '+00:00', innodb_lock_wait_timeout = 7"
    )


def test_without_a_lock_wait_the_servers_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _init_command(monkeypatch) == "SET time_zone = '+00:00'"
