"""Building a PyFlink execution environment the way every riskctl job needs it.

Thread mode (``python.execution-mode: thread``) runs Python inside the TaskManager JVM with pemja, so a
state access or a record does not cross a process boundary: many times the throughput of process mode for
keyed-state-heavy functions (the measured figures: README.md, "Performance", and bench/results/). RocksDB
with incremental checkpoints holds the keyed state. The connector jars are shipped with the job
(``pipeline.jars``, ``file://`` URLs only), so the same code runs on the embedded MiniCluster and when
submitted with ``flink run -py`` to a standalone cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from pyflink.common import Configuration
from pyflink.common.time import Time
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
from pyflink.datastream.state import StateTtlConfig

from riskctl.config.checks import refused
from riskctl.config.settings import JVM_OPTIONS, NETWORK_SEGMENT_SIZE
from riskctl.errors import ConfigError, printable
from riskctl.flink.pythonpath import python_path

REQUIRED_JARS = (
    "flink-connector-kafka-",
    "kafka-clients-",
    "flink-sql-connector-mysql-cdc-",
    "mysql-connector-j-",
)


@dataclass(frozen=True)
class RestartOptions:
    """Flink's exponential-delay restart strategy (see :class:`riskctl.config.JobSettings`)."""

    initial_backoff_ms: int = 1000
    max_backoff_ms: int = 30000
    backoff_multiplier: float = 2.0
    reset_backoff_threshold_ms: int = 20000
    jitter_factor: float = 0.1
    max_attempts: int = 0  # failures in a row before the job fails; 0: no cap

    def __post_init__(self) -> None:
        problems = []
        if self.initial_backoff_ms < 1:
            problems.append(f"initial backoff must be >= 1 ms, got {self.initial_backoff_ms}")
        if self.max_backoff_ms < self.initial_backoff_ms:
            problems.append(
                f"max backoff {self.max_backoff_ms} ms is below the initial {self.initial_backoff_ms} ms"
            )
        if not self.backoff_multiplier >= 1.0:
            problems.append(f"backoff multiplier must be >= 1, got {self.backoff_multiplier}")
        if self.reset_backoff_threshold_ms < 1:
            problems.append(f"reset backoff threshold must be >= 1 ms, got {self.reset_backoff_threshold_ms}")
        if not 0.0 <= self.jitter_factor <= 1.0:
            problems.append(f"jitter factor must be within [0, 1], got {self.jitter_factor}")
        if self.max_attempts < 0:
            problems.append(f"max attempts must be >= 0 (0: no cap), got {self.max_attempts}")
        if problems:
            msg = "job.restart_*: " + "; ".join(problems)
            raise refused(msg)

    def flink_config(self) -> dict[str, str]:
        """The ``restart-strategy.*`` keys of Flink 1.20 (RestartStrategyOptions) for these options."""
        prefix = "restart-strategy.exponential-delay."
        out = {
            "restart-strategy.type": "exponential-delay",
            prefix + "initial-backoff": f"{self.initial_backoff_ms} ms",
            prefix + "max-backoff": f"{self.max_backoff_ms} ms",
            prefix + "backoff-multiplier": repr(float(self.backoff_multiplier)),
            prefix + "reset-backoff-threshold": f"{self.reset_backoff_threshold_ms} ms",
            prefix + "jitter-factor": repr(float(self.jitter_factor)),
        }
        if self.max_attempts:
            out[prefix + "attempts-before-reset-backoff"] = str(self.max_attempts)
        return out


@dataclass
class EnvOptions:
    """What :func:`create_env` needs: the jars, parallelism, checkpoints, restarts and extra options."""

    jars_dir: str
    parallelism: int = 1
    checkpoint_interval_ms: int = 5000
    checkpoint_dir: str | None = None
    exactly_once_checkpoints: bool = True
    buffer_timeout_ms: int = 5
    restart: RestartOptions = field(default_factory=RestartOptions)
    python_executable: str = sys.executable
    restore_from: str | None = None  # a retained checkpoint or savepoint to start from
    options: dict[str, str] = field(default_factory=dict)  # extra Flink configuration, applied last
    #: where the embedded MiniCluster keeps its working directory (blobs, the RocksDB of each operator);
    #: None: Flink's own choice, a new ``minicluster_*`` in /tmp per run that a killed run never removes.
    #: Only for a MiniCluster this process starts: a cluster's TaskManagers would put RocksDB there too.
    working_dir: str | None = None


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


