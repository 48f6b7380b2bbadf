"""The stack's behaviour that needs no running service: port conflicts, status of a stopped stack."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from riskctl.config import load_settings
from riskctl.errors import ServiceError
from riskctl.stack.process import cmdline, kernel_thread, wait_until
from riskctl.stack.services import OWNER_ENV, Kafka, MariaDB
from tests.helpers import run_riskctl, within


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_port_in_use_names_service_port_and_log(tmp_path: Path, busy_port: int) -> None:
    settings = load_settings(
        env={"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_STACK_MYSQL_PORT": str(busy_port)}
    )
    with pytest.raises(ServiceError) as err:
        MariaDB(settings).start(timeout=5)
    text = str(err.value)
    assert text.startswith("mariadb:")
    assert f"port {busy_port} on 127.0.0.1 is already in use" in text
    assert f"pid {os.getpid()}" in text  # who holds it
    assert str(tmp_path / "mysql" / "mariadb.log") in text


def test_port_taken_by_a_stranger_shows_as_foreign(tmp_path: Path, busy_port: int) -> None:
    settings = load_settings(
        env={"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_STACK_KAFKA_PORT": str(busy_port)}
    )
    st = Kafka(settings).status()
    assert (st.name, st.state, st.pid) == ("kafka", "foreign", None)


def test_status_json_of_a_stopped_stack(stack_env: dict[str, str]) -> None:
    env = {**os.environ, **stack_env}
    res = run_riskctl("stack", "status", "--json", env=env)
    assert res.returncode == 3, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["name"], r["state"]) for r in rows] == [
        ("kafka", "stopped"),
        ("mariadb", "stopped"),
        ("flink", "stopped"),
    ]
    assert rows[1]["address"] == f"127.0.0.1:{env['RISKCTL_STACK_MYSQL_PORT']}"


def test_down_on_a_stopped_stack_is_harmless(tmp_path: Path) -> None:
    env = {**os.environ, "RISKCTL_STACK_DIR": str(tmp_path)}
    res = run_riskctl("stack", "down", env=env)
    assert res.returncode == 0, res.stderr
    assert "kafka    was not running" in res.stdout


def test_flink_cluster_with_several_taskmanagers_has_a_pid_file_and_slots_each(tmp_path: Path) -> None:
    import yaml

    from riskctl.stack.services import FlinkCluster

    settings = load_settings(
        env={
            "RISKCTL_STACK_DIR": str(tmp_path),
            "RISKCTL_STACK_FLINK_TASKMANAGERS": "3",
            "RISKCTL_STACK_FLINK_SLOTS": "1",
        }
    )
    cluster = FlinkCluster(settings)
    names = [f.name for f in cluster.pid_files]
    assert names == ["jobmanager.pid", "taskmanager.pid", "taskmanager-2.pid", "taskmanager-3.pid"]
    conf = yaml.safe_load(cluster._config_yaml(cluster._pyflink_dir()))
    assert conf["taskmanager"]["numberOfTaskSlots"] == 1
    assert conf["python"]["execution-mode"] == "thread"
    # the processes' working directories (blobs, each job's RocksDB) in the stack's folder, not /tmp
    assert conf["process.working-dir"] == str(tmp_path / "flink" / "work") == str(cluster.work_dir)
    # the JVMs' options: PyFlink's own (Java 17's module flags) first, then riskctl's (no event log)
    opts = conf["env"]["java"]["opts"]["all"].split()
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in opts
    assert opts[-2:] == ["-XX:+UnlockDiagnosticVMOptions", "-XX:-LogEvents"]


def test_down_without_the_taskmanagers_setting_still_sees_every_started_taskmanager(tmp_path: Path) -> None:
    """A cluster started with RISKCTL_STACK_FLINK_TASKMANAGERS=2, stopped by a plain `riskctl stack down`:
    the second TaskManager's pid file is found, so it is stopped too (it was left running)."""
    from riskctl.stack.services import FlinkCluster

    cluster = FlinkCluster(load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)}))
    cluster.dir.mkdir(parents=True, exist_ok=True)
    for name in ("taskmanager-2.pid", "taskmanager-10.pid"):
        (cluster.dir / name).write_text("999999\n")
    names = [f.name for f in cluster.pid_files]
    assert names == ["jobmanager.pid", "taskmanager.pid", "taskmanager-2.pid", "taskmanager-10.pid"]


