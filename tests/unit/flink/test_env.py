"""The Flink configuration every riskctl job gets from :func:`riskctl.flink.env.create_env` (the JVM gateway
starts for pyflink's Configuration; no job runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from riskctl.errors import ConfigError
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
def created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes_environ: None) -> Any:
    """create_env with a stand-in environment; create_env sets the JVM's variables in os.environ."""
    for name in JARS:
        (tmp_path / name).write_bytes(b"")

    def make(working_dir: str | None = None, **options: str) -> _Env:
        monkeypatch.setattr(
            flink_env.StreamExecutionEnvironment, "get_execution_environment", staticmethod(_Env)
        )
        opts = flink_env.EnvOptions(jars_dir=str(tmp_path), options=options, working_dir=working_dir)
        env = flink_env.create_env(opts)
        assert isinstance(env, _Env)
        return env

    return make


def test_memtables_and_network_buffers_for_short_checkpoint_pauses(created: Any) -> None:
    conf = created().config
    assert conf.get_string("state.backend.rocksdb.writebuffer.size", "") == "16mb"
    assert conf.get_string("state.backend.rocksdb.use-bloom-filter", "") == "true"
    # level 0 (what a checkpoint's memtable flush writes) uncompressed, snappy below
    per_level = conf.get_string("state.backend.rocksdb.compression.per.level", "")
    assert per_level == "NO_COMPRESSION;SNAPPY_COMPRESSION"
    assert conf.get_string("taskmanager.memory.segment-size", "") == "4kb"
    assert conf.get_string("python.execution-mode", "") == "thread"
    assert conf.get_string("restart-strategy.type", "") == "exponential-delay"


def test_chained_operators_pass_records_on_without_copying_them(created: Any) -> None:
    """Object reuse: each decision reached its Kafka writer through a field-by-field copy
    (RowDataSerializer.copy); no operator of the job's chains keeps a record after it returns."""
    assert created().config.get_string("pipeline.object-reuse", "") == "true"
    off = created(**{"pipeline.object-reuse": "false"}).config
    assert off.get_string("pipeline.object-reuse", "") == "false"  # the operator's options win


def test_the_operators_options_win(created: Any) -> None:
    conf = created(**{"state.backend.rocksdb.writebuffer.size": "64mb"}).config
    assert conf.get_string("state.backend.rocksdb.writebuffer.size", "") == "64mb"


def test_the_minicluster_works_in_the_folder_it_is_given(created: Any, tmp_path: Path) -> None:
    work = tmp_path / "minicluster" / "123"
    conf = created(working_dir=str(work)).config
    assert conf.get_string("process.working-dir", "") == str(work)
    # RocksDB right under it: its LOG files are named after the instance's path, and must stay under 255 bytes
    assert conf.get_string("state.backend.rocksdb.localdir", "") == str(work / "rocksdb")
    assert created().config.get_string("process.working-dir", "") == ""
    assert created().config.get_string("state.backend.rocksdb.localdir", "") == ""


def test_only_a_minicluster_this_process_starts_gets_the_working_folder(tmp_path: Path) -> None:
    """Under flink run the job's configuration reaches the cluster's TaskManagers: no client folder."""
    mine = flink_env.minicluster_working_dir(tmp_path, {})
    assert mine == str(tmp_path / "minicluster" / str(os.getpid()))
    assert flink_env.minicluster_working_dir(tmp_path, {"PYFLINK_GATEWAY_PORT": "40000"}) is None