#: the Flink options that name a Python program (``flink.options`` may set them; riskctl sets both to this
#: interpreter otherwise): the one that runs the job's Python operators (in thread mode the interpreter each
#: TaskManager embeds) and the client's
PYTHON_OPTIONS = ("python.executable", "python.client.executable")

#: what a Python named by one of :data:`PYTHON_OPTIONS` runs at the start check: its version, then the imports
#: the job's operators begin with (``print`` of one value: a Python 2 gets to the version line too)
_PYTHON_PROBE = (
    "import sys; print('%d.%d' % sys.version_info[:2]); sys.stdout.flush(); import pyflink, riskctl"
)

#: how long that Python may take to import them (a cold start on a loaded machine: seconds)
PYTHON_PROBE_TIMEOUT_S = 60.0


def check_python_options(options: Mapping[str, str], *, timeout_s: float = PYTHON_PROBE_TIMEOUT_S) -> None:
    """Refuse, before anything starts, a Python named by :data:`PYTHON_OPTIONS` in ``options`` (the job's
    Flink options) that cannot run the job on this machine: no such file or program on the PATH, not
    executable, not a Python, another version than this one, or one that cannot import pyflink and riskctl
    with the ``PYTHONPATH`` the job's Python gets (:func:`riskctl.flink.pythonpath.python_path`). Without
    this, every attempt of the job failed inside Flink (``java.io.IOException: Cannot run program ...``)
    until the restart strategy gave up.

    Only for Pythons of this machine: the MiniCluster's (``riskctl run``) and the local stack's TaskManagers'.
    Raises a refused setting (:func:`riskctl.config.checks.refused`: exit 2) that names each bad option, its
    value and why, on one line."""
    problems = []
    seen: dict[str, str | None] = {}
    for key in PYTHON_OPTIONS:
        value = options.get(key)
        if value and value not in seen:  # both options often name the same program: run it once
            seen[value] = _python_problem(value, timeout_s)
        if value and seen[value]:
            problems.append(f"{key}={value} {seen[value]}")
    if problems:
        msg = (
            f"flink.options: {'; '.join(problems)} (name a Python that has pyflink and riskctl, such as "
            f"{sys.executable}, or leave the option out)"
        )
        raise refused(printable(msg))  # the values as given: a line break in one must not forge a line


def _python_problem(value: str, timeout_s: float) -> str | None:
    """Why the program ``value`` cannot run the job's Python here, or None."""
    program = value if os.sep in value else shutil.which(value)
    if program is None:
        return "names no program on the PATH"
    if not os.path.exists(program):
        return "names no file"
    if os.path.isdir(program):
        return "is a folder, not a program"
    if not os.access(program, os.X_OK):
        return "is not executable"
    env = {**os.environ, "PYTHONPATH": python_path()}  # what the job's Python gets (create_env, the stack)
    try:
        with tempfile.TemporaryDirectory() as empty:  # not the working directory, which may hold riskctl/
            res = subprocess.run(
                [program, "-c", _PYTHON_PROBE],
                env=env,
                cwd=empty,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout_s,
                check=False,
            )
    except subprocess.TimeoutExpired:
        return f"did not import pyflink and riskctl within {timeout_s:g} s"
    except OSError as exc:
        return f"cannot be run: {exc.strerror or exc}"
    version = (res.stdout.splitlines() or [""])[0].strip()
    said = next((line.strip() for line in reversed(res.stderr.splitlines()) if line.strip()), "")
    said = f": {said}" if said else f" (exit status {res.returncode})"
    if not re.fullmatch(r"[0-9]+\.[0-9]+", version):
        return f"is not a Python{said}"
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version != here:
        return (
            f"is Python {version}; the job is built by Python {here}, and its functions load in that version"
        )
    if res.returncode != 0:
        return f"cannot import pyflink and riskctl{said}"
    return None


