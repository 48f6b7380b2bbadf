"""Recovery settings: the job's exponential-delay restarts, the local cluster's heartbeats, and the extra
TaskManagers the fault suite and tests start and kill (issue 11 item 6)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from riskctl.config import load_settings
from riskctl.errors import ConfigError, ServiceError
from riskctl.flink.env import RestartOptions
from riskctl.flink.main import restart_options
from riskctl.stack.process import pid_alive
from riskctl.stack.services import TASKMANAGER_MAIN, FlinkCluster

PREFIX = "restart-strategy.exponential-delay."


def test_default_restarts_are_exponential_without_an_attempt_cap(tmp_path: Path) -> None:
    conf = restart_options(load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)})).flink_config()
    assert conf == {
        "restart-strategy.type": "exponential-delay",
        PREFIX + "initial-backoff": "1000 ms",
        PREFIX + "max-backoff": "30000 ms",
        PREFIX + "backoff-multiplier": "2.0",
        PREFIX + "reset-backoff-threshold": "20000 ms",
        PREFIX + "jitter-factor": "0.1",
    }  # no attempts-before-reset-backoff: Flink's default is no cap


def test_restart_settings_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "RISKCTL_STACK_DIR": str(tmp_path),
        "RISKCTL_JOB_RESTART_INITIAL_BACKOFF_MS": "500",
        "RISKCTL_JOB_RESTART_MAX_BACKOFF_MS": "8000",
        "RISKCTL_JOB_RESTART_BACKOFF_MULTIPLIER": "1.5",
        "RISKCTL_JOB_RESTART_JITTER_FACTOR": "0",
        "RISKCTL_JOB_RESTART_MAX_ATTEMPTS": "20",
    }
    conf = restart_options(load_settings(env=env)).flink_config()
    assert conf[PREFIX + "initial-backoff"] == "500 ms"
    assert conf[PREFIX + "max-backoff"] == "8000 ms"
    assert conf[PREFIX + "backoff-multiplier"] == "1.5"
    assert conf[PREFIX + "jitter-factor"] == "0.0"
    assert conf[PREFIX + "attempts-before-reset-backoff"] == "20"


def test_a_multiplier_that_is_not_a_number_names_the_variable(tmp_path: Path) -> None:
    env = {"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_JOB_RESTART_BACKOFF_MULTIPLIER": "twice"}
    with pytest.raises(ConfigError, match="RISKCTL_JOB_RESTART_BACKOFF_MULTIPLIER must be a number"):
        load_settings(env=env)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("initial_backoff_ms", 0, "initial backoff must be >= 1 ms"),
        ("max_backoff_ms", 10, "max backoff 10 ms is below the initial 1000 ms"),
        ("backoff_multiplier", 0.5, "backoff multiplier must be >= 1"),
        ("backoff_multiplier", float("nan"), "backoff multiplier must be >= 1"),
        ("reset_backoff_threshold_ms", 0, "reset backoff threshold must be >= 1 ms"),
        ("jitter_factor", 1.5, "jitter factor must be within [0, 1]"),
        ("max_attempts", -1, "max attempts must be >= 0"),
    ],
)
def test_bad_restart_options_are_refused_with_the_reason(field: str, value: float, reason: str) -> None:
    with pytest.raises(ConfigError, match=r"job\.restart_\*: .*" + re.escape(reason)):
        RestartOptions(**{field: value})  # type: ignore[arg-type]


def test_local_cluster_notices_a_dead_taskmanager_in_seconds(tmp_path: Path) -> None:
    settings = load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)})
    cluster = FlinkCluster(settings)
    heartbeat = yaml.safe_load(cluster._config_yaml(cluster._pyflink_dir()))["heartbeat"]
    assert heartbeat == {"interval": 500, "timeout": 10000, "rpc-failure-threshold": 2}
    # detection of a killed process: interval x threshold
    assert heartbeat["interval"] * heartbeat["rpc-failure-threshold"] <= 5000
    conf = yaml.safe_load(cluster._config_yaml(cluster._pyflink_dir()))
    assert conf["cluster"] == {"evenly-spread-out-slots": True}
    assert conf["taskmanager"]["memory"]["segment-size"] == "4kb"  # fewer records ahead of a barrier

    env = {
        "RISKCTL_STACK_DIR": str(tmp_path),
        "RISKCTL_STACK_FLINK_HEARTBEAT_INTERVAL_MS": "2000",
        "RISKCTL_STACK_FLINK_HEARTBEAT_TIMEOUT_MS": "30000",
        "RISKCTL_STACK_FLINK_HEARTBEAT_RPC_FAILURE_THRESHOLD": "-1",
    }
    cluster = FlinkCluster(load_settings(env=env))
    heartbeat = yaml.safe_load(cluster._config_yaml(cluster._pyflink_dir()))["heartbeat"]
    assert heartbeat == {"interval": 2000, "timeout": 30000, "rpc-failure-threshold": -1}


def test_the_operators_cluster_keys_win_over_riskctls_own(tmp_path: Path) -> None:
    env = {
        "RISKCTL_STACK_DIR": str(tmp_path),
        "RISKCTL_STACK_FLINK_CONFIG": "heartbeat.interval=700; taskmanager.memory.segment-size=8kb",
    }
    cluster = FlinkCluster(load_settings(env=env))
    conf = yaml.safe_load(cluster._config_yaml(cluster._pyflink_dir()))
    assert conf["heartbeat.interval"] == "700" and "interval" not in conf["heartbeat"]
    assert conf["heartbeat"]["timeout"] == 10000  # the keys not given are riskctl's
    assert conf["taskmanager.memory.segment-size"] == "8kb"
    with pytest.raises(ConfigError, match="flink_config"):
        load_settings(env={**env, "RISKCTL_STACK_FLINK_CONFIG": "heartbeat.interval"})


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[FlinkCluster]:
    """A FlinkCluster whose JobManager is a sleeping process and whose taskmanager.sh sleeps too."""
    settings = load_settings(
        env={"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_STACK_FLINK_TASKMANAGERS": "2"}
    )
    cluster = FlinkCluster(settings)
    (cluster.home / "bin").mkdir(parents=True)
    # named like the real JVMs: the stack takes a pid file's process for its own only by its command line
    (cluster.home / "bin" / "taskmanager.sh").write_text("exec -a TaskManagerRunner sleep 60\n")
    jm = subprocess.Popen(
        ["bash", "-c", "exec -a StandaloneSessionClusterEntrypoint sleep 60"], start_new_session=True
    )
    (cluster.dir / "jobmanager.pid").write_text(str(jm.pid))
    yield cluster
    cluster.stop()
    jm.kill()
    jm.wait()


def test_an_extra_taskmanager_gets_its_own_pid_file_and_dies_by_kill(fake_cluster: FlinkCluster) -> None:
    cluster = fake_cluster
    pid = cluster.start_taskmanager()
    # above the two TaskManagers of the setting, so it never takes the pid file of one of them
    assert cluster.taskmanager_pids() == {cluster.dir / "taskmanager-3.pid": pid}
    assert cluster.dir / "taskmanager-3.pid" in cluster.pid_files  # `stack down` stops it
    second = cluster.start_taskmanager()
    assert (cluster.dir / "taskmanager-4.pid").read_text() == str(second)
    cluster.kill_taskmanager(pid)
    assert not pid_alive(pid)
    assert not (cluster.dir / "taskmanager-3.pid").exists()
    assert list(cluster.taskmanager_pids().values()) == [second]


def test_kill_refuses_a_process_that_is_not_one_of_its_taskmanagers(fake_cluster: FlinkCluster) -> None:
    with pytest.raises(ServiceError, match=f"pid {os.getpid()} is not a running TaskManager of this stack"):
        fake_cluster.kill_taskmanager(os.getpid())


def test_an_extra_taskmanager_needs_a_running_cluster(tmp_path: Path) -> None:
    cluster = FlinkCluster(load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)}))
    with pytest.raises(ServiceError, match="the Flink cluster is not running"):
        cluster.start_taskmanager()


def _cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` once it has exec'd into the TaskManager's main class (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        argv = [a for a in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0") if a]
        if TASKMANAGER_MAIN in argv or time.monotonic() > deadline:
            return argv
        time.sleep(0.02)


def test_a_replacement_starts_from_the_command_line_of_a_running_taskmanager(
    fake_cluster: FlinkCluster, tmp_path: Path
) -> None:
    """Flink's start script runs three JVMs before the TaskManager's: a replacement skips them by reusing
    the JVM command line, environment and folder of one that runs (here a Python process dressed as one)."""
    cluster = fake_cluster
    workdir = tmp_path / "tm-cwd"
    workdir.mkdir()
    argv = [
        sys.executable,
        "-c",
        "import time; time.sleep(60)",
        f"-Dlog.file={cluster.dir / 'log' / 'flink--taskexecutor-0-host.log'}",
        "-classpath",
        "lib/*",
        TASKMANAGER_MAIN,
        "--configDir",
        str(cluster.home / "conf"),
    ]
    env = {**os.environ, "RISKCTL_TM_MARK": "from-the-running-one"}
    running = subprocess.Popen(argv, cwd=workdir, env=env, start_new_session=True)
    try:
        _cmdline(running.pid)  # exec'd: what a TaskManager long running shows
        (cluster.dir / "taskmanager.pid").write_text(str(running.pid))
        pid = cluster.start_taskmanager()
        proc = Path("/proc") / str(pid)
        got = _cmdline(pid)
        expected_log = f"-Dlog.file={cluster.dir / 'log' / 'flink--taskexecutor-r3-'}"
        assert [a for a in got if not a.startswith("-Dlog.file=")] == [
            a for a in argv if not a.startswith("-Dlog.file=")
        ]
        assert any(a.startswith(expected_log) for a in got), got  # a log file of its own
        assert b"RISKCTL_TM_MARK=from-the-running-one" in (proc / "environ").read_bytes()
        assert (proc / "cwd").resolve() == workdir.resolve()
        assert cluster.taskmanager_pids()[cluster.dir / "taskmanager-3.pid"] == pid
    finally:
        running.kill()
        running.wait()


def test_status_names_the_parts_that_died(fake_cluster: FlinkCluster) -> None:
    """TaskManagers gone while the JobManager runs: the status said 'unhealthy' (or 'running', while the
    JobManager still counted them) with nothing of what had died."""
    st = fake_cluster.status()
    assert st.state == "unhealthy" and st.pid == int((fake_cluster.dir / "jobmanager.pid").read_text())
    assert st.detail == "taskmanager, taskmanager-2 not running; 'riskctl stack up --flink' restarts it"
    pid = fake_cluster.start_taskmanager()  # a third one, alive: not named
    assert pid in fake_cluster.taskmanager_pids().values()
    assert fake_cluster.status().detail.startswith("taskmanager, taskmanager-2 not running")