def test_a_job_entry_point_prepares_both_folders_of_its_minicluster_or_none(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    pid = str(os.getpid())
    assert flink_env.prepare_minicluster(tmp_path, environ) == str(tmp_path / "minicluster" / pid)
    assert environ["FLINK_LOG_DIR"] == str(tmp_path / "minicluster-logs" / pid)
    under_flink_run = {"PYFLINK_GATEWAY_PORT": "40000"}
    assert flink_env.prepare_minicluster(tmp_path, under_flink_run) is None
    assert under_flink_run == {"PYFLINK_GATEWAY_PORT": "40000"}


def test_a_run_removes_the_working_folders_that_stopped_runs_left(tmp_path: Path) -> None:
    """A job stopped by a signal leaves its MiniCluster's folder (50 MB and more); the next run removes the
    folders of processes that no longer run, and only those."""
    import subprocess

    gone = subprocess.Popen(["true"])  # noqa: S607
    gone.wait()
    alive = subprocess.Popen(["sleep", "30"])  # noqa: S607
    try:
        for name in (str(gone.pid), str(alive.pid), str(os.getpid()), "notes"):
            (tmp_path / name / "minicluster_x").mkdir(parents=True)
        mine = flink_env.local_working_dir(tmp_path)
        assert mine == tmp_path / str(os.getpid())
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([str(alive.pid), str(os.getpid()), "notes"])
    finally:
        alive.kill()
        alive.wait()
    flink_env.local_working_dir(tmp_path)
    assert not (tmp_path / str(alive.pid)).exists()
    assert flink_env.local_working_dir(tmp_path / "absent") == tmp_path / "absent" / str(os.getpid())


def test_a_run_keeps_the_logs_of_the_last_stopped_runs_only(tmp_path: Path) -> None:
    """The MiniCluster's logs stay after its process ends (a crashed run's are what one reads), but only the
    newest ``keep`` of stopped processes: a running process's folder is never touched."""
    import subprocess

    alive = subprocess.Popen(["sleep", "30"])  # noqa: S607
    gone = []
    for _ in range(4):
        p = subprocess.Popen(["true"])  # noqa: S607
        p.wait()
        gone.append(p.pid)
    try:
        for age, name in enumerate([str(alive.pid), *map(str, gone), "notes"]):
            (tmp_path / name).mkdir()
            (tmp_path / name / "flink-root-python-host.log").write_text("x")
            os.utime(tmp_path / name, (1_000_000 - age * 100, 1_000_000 - age * 100))  # later names are older
        mine = flink_env.local_log_dir(tmp_path, keep=2)
        assert mine == tmp_path / str(os.getpid())
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([str(alive.pid), str(gone[0]), str(gone[1]), "notes"])  # the 2 newest stopped
    finally:
        alive.kill()
        alive.wait()
    flink_env.local_log_dir(tmp_path, keep=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    assert flink_env.local_log_dir(tmp_path / "absent") == tmp_path / "absent" / str(os.getpid())


def test_the_jvm_starts_without_its_event_log_after_pyflinks_own_options(
    created: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLINK_ENV_JAVA_OPTS", raising=False)
    created()
    opts = os.environ["FLINK_ENV_JAVA_OPTS"].split()
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in opts  # PyFlink's conf, which Java 17 needs
    assert opts[-2:] == ["-XX:+UnlockDiagnosticVMOptions", "-XX:-LogEvents"]
    # options the user set are kept, ours added once
    assert (
        flink_env.jvm_options({"FLINK_ENV_JAVA_OPTS": "-Xss2m"})
        == "-Xss2m -XX:+UnlockDiagnosticVMOptions -XX:-LogEvents"
    )
    again = flink_env.jvm_options({"FLINK_ENV_JAVA_OPTS": " ".join(opts)})
    assert again.split() == opts


def test_the_minicluster_logs_to_the_stack_unless_told_otherwise(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    flink_env.set_minicluster_log_dir(tmp_path, environ)
    assert environ == {"FLINK_LOG_DIR": str(tmp_path / "minicluster-logs" / str(os.getpid()))}
    mine = {"FLINK_LOG_DIR": "/var/log/flink"}  # the user's
    flink_env.set_minicluster_log_dir(tmp_path, mine)
    assert mine == {"FLINK_LOG_DIR": "/var/log/flink"}
    under_flink_run = {"PYFLINK_GATEWAY_PORT": "40001"}  # the CLI's JVM runs already
    flink_env.set_minicluster_log_dir(tmp_path, under_flink_run)
    assert under_flink_run == {"PYFLINK_GATEWAY_PORT": "40001"}


@pytest.mark.parametrize("interval", [1, 9])
def test_a_checkpoint_interval_flink_refuses_is_a_config_error(
    tmp_path: Path, interval: int, changes_environ: None
) -> None:
    # the real environment: Flink's enable_checkpointing raised IllegalArgumentException (a Py4JJavaError and
    # a traceback from 'riskctl run --set job.checkpoint_interval_ms=5'). create_env sets PYTHONPATH and
    # FLINK_ENV_JAVA_OPTS, and the JVM's start FLINK_HOME and its folders; all restored after the test. They
    # were set to "" before when absent: run first (alone), the test then started a JVM without the module
    # flags Java 17 needs, and failed
    for name in JARS:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(
        ConfigError, match=f"job.checkpoint_interval_ms must be 0 .* at least 10 .* got {interval}$"
    ):
        flink_env.create_env(flink_env.EnvOptions(jars_dir=str(tmp_path), checkpoint_interval_ms=interval))
    env = flink_env.create_env(flink_env.EnvOptions(jars_dir=str(tmp_path), checkpoint_interval_ms=10))
    assert env.get_checkpoint_config().get_checkpoint_interval() == 10


def test_a_state_ttl_beyond_a_java_long_is_the_longest_flink_takes() -> None:
    # job.state_ttl_ms and job.state_ttl_margin_ms may each be up to 2**63 - 1: their sum reached Flink as is
    # (OverflowError in the decide operator's open(), a restart loop; tests/integration/test_job.py)
    longest = 2**63 - 1
    assert flink_env.ttl_config(longest + 86_400_000).get_ttl().to_milliseconds() == longest
    assert flink_env.ttl_config(2 * longest)._to_proto().ttl == longest  # a Java long (int64)
    assert flink_env.ttl_config(86_400_000).get_ttl().to_milliseconds() == 86_400_000


def test_the_minicluster_listens_on_this_machine_only(created: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its REST endpoint (cancels jobs) and BLOB server (the job's artifacts) bound every interface."""
    monkeypatch.delenv("PYFLINK_GATEWAY_PORT", raising=False)
    conf = created().config
    assert conf.get_string("rest.bind-address", "") == "127.0.0.1"
    assert conf.get_string("jobmanager.bind-host", "") == "127.0.0.1"
    assert created(**{"rest.bind-address": "0.0.0.0"}).config.get_string("rest.bind-address", "") == "0.0.0.0"
    monkeypatch.setenv("PYFLINK_GATEWAY_PORT", "1")  # under flink run: the keys would be the client's
    conf = created().config
    assert (
        conf.get_string("rest.bind-address", "") == "" and conf.get_string("jobmanager.bind-host", "") == ""
    )