def jvm_options(environ: Mapping[str, str]) -> str:
    """The options of the JVM this process starts (``FLINK_ENV_JAVA_OPTS``): the user's, else PyFlink's own
    (its ``conf/config.yaml``, with the module flags Java 17 needs), and :data:`JVM_OPTIONS` after them."""
    current = environ.get("FLINK_ENV_JAVA_OPTS")
    if current is None:
        from pyflink.pyflink_gateway_server import get_jvm_opts, prepare_environment_variables

        env = dict(environ)
        prepare_environment_variables(env)
        current = " ".join(get_jvm_opts(env))
    missing = [o for o in JVM_OPTIONS if o not in current.split()]
    return " ".join([current, *missing]).strip()


#: the largest Java ``long``: the longest duration in milliseconds Flink takes
JAVA_LONG_MAX = 2**63 - 1

#: Flink's shortest checkpoint interval (CheckpointConfig.MINIMAL_CHECKPOINT_TIME)
MIN_CHECKPOINT_INTERVAL_MS = 10


def create_env(opts: EnvOptions) -> StreamExecutionEnvironment:
    """A StreamExecutionEnvironment in thread mode, on RocksDB, with checkpoints and exponential restarts."""
    if 0 < opts.checkpoint_interval_ms < MIN_CHECKPOINT_INTERVAL_MS:
        # Flink's IllegalArgumentException, from enable_checkpointing, ended 'riskctl run' in a traceback
        msg = (
            f"job.checkpoint_interval_ms must be 0 (no checkpoints) or at least {MIN_CHECKPOINT_INTERVAL_MS} "
            f"(Flink's shortest interval), got {opts.checkpoint_interval_ms}"
        )
        raise refused(msg)
    # must be set before the first JVM call: the MiniCluster's JVM inherits this process's environment
    os.environ["PYTHONPATH"] = python_path()
    os.environ["FLINK_ENV_JAVA_OPTS"] = jvm_options(os.environ)
    config = Configuration()
    config.set_string("python.execution-mode", "thread")
    config.set_string("python.executable", opts.python_executable)
    config.set_string("python.client.executable", opts.python_executable)
    config.set_string("state.backend.type", "rocksdb")
    config.set_string("state.backend.incremental", "true")
    # Event-time timers on the heap, not in RocksDB: the engine registers timers for most events (pattern
    # deadlines, state clean-up); in RocksDB each one is a write to a column family whose memtables filled
    # faster than a busy 2-core box flushed them ("Stopping writes because we have 2 immutable memtables"),
    # which stalled the decide task, rule changes included, for seconds (bench/flink_profile/README.md).
    config.set_string("state.backend.rocksdb.timer-service.factory", "HEAP")
    # Memtables of 16 MB, not 64: an incremental checkpoint flushes the memtable synchronously (RocksDB's
    # native checkpoint), while the decide task waits; with smaller memtables most of that flush already
    # happened in RocksDB's background threads (64 MB: a synchronous phase of 99-129 ms at its median). Not
    # 4 MB either, as from 2026-12-04: every four level-0 files RocksDB merges them into the whole of level 1,
    # so the smaller the files the more often it rewrites all the state. With 16 MB its compaction thread
    # spent 3-4 µs per event of the sustained phase instead of 17-19, the whole JVM 86-100 instead of
    # 100-113, and the p99 at 5,000 events/s was 39-67 ms against 60-120 (40-42 with job.compaction_nice);
    # the synchronous phase 13-26 ms at its median instead of 10-14, the p99 at 200 and 1,000 events/s the
    # same (bench/flink_profile/README.md).
    config.set_string("state.backend.rocksdb.writebuffer.size", "16mb")
    # Bloom filters in the SST files: a user's first event reads a key that is in no file, and without a
    # filter that read walks each level's index and decompresses a data block of it (on the bench's workload
    # 15% of events are users seen for the first time, and RocksDB's get on cache misses was 10% of the
    # decide thread). Measured in four alternating rounds: decide thread 84-87 us/event against 94-122
    # (bench/flink_profile/README.md).
    config.set_string("state.backend.rocksdb.use-bloom-filter", "true")
    # No block compression in level 0, snappy below: an incremental checkpoint waits for RocksDB to flush
    # the memtable into a level-0 file (78% of the synchronous phase in wall-clock samples), and snappy was
    # about a third of that flush's CPU. Level 0's files are compacted into level 1, compressed, in the
    # background, so the state on disk stays compressed (bench/flink_profile/README.md, 2026-12-04).
    config.set_string("state.backend.rocksdb.compression.per.level", "NO_COMPRESSION;SNAPPY_COMPRESSION")
    # Network buffers of 4 KB, not 32 KB (the MiniCluster's; a standalone cluster sets it in its config.yaml,
    # as the local stack does): a checkpoint barrier queues behind 8x fewer records in flight, so checkpoints
    # after a restore, and with exactly-once the decisions they make visible, come sooner.
    config.set_string("taskmanager.memory.segment-size", NETWORK_SEGMENT_SIZE)
    # Chained operators hand records on without copying them. Every operator of the job's chains uses a
    # record before it returns (the Kafka source's row, the Calcs, the conversions into and out of Python,
    # the Kafka writers, which serialize at once); none keeps one. Without it, each decision, alert and
    # reply was copied field by field on its way from the decide operator to its Kafka writer
    # (RowDataSerializer.copy: 1.3% of the decide thread, bench/flink_profile/README.md).
    config.set_string("pipeline.object-reuse", "true")
    if opts.checkpoint_dir:
        config.set_string("state.checkpoints.dir", opts.checkpoint_dir)
    if opts.working_dir:
        config.set_string("process.working-dir", opts.working_dir)
        # RocksDB names each instance's LOG file in the log folder after the instance's whole path, and a
        # name over 255 bytes is no file: RocksDB then logs nothing. Under process.working-dir the path
        # gets minicluster_<32 hex>/tm_0/tmp/ on top (the name was 253 bytes in /work/main and over 255 in
        # /check/work/main); the working dir's rocksdb/ leaves ~45 more bytes to the stack's own path.
        config.set_string("state.backend.rocksdb.localdir", str(Path(opts.working_dir) / "rocksdb"))
    # keep the last checkpoint when the job is cancelled or killed, so it can be restored
    config.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    if opts.restore_from:
        config.set_string("execution.savepoint.path", opts.restore_from)
    # Restarts: exponential delay without a small attempt cap, so losing a TaskManager (or several, minutes
    # apart) is routine. A fixed delay of 3 attempts ran out while the JobManager was still deploying to a
    # TaskManager killed seconds before, and the job ended FAILED (issue 11). Set as job configuration (the
    # JobManager reads restart-strategy.* from the job before the cluster's), not with the deprecated
    # env.set_restart_strategy, whose PyFlink API has no exponential-delay strategy.
    for key, value in opts.restart.flink_config().items():
        config.set_string(key, value)
    if starts_a_jvm(os.environ):
        # The MiniCluster's REST endpoint (on a random port; 'riskctl run' reads the job's failures there)
        # and its BLOB server (the job's jars and artifacts; bound to jobmanager.bind-host) listened on every
        # interface: anyone who could reach this machine could cancel the job or read its artifacts. Only
        # this machine now (flink.options may say otherwise). Under 'flink run' they would be the client's.
        config.set_string("rest.bind-address", "127.0.0.1")
        config.set_string("jobmanager.bind-host", "127.0.0.1")
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
    return env


