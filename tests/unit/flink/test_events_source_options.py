"""The events source's Kafka options come from the job settings (the DDL of riskctl.flink.job._events)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import load_settings
from riskctl.core.door_limits import MAX_CLOCK_SKEW_MS
from riskctl.core.events import MAX_ID_LENGTH, MAX_TS
from riskctl.errors import ConfigError
from riskctl.flink.job import _events


class _Stop(Exception):
    """Raised by the fake table environment once the source's DDL has been declared."""


class FakeTableEnv:
    def __init__(self) -> None:
        self.ddl: list[str] = []
        self.queries: list[str] = []
        self.config: dict[str, str] = {}

    def get_config(self) -> Any:
        env = self

        class Config:
            def set(self, key: str, value: str) -> None:
                env.config[key] = value

        return Config()

    def execute_sql(self, sql: str) -> None:
        self.ddl.append(sql)

    def sql_query(self, sql: str) -> Any:
        self.queries.append(sql)
        raise _Stop


def _ddl(env: dict[str, str]) -> str:
    t_env = FakeTableEnv()
    with pytest.raises(_Stop):
        _events(t_env, load_settings(env=env))  # type: ignore[arg-type]
    (ddl,) = t_env.ddl
    return ddl


def test_the_events_source_fetches_as_the_settings_say(tmp_path: Path) -> None:
    base = {"RISKCTL_STACK_DIR": str(tmp_path)}
    ddl = _ddl(base)
    assert "'properties.fetch.max.wait.ms' = '20'" in ddl and "'properties.fetch.min.bytes' = '1'" in ddl
    ddl = _ddl(
        base | {"RISKCTL_JOB_SOURCE_FETCH_MIN_BYTES": "65536", "RISKCTL_JOB_SOURCE_FETCH_WAIT_MS": "5"}
    )
    assert "'properties.fetch.max.wait.ms' = '5'" in ddl and "'properties.fetch.min.bytes' = '65536'" in ddl
    for name, bad in (("MIN_BYTES", "0"), ("MIN_BYTES", "4294967296"), ("WAIT_MS", "0"), ("WAIT_MS", "soon")):
        with pytest.raises(ConfigError, match="source_fetch"):
            load_settings(env=base | {f"RISKCTL_JOB_SOURCE_FETCH_{name}": bad})


@pytest.fixture(scope="module")
def flink_sql() -> Any:
    """A real table environment (the JVM gateway starts; no job runs): Flink checks the DDL."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    return TableEnvironment.create(EnvironmentSettings.in_streaming_mode())


@pytest.mark.parametrize(
    ("lateness_ms", "interval"),
    [
        (0, "'0 00:00:00.000'"),
        (5000, "'0 00:00:05.000'"),
        (120_000, "'0 00:02:00.000'"),  # 100 s or more: "exceeds precision of SECOND(2) field"
        (90_061_001, "'1 01:01:01.001'"),
        (100 * 86_400_000 - 1, "'99 23:59:59.999'"),
    ],
)
def test_flink_takes_the_watermark_of_any_lateness_up_to_99_days(
    tmp_path: Path, flink_sql: Any, lateness_ms: int, interval: str
) -> None:
    ddl = _ddl({"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_JOB_LATENESS_MS": str(lateness_ms)})
    assert f"`rowtime` - INTERVAL {interval} DAY TO SECOND(3)" in ddl
    flink_sql.execute_sql(ddl.replace("riskctl_events", f"events_{lateness_ms}"))  # raised for 100 s and more


def test_a_lateness_beyond_99_days_is_a_config_error(tmp_path: Path) -> None:
    env = {"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_JOB_LATENESS_MS": str(100 * 86_400_000)}
    with pytest.raises(ConfigError, match=r"job\.lateness_ms must be at most 8639999999 "):
        _events(FakeTableEnv(), load_settings(env=env))  # type: ignore[arg-type]


def test_a_fetch_wait_the_kafka_client_cannot_take_is_a_config_error(tmp_path: Path) -> None:
    # fetch.max.wait.ms is an int for the Kafka client: 3,000,000,000 failed each reader's start
    # (ConfigException 'Not a number of type INT') and the job restarted forever, deciding nothing
    base = {"RISKCTL_STACK_DIR": str(tmp_path)}
    assert "'properties.fetch.max.wait.ms' = '2147483647'" in _ddl(
        base | {"RISKCTL_JOB_SOURCE_FETCH_WAIT_MS": "2147483647"}
    )
    env = base | {"RISKCTL_JOB_SOURCE_FETCH_WAIT_MS": "3000000000"}
    with pytest.raises(
        ConfigError, match=r"job\.source_fetch_wait_ms must be at most 2147483647, got 3000000000"
    ):
        _events(FakeTableEnv(), load_settings(env=env))  # type: ignore[arg-type]


def test_the_event_time_reads_ts_twice_and_its_skew_is_bounded(tmp_path: Path) -> None:
    """Each read of ``ts`` parses the record (the source thread's largest cost): the watermark's expression
    reads it twice, its test on a value clamped to [-1, MAX_TS + 1], which needs the skew bounded."""
    base = {"RISKCTL_STACK_DIR": str(tmp_path)}
    ddl = _ddl(base | {"RISKCTL_JOB_MAX_CLOCK_SKEW_MS": str(MAX_CLOCK_SKEW_MS)})
    assert ddl.count("'$.ts'") == 2
    ts = "TRY_CAST(JSON_VALUE(CAST(`raw` AS STRING), '$.ts') AS BIGINT)"
    assert f"GREATEST(LEAST({ts}, {MAX_TS + 1}), -1)" in ddl and f"THEN GREATEST({ts}, 0) ELSE 0 END" in ddl
    assert f"- {MAX_CLOCK_SKEW_MS}, 3) <= CURRENT_ROW_TIMESTAMP()" in ddl
    assert MAX_TS + 1 - MAX_CLOCK_SKEW_MS > int(time.time() * 1000) + 7_000 * 365 * 86_400_000  # to year 9899
    with pytest.raises(ConfigError, match="max_clock_skew_ms"):
        load_settings(env=base | {"RISKCTL_JOB_MAX_CLOCK_SKEW_MS": str(MAX_CLOCK_SKEW_MS + 1)})


def test_the_key_reads_user_id_once_and_cuts_it_one_past_the_limit(tmp_path: Path) -> None:
    """The key's expression parses the record once (it read user_id three times), keeps a valid id as it is
    (SUBSTRING counts code points, as MAX_ID_LENGTH does) and makes any other one short and well-formed."""
    t_env = FakeTableEnv()
    with pytest.raises(_Stop):
        _events(t_env, load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)}))  # type: ignore[arg-type]
    (query,) = t_env.queries
    assert query.count("JSON_VALUE") == 1 and "'$.user_id'" in query
    assert f"FROM 1 FOR {MAX_ID_LENGTH + 1})" in query and "DECODE(ENCODE(" in query and "COALESCE(" in query
