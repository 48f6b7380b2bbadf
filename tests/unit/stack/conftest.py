"""Fixtures of the stack tests: a stack of the test's own, which never touches the shared one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import free_port

PORT_SETTINGS = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "MYSQL_PORT", "FLINK_REST_PORT", "FLINK_RPC_PORT")


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    """The RISKCTL_STACK_* variables of a stack of this test's own: its folder under ``tmp_path`` and a free
    port for every service, so that status, up and down never see the shared stack's processes."""
    env = {"RISKCTL_STACK_DIR": str(tmp_path)}
    for name in PORT_SETTINGS:
        env[f"RISKCTL_STACK_{name}"] = str(free_port())
    return env