def ttl_config(ttl_ms: int) -> StateTtlConfig:
    """State TTL that also works on a standalone TaskManager.

    The default cleanup strategies build a RocksDB compaction-filter strategy with ``Duration.of_days(30)``,
    which needs a py4j gateway that a TaskManager does not have (FLINK-40628): set the strategy explicitly.

    A TTL beyond Java's ``long`` (``job.state_ttl_ms`` plus ``job.state_ttl_margin_ms``, each up to it) is
    the longest one Flink takes, which never expires: the value itself raised OverflowError ("int too big
    to convert") in the decide operator's open(), on every restart, and no event was ever decided.
    """
    return (
        StateTtlConfig.new_builder(Time.milliseconds(min(ttl_ms, JAVA_LONG_MAX)))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .disable_cleanup_in_background()
        .cleanup_in_rocksdb_compact_filter(1000, periodic_compaction_time=Time.days(1))
        .build()
    )


def local_log_dir(parent: Path, pid: int | None = None, keep: int = 5) -> Path:
    """The log folder of this process's MiniCluster: ``parent/<pid>``; of the folders of processes that no
    longer run, the ``keep`` newest stay (a stopped or crashed run's logs), older ones are removed.

    PyFlink's default is its own ``log/`` folder inside site-packages: one log file that each run overwrites
    (and a concurrent run writes over), and every RocksDB instance's ``LOG`` files beside it, never removed
    (RocksDB writes its logs where Flink's log file is). The log file holds the JVM's lines and the Python
    operators' own (``decide subtask 0: engine core ...; events by the fast path``).
    """
    return _per_process_dir(parent, pid, keep)


