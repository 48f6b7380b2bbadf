"""Fixtures of the stack tests: a stack of the test's own, which never touches the shared one."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

PORT_SETTINGS = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "MYSQL_PORT", "FLINK_REST_PORT", "FLINK_RPC_PORT")


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; it is free again once the socket closes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    """The RISKCTL_STACK_* variables of a stack of this test's own: its folder under ``tmp_path`` and a free
    port for every service, so that status, up and down never see the shared stack's processes."""
    env = {"RISKCTL_STACK_DIR": str(tmp_path)}
    for name in PORT_SETTINGS:
        env[f"RISKCTL_STACK_{name}"] = str(free_port())
    return env