def _a_kernel_thread() -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and kernel_thread(int(proc.name)):
            return int(proc.name)
    pytest.skip("no kernel thread is visible in this pid namespace")


def test_a_stale_pid_now_a_kernel_thread_is_not_the_service(stack_env: dict[str, str]) -> None:
    """After a kill -9 or a reboot the pid of a pid file can be a kernel thread's (kworkers come and go): its
    command line reads empty, as that of a program still exec'ing, and it was taken for the broker: status
    'unhealthy', `stack down` spent 25 s signalling it and said 'stopped', `stack up` waited its timeout."""
    kafka = Kafka(load_settings(env=stack_env))
    kafka.dir.mkdir(parents=True)
    kafka.pid_files[0].write_text(str(_a_kernel_thread()))
    st = kafka.status()
    assert (st.state, st.pid) == ("stopped", None)
    t0 = time.monotonic()
    assert kafka.stop() is False
    assert time.monotonic() - t0 < 5


def test_a_server_that_accepts_but_never_answers_is_unhealthy_not_a_hang(
    tmp_path: Path, busy_port: int
) -> None:
    """A MariaDB that is stopped (SIGSTOP), swapping or stuck: the kernel still accepts the connection, the
    greeting never comes. `stack status` and `stack up` waited for it for ever."""
    settings = load_settings(
        env={"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_STACK_MYSQL_PORT": str(busy_port)}
    )
    assert within(MariaDB(settings).healthy, seconds=15) is False


def exec_done(pid: int, last_word: str) -> bool:
    """True once ``pid`` runs its new program: its command line ends with ``last_word`` and its environment
    is in place (both read empty while exec is under way)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return (cmdline(pid) or "").endswith(last_word) and environ != b""


def test_a_stale_pid_now_another_stacks_service_is_not_this_ones(tmp_path: Path) -> None:
    """After a kill -9 or a reboot the pid of a pid file can be that of the same service of another stack (the
    shared one, a test's): its command line has the same words, so it was shown as this stack's broker and
    `stack down` stopped it. Services are started with RISKCTL_OWNED_BY naming their folder."""
    ours = Kafka(load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path / "ours")}))
    theirs = Kafka(load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path / "theirs")}))
    ours.dir.mkdir(parents=True)
    broker = [sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka"]
    for env, mine in ((theirs._owned_env(), False), (ours._owned_env(), True), (None, True)):
        proc = subprocess.Popen(broker, env=env)  # None: started before the mark existed
        try:
            # Popen returns once exec has begun; for a moment the new program's command line and environment
            # read empty, and such a process is taken for a part of the service still starting (its mark
            # unread): 'theirs' was ours in 3 runs of this test in 1,000. A stale pid file's process runs.
            assert wait_until(lambda pid=proc.pid: exec_done(pid, broker[-1]), timeout=10, interval=0.01)
            ours.pid_files[0].write_text(str(proc.pid))
            assert ours.pids() == ([proc.pid] if mine else []), env and env[OWNER_ENV]
        finally:
            proc.kill()
            proc.wait()
    # the mark is the folder itself, whatever the spelling of the setting
    relative = Kafka(load_settings(env={"RISKCTL_STACK_DIR": os.path.relpath(tmp_path / "ours")}))
    assert relative.owner == ours.owner == os.path.realpath(tmp_path / "ours" / "kafka")


def test_the_owner_mark_of_the_stack_s_processes_is_not_taken_for_a_setting() -> None:
    """The JobManager passes its environment to the Python driver of a job run from a jar (riskctl warm):
    a RISKCTL_STACK_* mark there was an unknown setting, and the job failed at start."""
    from riskctl.config import load_settings

    settings = load_settings(None, env={OWNER_ENV: "/some/stack"})
    assert settings.stack.dir  # loaded, no ConfigError