def set_minicluster_log_dir(stack_dir: Path, environ: MutableMapping[str, str]) -> None:
    """Send the MiniCluster's log (and its RocksDB instances' LOG files) to
    ``stack_dir/minicluster-logs/<pid>`` (:func:`local_log_dir`) through ``FLINK_LOG_DIR``, which PyFlink
    reads when it starts the JVM.

    Left alone: a ``FLINK_LOG_DIR`` already set, and ``flink run`` (PyFlink then connects to the CLI's running
    JVM by ``PYFLINK_GATEWAY_PORT``, and the cluster's processes log where the cluster says).
    """
    if environ.get("FLINK_LOG_DIR") or not starts_a_jvm(environ):
        return
    environ["FLINK_LOG_DIR"] = str(local_log_dir(stack_dir / "minicluster-logs"))


def prepare_minicluster(stack_dir: Path, environ: MutableMapping[str, str]) -> str | None:
    """For a job's entry point, before :func:`create_env`: the log (:func:`set_minicluster_log_dir`) and the
    working dir (:func:`minicluster_working_dir`, returned for :attr:`EnvOptions.working_dir`) of the
    MiniCluster this process starts, both in the stack's folder; nothing and None under ``flink run``."""
    set_minicluster_log_dir(stack_dir, environ)
    return minicluster_working_dir(stack_dir, environ)


def minicluster_working_dir(stack_dir: Path, environ: Mapping[str, str]) -> str | None:
    """The working dir for the MiniCluster this process starts (:func:`local_working_dir` under
    ``stack_dir/minicluster``), or None under ``flink run``: there the job's configuration reaches the
    cluster's TaskManagers, which would put their RocksDB in this client's folder (``create_env`` sets
    RocksDB's local dir in it), and the next run would remove it under the running job."""
    return str(local_working_dir(stack_dir / "minicluster")) if starts_a_jvm(environ) else None


def starts_a_jvm(environ: Mapping[str, str]) -> bool:
    """Whether PyFlink starts its own JVM (the MiniCluster's) here; under ``flink run`` it connects to the
    CLI's running JVM, whose port the CLI passes as ``PYFLINK_GATEWAY_PORT``."""
    return "PYFLINK_GATEWAY_PORT" not in environ


def local_working_dir(parent: Path, pid: int | None = None) -> Path:
    """The working directory of this process's MiniCluster: ``parent/<pid>``, after removing those of
    processes that no longer run.

    Flink's default is a new ``minicluster_*`` folder in /tmp per run, holding the run's blobs and the
    RocksDB of its operators (about 50 MB after a short run); the job is stopped by a signal, and then Flink
    never removes it. Under ``parent`` (the stack's folder) the next run removes what a stopped one left.
    """
    return _per_process_dir(parent, pid, keep=0)


def _per_process_dir(parent: Path, pid: int | None, keep: int) -> Path:
    """``parent/<pid>``; of the other ``parent/<number>`` folders whose process no longer runs, all but the
    ``keep`` most recently modified are removed."""
    from riskctl.stack.process import pid_alive

    pid = os.getpid() if pid is None else pid
    if parent.is_dir():
        runs = [d for d in parent.iterdir() if d.name.isdigit() and int(d.name) != pid]
        stopped = sorted((d for d in runs if not pid_alive(int(d.name))), key=_modified, reverse=True)
        for old in stopped[max(0, keep) :]:
            shutil.rmtree(old, ignore_errors=True)
    return parent / str(pid)


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another run starting at the same time
        return 0.0
