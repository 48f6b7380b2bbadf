"""Building a PyFlink execution environment the way every riskctl job needs it.

Thread mode (``python.execution-mode: thread``) runs Python inside the TaskManager JVM with pemja: about
20x the
throughput of process mode for keyed-state-heavy functions on this project's machines (see
docs/flink-stack.md). RocksDB with incremental checkpoints holds the keyed state. The connector jars are
shipped with the job (``pipeline.jars``, ``file://`` URLs only), so the same code runs on the embedded
MiniCluster and when submitted with ``flink run -py`` to a standalone cluster.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pyflink.common import Configuration
from pyflink.common.restart_strategy import RestartStrategies
from pyflink.common.time import Time
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
from pyflink.datastream.state import StateTtlConfig

from riskctl.errors import ConfigError
from riskctl.flink.pythonpath import python_path

REQUIRED_JARS = (
    "flink-connector-kafka-",
    "kafka-clients-",
    "flink-sql-connector-mysql-cdc-",
    "mysql-connector-j-",
)


@dataclass
class EnvOptions:
    jars_dir: str
    parallelism: int = 1
    checkpoint_interval_ms: int = 5000
    checkpoint_dir: str | None = None
    exactly_once_checkpoints: bool = True
    buffer_timeout_ms: int = 5
    restart_attempts: int = 3
    restart_delay_ms: int = 2000
    python_executable: str = sys.executable
    restore_from: str | None = None  # a retained checkpoint or savepoint to start from
    options: dict[str, str] = field(default_factory=dict)  # extra Flink configuration, applied last


def parse_options(text: str) -> dict[str, str]:
    """``"k=v;k2=v2"`` -> ``{"k": "v", "k2": "v2"}``; a pair without ``=`` is a ConfigError."""
    out: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            msg = f"flink.options takes key=value pairs separated by ';', got {pair.strip()!r}"
            raise ConfigError(msg)
        out[key.strip()] = value.strip()
    return out


def jar_urls(jars_dir: str) -> list[str]:
    """``file://`` URLs of every jar in ``jars_dir``; fails clearly when a required connector is missing."""
    folder = Path(jars_dir)
    jars = sorted(folder.glob("*.jar")) if folder.is_dir() else []
    names = [j.name for j in jars]
    missing = [prefix for prefix in REQUIRED_JARS if not any(n.startswith(prefix) for n in names)]
    if missing:
        msg = (
            f"connector jars missing from {folder} ({', '.join(p.rstrip('-') for p in missing)}): "
            "run scripts/setup, or set RISKCTL_FLINK_JARS_DIR"
        )
        raise ConfigError(msg)
    return [j.resolve().as_uri() for j in jars]


def create_env(opts: EnvOptions) -> StreamExecutionEnvironment:
    """A StreamExecutionEnvironment in thread mode, on RocksDB, with checkpoints and bounded restarts."""
    # must be set before the first JVM call: the MiniCluster's JVM inherits this process's environment
    os.environ["PYTHONPATH"] = python_path()
    config = Configuration()
    config.set_string("python.execution-mode", "thread")
    config.set_string("python.executable", opts.python_executable)
    config.set_string("python.client.executable", opts.python_executable)
    config.set_string("state.backend.type", "rocksdb")
    config.set_string("state.backend.incremental", "true")
    # Event-time timers on the heap, not in RocksDB: the engine registers timers for most events (pattern
    # deadlines, state clean-up); in RocksDB each one is a write to a column family whose memtables filled
    # faster than a busy 2-core box flushed them ("Stopping writes because we have 2 immutable memtables"),
    # which stalled the decide task, rule changes included, for up to 20 s (bench/flink_profile/README.md).
    config.set_string("state.backend.rocksdb.timer-service.factory", "HEAP")
    if opts.checkpoint_dir:
        config.set_string("state.checkpoints.dir", opts.checkpoint_dir)
    # keep the last checkpoint when the job is cancelled or killed, so it can be restored
    config.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    if opts.restore_from:
        config.set_string("execution.savepoint.path", opts.restore_from)
    for key, value in opts.options.items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.add_jars(*jar_urls(opts.jars_dir))
    env.set_parallelism(opts.parallelism)
    env.set_buffer_timeout(opts.buffer_timeout_ms)
    # periodic watermarks; an interval of 0 would mean event time never advances and no timer ever fires
    env.get_config().set_auto_watermark_interval(200)
    if opts.checkpoint_interval_ms > 0:
        mode = (
            CheckpointingMode.EXACTLY_ONCE
            if opts.exactly_once_checkpoints
            else CheckpointingMode.AT_LEAST_ONCE
        )
        env.enable_checkpointing(opts.checkpoint_interval_ms, mode)
    # With checkpointing on and no strategy set, a failing job restarts forever: bound it.
    env.set_restart_strategy(
        RestartStrategies.fixed_delay_restart(opts.restart_attempts, opts.restart_delay_ms)
    )
    return env


def ttl_config(ttl_ms: int) -> StateTtlConfig:
    """State TTL that also works on a standalone TaskManager.

    The default cleanup strategies build a RocksDB compaction-filter strategy with ``Duration.of_days(30)``,
    which needs a py4j gateway that a TaskManager does not have (FLINK-40628): set the strategy explicitly.
    """
    return (
        StateTtlConfig.new_builder(Time.milliseconds(ttl_ms))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .disable_cleanup_in_background()
        .cleanup_in_rocksdb_compact_filter(1000, periodic_compaction_time=Time.days(1))
        .build()
    )
