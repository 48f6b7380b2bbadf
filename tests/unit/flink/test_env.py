"""The Flink configuration every riskctl job gets from :func:`riskctl.flink.env.create_env` (the JVM gateway
starts for pyflink's Configuration; no job runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from riskctl.flink import env as flink_env

JARS = (
    "flink-connector-kafka-3.4.0-1.20.jar",
    "kafka-clients-3.4.0.jar",
    "flink-sql-connector-mysql-cdc-3.5.0.jar",
    "mysql-connector-j-8.4.0.jar",
)


class _Env:
    """What create_env calls on the environment, recorded."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.calls: dict[str, Any] = {}

    def add_jars(self, *urls: str) -> None:
        self.calls["jars"] = urls

    def set_parallelism(self, p: int) -> None:
        self.calls["parallelism"] = p

    def set_buffer_timeout(self, ms: int) -> None:
        self.calls["buffer_timeout"] = ms

    def get_config(self) -> Any:
        return self

    def set_auto_watermark_interval(self, ms: int) -> None:
        self.calls["watermark_interval"] = ms

    def enable_checkpointing(self, interval: int, mode: Any) -> None:
        self.calls["checkpointing"] = (interval, mode)


@pytest.fixture
def created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in JARS:
        (tmp_path / name).write_bytes(b"")

    def make(**options: str) -> _Env:
        monkeypatch.setattr(
            flink_env.StreamExecutionEnvironment, "get_execution_environment", staticmethod(_Env)
        )
        env = flink_env.create_env(flink_env.EnvOptions(jars_dir=str(tmp_path), options=options))
        assert isinstance(env, _Env)
        return env

    return make


def test_small_memtables_and_network_buffers_for_short_checkpoint_pauses(created: Any) -> None:
    conf = created().config
    assert conf.get_string("state.backend.rocksdb.writebuffer.size", "") == "4mb"
    assert conf.get_string("taskmanager.memory.segment-size", "") == "4kb"
    assert conf.get_string("python.execution-mode", "") == "thread"
    assert conf.get_string("restart-strategy.type", "") == "exponential-delay"


def test_the_operators_options_win(created: Any) -> None:
    conf = created(**{"state.backend.rocksdb.writebuffer.size": "64mb"}).config
    assert conf.get_string("state.backend.rocksdb.writebuffer.size", "") == "64mb"
