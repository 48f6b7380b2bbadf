"""The local stack: a KRaft Kafka broker, a MariaDB server with binlog, and a standalone Flink cluster.

Every service runs on the loopback address with its data, logs and pid file under the stack folder
(``.stack/`` by default; see :class:`riskctl.config.StackSettings`)::

    .stack/
      kafka/    server.properties, data/, kafka.log, kafka.pid
      mysql/    data/ (with binlog.*), mariadb.log, mariadb.pid, password (generated, 0600)
      flink/    home/ (bin, conf, lib with flink-python), log/, jobmanager.pid, taskmanager.pid, checkpoints/

``start()`` is idempotent (a running, healthy service is left alone) and waits until the service answers.
A port taken by something else, or a process that dies while starting, raises :class:`ServiceError` naming
the service, the port and the log file.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from riskctl.config import PROJECT_ROOT, Settings
from riskctl.config.settings import JVM_OPTIONS, NETWORK_SEGMENT_SIZE, parse_options
from riskctl.core import native
from riskctl.errors import ServiceError
from riskctl.flink.pythonpath import python_path
from riskctl.flink.warm import WarmResult
from riskctl.stack.process import (
    ALIVE,
    ENDED,
    KILLED,
    LockTimeout,
    cmdline,
    describe_holder,
    environ_value,
    exit_status,
    kernel_thread,
    listening_pid,
    locked,
    low_disk,
    pid_alive,
    port_open,
    port_owner,
    read_pid,
    run_bounded,
    same_user,
    spawn,
    start_time,
    tail,
    terminate,
    wait_until,
)

#: the jar of MySQL Connector/J among the job's jars, put in the cluster's lib/ (see FlinkCluster)
CONNECTOR_J = "mysql-connector-j-"
#: Connector/J's switch for its AbandonedConnectionCleanupThread (a class-loader leak in a JobManager)
NO_CJ_CLEANUP_THREAD = "-Dcom.mysql.cj.disableAbandonedConnectionCleanup=true"


#: the environment variable that names the stack folder of a service's processes (a pid file's process that
#: names another is not this service's). Not under a settings prefix (RISKCTL_STACK_...): the local cluster's
#: processes pass their environment on (the JobManager to the Python driver of a job run from a jar), and
#: riskctl's settings refuse an unknown RISKCTL_<SECTION>_ variable, so every such job failed at start
OWNER_ENV = "RISKCTL_OWNED_BY"

#: how long mariadb-install-db may take (under a second on an idle machine)
INSTALL_DB_TIMEOUT = 120.0

#: how long ``stop()`` waits for another process that starts or stops the same service (``start()`` waits
#: twice its own timeout and a minute)
STOP_LOCK_TIMEOUT = 300.0

#: how long ``stop()`` gives each process of a service to end on SIGTERM before it is killed (SIGKILL)
STOP_TIMEOUT = 20.0


@dataclass
class ServiceStatus:
    """What ``riskctl stack status`` shows of one service."""

    name: str
    address: str
    # "running" | "stopped" | "unhealthy" | "foreign" (port taken by a process we did not start) |
    # "orphaned" (port taken by this stack's process of the service, which no pid file names: see orphans())
    state: str
    pid: int | None
    log: str
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Orphan:
    """A process of this stack's service that holds one of its ports and that no pid file names (the pid file
    was deleted, the stack folder removed while the service ran): found by its owner mark."""

    pid: int
    port: int
    started: int  # its start time: the same pid read later with another one is another process


@dataclass(frozen=True)
class Stopped:
    """What ``stop()`` did to one process of a service."""

    pid: int
    part: str  # the stem of its pid file ("kafka", "taskmanager-2"); "" for an orphan
    outcome: str  # process.ENDED | process.KILLED | process.ALIVE
    orphan: Orphan | None = None

    def label(self) -> str:
        if self.orphan is not None:
            return f"pid {self.pid} (on port {self.orphan.port}, its pid file lost)"
        return f"{self.part} (pid {self.pid})"


@dataclass
class StopReport:
    """What ``stop()`` did to a service: each process it signalled and how that ended."""

    name: str
    log: str
    timeout: float  # the seconds each process had to end on SIGTERM
    processes: list[Stopped]

    @property
    def stopped(self) -> bool:
        """True when something of the service was running (and was signalled)."""
        return bool(self.processes)

    def pids(self, outcome: str) -> list[int]:
        return [p.pid for p in self.processes if p.outcome == outcome]

    def summary(self) -> str:
        """One line for ``riskctl stack down``: "stopped", "killed after 20 s (did not stop on SIGTERM)...",
        and which process when the service has several, or one was found without its pid file."""
        if not self.processes:
            return "was not running"
        phrases = {
            ENDED: "stopped",
            KILLED: f"killed after {self.timeout:g} s (did not stop on SIGTERM)",
            ALIVE: "NOT stopped, still running after SIGKILL",
        }
        outcomes = [o for o in phrases if any(p.outcome == o for p in self.processes)]
        plain = len(outcomes) == 1 and len(self.processes) == 1 and self.processes[0].orphan is None
        if plain:
            line = phrases[outcomes[0]]
        else:
            groups = []
            for outcome in outcomes:
                labels = ", ".join(p.label() for p in self.processes if p.outcome == outcome)
                groups.append(f"{phrases[outcome]}: {labels}")
            line = "; ".join(groups)
        if self.pids(KILLED):
            line += f"; it may need recovery at its next start (see {self.log})"
        if self.pids(ALIVE):
            line += "; its pid file is kept, retry 'riskctl stack down'"
        return line

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "stopped": self.stopped,
            "killed": self.pids(KILLED),
            "still_running": self.pids(ALIVE),
            "pid_file_lost": [p.pid for p in self.processes if p.orphan is not None],
            "detail": self.summary(),
        }


class Service(ABC):
    """One service of the local stack."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = settings.stack
        self.dir = Path(self.stack.dir) / self.folder
        self.host = self.stack.host

    folder: str

    @property
    @abstractmethod
    def ports(self) -> list[int]: ...

    @property
    @abstractmethod
    def log(self) -> Path: ...

    @property
    def logs(self) -> list[Path]:
        """The logs its processes write as they start: one per process that has its own."""
        return [self.log]

    @property
    def pid_files(self) -> list[Path]:
        return [self.dir / f"{self.folder}.pid"]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.ports[0]}"

    #: words of a command line that mark a process as this service's (any one is enough): a pid file can
    #: outlive its process (kill -9, a reboot) and its pid be reused by another program, which must then be
    #: neither taken for the service nor stopped with it
    markers: tuple[str, ...] = ()

    @property
    def owner(self) -> str:
        """What the service's processes carry in :data:`OWNER_ENV`: its folder, whatever the spelling."""
        return os.path.realpath(self.dir)

    def _owned_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """``env`` (default: this process's) marked as that of this stack's service (see :meth:`_pid`)."""
        return {**(os.environ if env is None else env), OWNER_ENV: self.owner}

    def _pid(self, pid_file: Path) -> int | None:
        pid = read_pid(pid_file)
        if pid is not None and not same_user(pid):
            # a stale pid file whose pid is now another user's process (its Kafka, say: the same words): never
            # ours, and 'stack down' would have failed on it (EPERM) or, run as root, stopped it
            return None
        if pid is None or not self.markers:
            return pid
        owner = environ_value(pid, OWNER_ENV)
        if owner is not None and owner != self.owner:
            # a stale pid file whose pid is now the same service of another stack (the shared one, a test's):
            # its words matched, so 'stack status' showed it and 'stack down' stopped it. A process started
            # before this mark existed has none and is judged by its command line alone.
            return None
        cmd = cmdline(pid)
        if cmd is not None and not any(m in cmd for m in self.markers):
            return None  # a stale pid file: that pid is another program now
        if cmd is None and kernel_thread(pid):
            # a kernel thread reads an empty command line like a program still exec'ing: it was taken for
            # the service ('unhealthy'), 'stack down' spent 25 s on it and 'stack up' waited its timeout
            return None
        return pid

    def pids(self) -> list[int]:
        return [p for f in self.pid_files if (p := self._pid(f)) is not None]

    def _marked(self, pid: int) -> bool:
        """True when ``pid`` is this stack's process of this service by its owner mark alone (no pid file
        names it): it runs as this user, its :data:`OWNER_ENV` names exactly this service's folder, and its
        command line is one of the service's (a program started from a service's environment inherits the
        mark: the Python driver of a job the JobManager runs). A process without the mark (started before it
        existed, or by someone else) or whose environment cannot be read is not taken for ours."""
        if not same_user(pid) or environ_value(pid, OWNER_ENV) != self.owner:
            return False
        cmd = cmdline(pid)
        return not self.markers or (cmd is not None and any(m in cmd for m in self.markers))

    def _orphan_on(self, port: int, known: Iterable[int] = ()) -> Orphan | None:
        """The process of this stack's service that listens on ``port`` without a pid file, if that is who
        listens there (see :meth:`_marked`)."""
        try:
            pid = listening_pid(port)
        except OSError:
            return None
        if pid is None or pid in known or pid == os.getpid():
            return None
        started = start_time(pid)
        if started is None or not self._marked(pid) or start_time(pid) != started:
            return None
        return Orphan(pid, port, started)

    def orphans(self) -> list[Orphan]:
        """This stack's processes of the service that hold its ports and that no pid file names (the pid
        file was deleted, or the stack folder): 'stack status' shows them as "orphaned", 'stack down' stops
        them."""
        known = set(self.pids())
        found: dict[int, Orphan] = {}
        for port in self.ports:
            if port_open(self.host, port) and (orphan := self._orphan_on(port, known)) is not None:
                found.setdefault(orphan.pid, orphan)
        return list(found.values())

    def _still(self, orphan: Orphan) -> bool:
        """True when ``orphan`` is still that process, still ours: not ended, its pid not reused since."""
        return start_time(orphan.pid) == orphan.started and self._marked(orphan.pid)

    def dead_parts(self) -> list[Path]:
        """The pid files whose process is gone (or is not this service's any more)."""
        return [f for f in self.pid_files if self._pid(f) is None]

    def _restart_parts(self, dead: list[Path], timeout: float) -> bool:
        """Some processes of the service died while others run: bring the service back.

        This default stops what is left and returns False, so that :meth:`start` starts the service afresh;
        a service whose parts can be restarted alone returns True once it has done so and is healthy.
        """
        self.stop()
        return False

    @abstractmethod
    def healthy(self) -> bool:
        """True when the service answers a real request (not only an open port)."""

    @abstractmethod
    def _start(self) -> None: ...

    #: the command that starts (or restarts) this service
    up_command = "riskctl stack up"

    def status(self) -> ServiceStatus:
        pids = self.pids()
        # some processes gone while others run (a JobManager or a TaskManager killed): this was 'unhealthy'
        # with the pid of a survivor (a TaskManager's, for a dead JobManager) and nothing said of what had
        # died, or 'running' while the JobManager still counted a dead TaskManager (until its heartbeat)
        dead = self.dead_parts() if pids else []
        detail = ""
        if dead:
            detail = f"{', '.join(f.stem for f in dead)} not running; '{self.up_command}' restarts it"
        # a process of this service that lost its pid file was shown as "foreign" (someone else's) and
        # 'stack down' left it running: its owner mark tells it apart
        orphans = self.orphans() if not pids or dead else []
        if orphans:
            state = "orphaned"
            held = ", ".join(
                f"port {o.port}" if len(orphans) == 1 else f"pid {o.pid} on port {o.port}" for o in orphans
            )
            detail = f"its pid file is lost (this stack's process on {held}); 'riskctl stack down' stops it"
        elif pids:
            state = "running" if not dead and self.healthy() else "unhealthy"
        elif any(port_open(self.host, p) for p in self.ports):
            state = "foreign"
        else:
            state = "stopped"
        pid = orphans[0].pid if orphans else pids[0] if pids else None
        return ServiceStatus(self.name, self.address, state, pid, str(self.log), detail)

    @property
    def lock_file(self) -> Path:
        return self.dir / f"{self.folder}.lock"

    #: called with one line when a command has to wait for the service's lock (another command starts or
    #: stops it): ``riskctl stack`` prints it, so that a wait of up to minutes is not taken for a hang
    on_wait: Callable[[str], None] | None = None

    @contextmanager
    def _locked(self, doing: str, timeout: float) -> Iterator[None]:
        """Hold the service's lock: two ``stack up`` at once (or an ``up`` and a ``down``) each spawned the
        service, and the pid file named the one that lost the port, while the winner ran unrecorded (shown as
        "foreign", never stopped by ``stack down``). The second now waits, then finds the service running."""
        self.dir.mkdir(parents=True, exist_ok=True)

        def waiting(holder: str) -> None:
            if self.on_wait is not None:
                who = describe_holder(holder)
                self.on_wait(f"waiting up to {timeout:.0f} s: {who} is starting or stopping it")

        try:
            with locked(self.lock_file, timeout=timeout, on_wait=waiting):
                yield
        except LockTimeout as exc:
            msg = (
                f"another process ({exc.holder or 'unknown'}) is still starting or stopping it after "
                f"{timeout:.0f} s; wait for it to finish or stop it, then retry {doing}"
            )
            raise ServiceError(self.name, msg, log=str(self.log)) from None

    def start(self, timeout: float = 90.0) -> bool:
        """Start the service unless it is already running; return True when this call started it.

        A service with some of its processes dead (a JobManager or TaskManager killed, a stale pid file) is
        restarted: the dead parts alone when the service can (:meth:`_restart_parts`), else all of it.
        Another process starting or stopping the same service is waited for first (:meth:`_locked`).
        """
        # the holder may wait for health twice (a silent death is retried) and stop the service in between
        try:
            with self._locked("'riskctl stack up'", timeout=2 * timeout + 60):
                return self._start_unlocked(timeout)
        except OSError as exc:  # a file of the stack that cannot be written: a full disk, most often
            raise ServiceError(self.name, f"{exc}.{low_disk(self.dir)}", log=str(self.log)) from exc

    def _start_unlocked(self, timeout: float) -> bool:
        dead = self.dead_parts()
        if self.pids() and dead:
            if self._restart_parts(dead, timeout):
                return True
        if self.pids() and self.healthy():
            return False
        if self.pids():  # ours but not answering: maybe still starting
            if wait_until(self.healthy, timeout=timeout):
                return False
            pid = self.pids()[0]
            msg = f"running (pid {pid}) but not answering on {self.address}; run 'riskctl stack down'"
            raise ServiceError(self.name, msg, log=str(self.log))
        for port in self.ports:
            if port_open(self.host, port):
                orphan = self._orphan_on(port)
                if orphan is not None:
                    msg = (
                        f"port {port} on {self.host} is held by this stack's {self.name} (pid {orphan.pid}), "
                        "whose pid file is lost; stop it with 'riskctl stack down', then retry"
                    )
                    raise ServiceError(self.name, msg, log=str(self.log))
                owner = port_owner(port)
                msg = f"port {port} on {self.host} is already in use" + (f" by {owner}" if owner else "")
                msg += "; stop that process or choose another port (see 'riskctl stack --help')"
                raise ServiceError(self.name, msg, log=str(self.log))
        self.dir.mkdir(parents=True, exist_ok=True)

        def died() -> bool:
            return len(self.pids()) < len(self.pid_files)

        # A process that exits before writing one line to its log has not failed on anything of ours (a
        # bad config, a taken lock or port all log their reason): it is started once more before giving up.
        # Every process's own log counts: a TaskManager that died without a line in its log failed a start of
        # the cluster whose JobManager had logged (CI, 2026-12-03).
        retried = False
        while True:
            logged = {log: _size(log) for log in self.logs}
            self._start()
            started = [p for f in self.pid_files if (p := read_pid(f)) is not None]
            if wait_until(self.healthy, timeout=timeout, abort=died):
                return True
            exited = died()
            statuses = ", ".join(f"pid {pid} {status}" for pid in started if (status := exit_status(pid)))
            silent = exited and any(_size(log) == size for log, size in logged.items())
            last = tail(self.log)
            self.stop()
            if silent and not retried:
                retried = True
                continue
            state = f"did not answer on {self.address} in {timeout:.0f} s"
            if exited:
                state = "exited while starting"
            if statuses:
                state += f" ({statuses})"
            if silent:
                state += ", twice, without writing to its log"
            state += "." + low_disk(self.dir)
            raise ServiceError(self.name, f"{state} Last lines of the log:\n{last}", log=str(self.log))

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop the service's processes (and their process groups); return True when something was running."""
        return self.shut_down(timeout).stopped

    def shut_down(self, timeout: float = STOP_TIMEOUT) -> StopReport:
        """Stop the service's processes, those its pid files name and its :meth:`orphans`: SIGTERM, then
        SIGKILL after ``timeout`` seconds; say what each did (a killed MariaDB or Kafka recovers at its next
        start, a user should know it was killed)."""
        report = StopReport(self.name, str(self.log), timeout, [])
        if not self.dir.is_dir() and not self.orphans():
            return report  # never started here (nor its folder removed under a running service)
        with self._locked("'riskctl stack down'", timeout=STOP_LOCK_TIMEOUT):
            self._stop_unlocked(report)
        return report

    def _stop_unlocked(self, report: StopReport) -> None:
        for orphan in self.orphans():
            if self._still(orphan):  # checked again at the last moment: never a process that is not ours
                outcome = terminate(orphan.pid, report.timeout)
                report.processes.append(Stopped(orphan.pid, "", outcome, orphan))
        for f in self.pid_files:
            pid = self._pid(f)
            if pid is not None:
                outcome = terminate(pid, report.timeout)
                report.processes.append(Stopped(pid, f.stem, outcome))
                if outcome == ALIVE:
                    continue  # a later 'stack down' tries again
            f.unlink(missing_ok=True)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# --------------------------------------------------------------------------------------------------------
def kafka_cluster_id(random_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A KRaft cluster id as Kafka's own ``Uuid.randomUuid`` makes one: 22 URL-safe base64 characters, never
    starting with "-" (the storage tool's argument parser takes such an id for an option and refuses to
    format: one stack start in 64 failed that way in CI)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_uuid().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Service):
    """A single-node KRaft broker (broker and controller in one JVM), transactions usable."""

    name = "kafka"
    folder = "kafka"
    markers = ("kafka.Kafka",)

    @property
    def ports(self) -> list[int]:
        return [self.stack.kafka_port, self.stack.kafka_controller_port]

    @property
    def log(self) -> Path:
        return self.dir / "kafka.log"

    @property
    def libs(self) -> Path:
        return PROJECT_ROOT / ".cache" / "kafka" / "libs"

    def healthy(self) -> bool:
        if not port_open(self.host, self.stack.kafka_port):
            return False
        try:
            from kafka import KafkaAdminClient

            admin = KafkaAdminClient(
                bootstrap_servers=self.address, request_timeout_ms=3000, api_version_auto_timeout_ms=3000
            )
            try:
                admin.list_topics()
            finally:
                admin.close()
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        return True

    def _properties(self) -> str:
        s = self.stack
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{s.host}:{s.kafka_controller_port}",
                f"listeners=PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.dir / 'data'}",
                "num.partitions=2",
                "auto.create.topics.enable=true",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=24",
                "log.segment.bytes=67108864",
                # a transactional producer of a Flink exactly-once sink may keep a transaction open up to
                # the checkpoint interval plus the sink's transaction timeout
                "transaction.max.timeout.ms=900000",
                "",
            ]
        )

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        if not self.libs.is_dir():
            msg = f"the Kafka broker jars are missing from {self.libs}: run scripts/setup"
            raise ServiceError(self.name, msg)
        return [
            "java",
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _start(self) -> None:
        props = self.dir / "server.properties"
        props.write_text(self._properties())
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.request.logger=WARN\nlog4j.logger.org.apache.kafka=INFO\n"
        )
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = kafka_cluster_id()
            fmt = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                self.log.write_text(fmt.stdout + fmt.stderr)
                raise ServiceError(
                    self.name,
                    f"formatting the KRaft storage failed: {fmt.stderr.strip()[-400:]}",
                    log=str(self.log),
                )
        spawn(
            self._java("kafka.Kafka", str(props), heap=self.stack.kafka_heap),
            log=self.log,
            pid_file=self.pid_files[0],
            env=self._owned_env(),
        )


# --------------------------------------------------------------------------------------------------------
class MariaDB(Service):
    """A MariaDB server with its own datadir, ROW binlog (what Flink CDC reads) and a password user."""

    name = "mariadb"
    folder = "mysql"
    markers = ("mariadbd", "mysqld")

    @property
    def ports(self) -> list[int]:
        return [self.stack.mysql_port]

    @property
    def log(self) -> Path:
        return self.dir / "mariadb.log"

    @property
    def datadir(self) -> Path:
        return self.dir / "data"

    @property
    def socket(self) -> Path:
        sock = self.dir / "mysqld.sock"
        # unix socket paths are limited to 107 bytes; fall back to /tmp for deep checkouts
        if len(str(sock)) > 100:
            sock = Path("/tmp") / f"riskctl-mysqld-{self.stack.mysql_port}.sock"  # noqa: S108
        return sock

    @property
    def password_file(self) -> Path:
        return self.dir / "password"

    @staticmethod
    def binary(name: str) -> str:
        found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        if not found:
            msg = "MariaDB is not installed: run scripts/setup (it installs Debian's mariadb-server)"
            raise ServiceError(MariaDB.name, msg)
        return found

    def password(self) -> str:
        """``RISKCTL_MYSQL_PASSWORD``, else the stack's password file (created on first use, mode 600)."""
        given = os.environ.get("RISKCTL_MYSQL_PASSWORD")
        if given:
            return given
        if not self.password_file.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            # created with mode 600, not chmod-ed after the write: written with the umask's mode (often 644)
            # first, it was readable by every local user for a moment (found in review)
            with suppress(FileExistsError):  # another process made it first: its password is the one
                fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_urlsafe(18))
        return self.password_file.read_text().strip()

    def healthy(self) -> bool:
        if not port_open(self.host, self.stack.mysql_port):
            return False
        try:
            import pymysql

            conn = pymysql.connect(
                host=self.host,
                port=self.stack.mysql_port,
                user=self.settings.mysql.user,
                password=self.password(),
                connect_timeout=3,
                # a server that accepts but does not answer (stopped, swapping, stuck) hung 'stack status'
                # and 'stack up' for ever: without these, the greeting and the query are waited for unbounded
                read_timeout=3,
                write_timeout=3,
            )
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT @@log_bin, @@binlog_format")
                    row = cur.fetchone()
            finally:
                conn.close()
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        return row is not None and int(row[0]) == 1 and row[1] == "ROW"

    def _server_cmd(self) -> list[str]:
        return [
            self.binary("mariadbd"),
            "--no-defaults",
            "--user=root",
            f"--datadir={self.datadir}",
            f"--port={self.stack.mysql_port}",
            f"--bind-address={self.host}",
            f"--socket={self.socket}",
            f"--pid-file={self.dir / 'mariadbd.pid'}",
            f"--log-error={self.log}",
            f"--log-bin={self.datadir / 'binlog'}",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--server-id=1",
            "--expire-logs-days=2",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=128M",
            "--innodb-log-file-size=48M",
            "--max-connections=300",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ]

    def _start(self) -> None:
        if not (self.datadir / "mysql").is_dir():
            self._install_db()
        out = self.dir / "mariadbd.out"
        spawn(self._server_cmd(), log=out, pid_file=self.pid_files[0], env=self._owned_env())
        if not wait_until(
            lambda: self.socket.exists() and port_open(self.host, self.stack.mysql_port),
            timeout=60,
            abort=lambda: not self.pids(),
        ):
            return  # start() reports it with the log
        self._bootstrap()

    def _install_db(self) -> None:
        """Create the datadir with ``mariadb-install-db`` in ``data.init`` beside it, renamed to ``data`` once
        complete. An init interrupted in place (a crash, a Ctrl-C, a full disk) left a ``data`` with files
        but no ``mysql/`` (an empty ``ibdata1``): every later start ran the init on them again and failed
        ("File ./ib_logfile0 was not found"). A ``data`` without ``mysql/`` never held a database, so what is
        left of it is removed first."""
        init_dir = self.datadir.with_name("data.init")
        for leftover in (init_dir, self.datadir):
            if leftover.exists():
                shutil.rmtree(leftover)
        init_dir.mkdir(parents=True)
        cmd = [
            self.binary("mariadb-install-db"),
            "--no-defaults",
            "--user=root",
            f"--datadir={init_dir}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ]
        # bounded: on a full disk its server waits for free space for ever ('stack up' hung)
        code = run_bounded(cmd, log=self.log, timeout=INSTALL_DB_TIMEOUT)
        if code != 0:
            what = f"failed (exit code {code})"
            if code is None:
                what = f"did not finish in {INSTALL_DB_TIMEOUT:.0f} s"
            msg = f"mariadb-install-db {what}.{low_disk(self.dir)} Its last lines:\n{tail(self.log)}"
            raise ServiceError(self.name, msg, log=str(self.log))
        init_dir.rename(self.datadir)

    def _bootstrap(self) -> None:
        """Create the riskctl database and a password user with the grants Flink CDC needs (idempotent)."""
        user = self.settings.mysql.user
        pw = self.password().replace("\\", "\\\\").replace("'", "\\'")
        sql = f"""
            CREATE DATABASE IF NOT EXISTS `{self.settings.mysql.database}`;
            CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{pw}';
            ALTER USER '{user}'@'%' IDENTIFIED BY '{pw}';
            -- the local stack's application user: everything on this loopback-only server, which includes
            -- the SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE and REPLICATION CLIENT that CDC needs
            GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%';
            FLUSH PRIVILEGES;
        """  # noqa: S608 - values are ours, quoted above
        res = subprocess.run(
            [self.binary("mariadb"), "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise ServiceError(
                self.name, f"creating the riskctl user failed: {res.stderr.strip()}", log=str(self.log)
            )


# --------------------------------------------------------------------------------------------------------
TASKMANAGER_MAIN = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"


class FlinkCluster(Service):
    """A standalone Flink session cluster (one JobManager, ``flink_taskmanagers`` TaskManagers) from the
    pip-installed PyFlink.

    Its home is assembled under ``.stack/flink/home``: the wheel's ``bin``, ``lib`` and ``plugins``, plus
    ``opt/flink-python-*.jar`` copied into ``lib/`` (pemja's native library must be loaded by the cluster's
    class loader, not the job's: FLINK-37727), and a ``conf/config.yaml`` with thread mode, RocksDB and the
    virtualenv's Python.
    """

    name = "flink"
    folder = "flink"
    up_command = "riskctl stack up --flink"
    # the pid is that of 'bash jobmanager.sh start-foreground' until it execs the JVM
    markers = (
        "jobmanager.sh",
        "taskmanager.sh",
        "flink-console.sh",
        "StandaloneSessionClusterEntrypoint",
        "TaskManagerRunner",
    )

    @property
    def ports(self) -> list[int]:
        return [self.stack.flink_rest_port, self.stack.flink_rpc_port]

    @property
    def log(self) -> Path:
        return self.dir / "log" / "jobmanager.out"

    @property
    def pid_files(self) -> list[Path]:
        """The pid files of the JobManager and the TaskManagers, those found beyond the setting included."""
        wanted = {self.dir / f"taskmanager-{i}.pid" for i in range(2, self.stack.flink_taskmanagers + 1)}
        # and those of TaskManagers started with a larger flink_taskmanagers than this process has: a
        # `stack down` without the setting must stop them too
        found = set(self.dir.glob("taskmanager-*.pid"))
        extra = sorted(wanted | found, key=self._taskmanager_index)
        return [self.dir / "jobmanager.pid", self.dir / "taskmanager.pid", *extra]

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.stack.flink_rest_port}"

    def overview(self) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"{self.rest_url}/overview", timeout=3) as resp:  # noqa: S310
                data: dict[str, object] = json.load(resp)
                return data
        except OSError:
            return None

    def healthy(self) -> bool:
        """The REST API answers with the wanted number of TaskManagers and at least one slot."""
        ov = self.overview()
        if not ov:
            return False
        wanted = max(1, self.stack.flink_taskmanagers)
        return int(str(ov.get("taskmanagers", 0))) >= wanted and int(str(ov.get("slots-total", 0))) > 0

    def status(self) -> ServiceStatus:
        """The generic status, with TaskManagers, free slots and running jobs when the cluster runs."""
        st = super().status()
        ov = self.overview() if st.state == "running" else None
        if ov:
            st.detail = (
                f"{ov.get('taskmanagers')} taskmanager(s), {ov.get('slots-available')}/"
                f"{ov.get('slots-total')} slots free, {ov.get('jobs-running')} job(s) running"
            )
        return st

    def _pyflink_dir(self) -> Path:
        import pyflink

        return Path(pyflink.__file__).parent

    def _assemble_home(self) -> None:
        src = self._pyflink_dir()
        home = self.home
        if home.exists():
            shutil.rmtree(home)
        (home / "lib").mkdir(parents=True)
        shutil.copytree(src / "bin", home / "bin")  # a copy, so config.sh takes this folder as FLINK_HOME
        for jar in (src / "lib").glob("*.jar"):
            (home / "lib" / jar.name).symlink_to(jar)
        for jar in (src / "opt").glob("flink-python-*.jar"):
            shutil.copy(jar, home / "lib" / jar.name)
        # a real folder: the client finds flink-python with Files.walkFileTree, which follows no folder link
        (home / "opt").mkdir()
        for jar in (src / "opt").glob("*.jar"):
            (home / "opt" / jar.name).symlink_to(jar)
        (home / "plugins").symlink_to(src / "plugins")
        # MySQL Connector/J in the cluster's class path, loaded once (class-loader leak, see _config_yaml)
        for jar in Path(self.settings.flink.jars_dir).glob(f"{CONNECTOR_J}*.jar"):
            (home / "lib" / jar.name).symlink_to(jar.resolve())
        conf = home / "conf"
        conf.mkdir()
        for f in (src / "conf").iterdir():
            if f.name != "config.yaml":
                shutil.copy(f, conf / f.name)
        (conf / "config.yaml").write_text(self._config_yaml(src))

    @property
    def work_dir(self) -> Path:
        """The working directories of the cluster's processes (``process.working-dir``)."""
        return self.dir / "work"

    def _config_yaml(self, src: Path) -> str:
        import yaml

        default = yaml.safe_load((src / "conf" / "config.yaml").read_text())
        # Connector/J starts a 'mysql-cj-abandoned-connection-cleanup' thread and registers its Driver in
        # DriverManager; loaded by a job's class loader (the CDC enumerator runs in the JobManager), both
        # kept that class loader and all its classes in Metaspace after the job ended: the JobManager died of
        # OutOfMemoryError: Metaspace at the 10th submission. Connector/J now comes from lib/ (parent-first,
        # even though jobs ship it too) and its clean-up thread is off (the job closes its connections).
        java_opts = " ".join([default["env"]["java"]["opts"]["all"], NO_CJ_CLEANUP_THREAD, *JVM_OPTIONS])
        s = self.stack
        python = sys.executable
        cfg = {
            "env": {
                "java": {"opts": {"all": java_opts}},
                "log": {"dir": str(self.dir / "log")},
                "pid": {"dir": str(self.dir / "pids")},
            },
            "jobmanager": {
                "bind-host": s.host,
                "rpc": {"address": s.host, "port": s.flink_rpc_port},
                "memory": {"process": {"size": "1024m"}},
                "execution": {"failover-strategy": "region"},
            },
            "taskmanager": {
                "bind-host": s.host,
                "host": s.host,
                "numberOfTaskSlots": s.flink_slots,
                # network buffers of 4 KB instead of 32 KB: a checkpoint barrier queues behind 8x fewer
                # records in flight, so the first checkpoint after a restore (with exactly-once: the moment
                # decisions become visible) completes sooner (docs/operations.md, bench/results/chaos*.md)
                "memory": {"process": {"size": "2560m"}, "segment-size": NETWORK_SEGMENT_SIZE},
            },
            "rest": {"address": s.host, "bind-address": s.host, "port": s.flink_rest_port},
            "parallelism": {"default": 1},
            "python": {"executable": python, "client": {"executable": python}, "execution-mode": "thread"},
            "state": {
                "backend": {
                    "type": "rocksdb",
                    "incremental": True,
                    "rocksdb": {"timer-service": {"factory": "HEAP"}},  # see riskctl/flink/env.py
                },
                "checkpoints": {"dir": f"file://{self.dir / 'checkpoints'}"},
            },
            # spread a job's slots over the TaskManagers: a kill then takes half of the job, not all of it,
            # and the restart lands on a TaskManager that already holds the job's jars and its Python
            "cluster": {"evenly-spread-out-slots": True},
            # a dead TaskManager is noticed in seconds (riskctl.config.StackSettings, docs/operations.md)
            "heartbeat": {
                "interval": s.flink_heartbeat_interval_ms,
                "timeout": s.flink_heartbeat_timeout_ms,
                "rpc-failure-threshold": s.flink_heartbeat_rpc_failure_threshold,
            },
            "classloader": {"parent-first-patterns": {"additional": ["com.mysql."]}},
            "blob": {"server": {"port": "0"}},
            "taskmanager.data.port": 0,
            # the processes' working directories (blobs, each job's RocksDB) inside the stack's folder, not
            # in /tmp, where every TaskManager ever started left its own
            "process.working-dir": str(self.work_dir),
        }
        # the operator's own keys (stack.flink_config), flat: Flink reads "a.b: v" and nested a: {b: v} alike
        for key, value in parse_options(s.flink_config).items():
            _drop_nested(cfg, key)
            cfg[key] = value
        return yaml.safe_dump(cfg, sort_keys=False)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLINK_CONF_DIR"] = str(self.home / "conf")
        env["FLINK_LOG_DIR"] = str(self.dir / "log")
        env["FLINK_PID_DIR"] = str(self.dir / "pids")
        env["PYTHONPATH"] = python_path()
        default = native.default_for_jobs(env)  # the compiled core for the decide operators, when built
        if default is not None:
            env[native.ENV] = default
        env.pop("_FLINK_HOME_DETERMINED", None)
        env.pop("FLINK_HOME", None)
        return env

    def _restart_parts(self, dead: list[Path], timeout: float) -> bool:
        """A dead JobManager: restart the whole cluster (its jobs died with it; no HA here). Dead
        TaskManagers only: start those again, they register with the running JobManager."""
        if self.pid_files[0] in dead:
            return super()._restart_parts(dead, timeout)
        # the JobManager may still count a killed TaskManager (until its heartbeat times out), or may have
        # dropped it already: wait for the new processes themselves to be registered
        new = {self._spawn_taskmanager(pid_file) for pid_file in dead}

        def died() -> bool:
            return bool(self.dead_parts())

        def registered() -> bool:
            return new <= self.registered_taskmanager_pids() and self.healthy()

        if not wait_until(registered, timeout=timeout, abort=died):
            last = tail(self.log)
            msg = f"restarting {len(dead)} TaskManager(s) failed. Last lines of the log:\n{last}"
            raise ServiceError(self.name, msg, log=str(self.log))
        return True

    @staticmethod
    def _taskmanager_index(pid_file: Path) -> int:
        """n of ``taskmanager-<n>.pid`` (the first TaskManager's file has no number: 1)."""
        return int(pid_file.stem.split("-")[1]) if "-" in pid_file.stem else 1

    def _taskmanager_out(self, pid_file: Path) -> Path:
        i = self._taskmanager_index(pid_file)
        return self.dir / "log" / ("taskmanager.out" if i == 1 else f"taskmanager-{i}.out")

    @property
    def logs(self) -> list[Path]:
        return [self.log, *(self._taskmanager_out(f) for f in self.pid_files[1:])]

    def _spawn_taskmanager(self, pid_file: Path) -> int:
        """Start a TaskManager; with one running, by its own command line (:meth:`_taskmanager_command`)."""
        i = self._taskmanager_index(pid_file)
        out = self._taskmanager_out(pid_file)
        running = self._taskmanager_command()
        if running is not None:
            argv, env, cwd = running
            log_file = self.dir / "log" / f"flink--taskexecutor-r{i}-{socket.gethostname()}.log"
            argv = [f"-Dlog.file={log_file}" if a.startswith("-Dlog.file=") else a for a in argv]
            return spawn(argv, log=out, pid_file=pid_file, env=self._owned_env(env), cwd=cwd)
        return spawn(
            ["bash", str(self.home / "bin" / "taskmanager.sh"), "start-foreground"],
            log=out,
            pid_file=pid_file,
            env=self._owned_env(self._env()),
        )

    def _taskmanager_command(self) -> tuple[list[str], dict[str, str], Path] | None:
        """The JVM command line, environment and folder of a running TaskManager of this stack, if any.

        Flink's start script runs three JVMs before the TaskManager's own (two to parse the configuration, one
        to size the memory): on the loaded 2-core box of the fault suite a replacement took 14.5 s to log its
        first line and 22 s to register. Started from the command line of a running TaskManager, which holds
        the computed JVM options and memory sizes of this very configuration, it skips them.
        """
        for pid in self.taskmanager_pids().values():
            proc = Path("/proc") / str(pid)
            try:
                argv = (proc / "cmdline").read_bytes().decode().split("\0")
                environ = (proc / "environ").read_bytes().decode().split("\0")
                cwd = (proc / "cwd").resolve()
            except (OSError, UnicodeDecodeError):
                continue
            argv = [a for a in argv if a]
            if not argv or TASKMANAGER_MAIN not in argv or not any(a.startswith("-Dlog.file=") for a in argv):
                continue  # not (yet) the JVM: a start script still runs under this pid
            env = dict(kv.split("=", 1) for kv in environ if "=" in kv)
            return argv, env, cwd
        return None

    def _start(self) -> None:
        self._assemble_home()
        # what the cluster's processes left in their working directories (blobs, the RocksDB of the jobs
        # they ran: up to 250 MB a TaskManager) is of no use to a cluster started afresh (no HA, no local
        # recovery)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        for sub in ("log", "pids", "checkpoints"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # start-foreground execs flink-console.sh, which execs the JVM: the pid we record is the JVM's
        bin_dir = self.home / "bin"
        spawn(
            ["bash", str(bin_dir / "jobmanager.sh"), "start-foreground"],
            log=self.dir / "log" / "jobmanager.out",
            pid_file=self.pid_files[0],
            env=self._owned_env(self._env()),
        )
        time.sleep(1.0)
        for pid_file in self.pid_files[1:]:
            self._spawn_taskmanager(pid_file)

    def taskmanager_pids(self) -> dict[Path, int]:
        """The live TaskManager JVMs this stack started, by pid file."""
        return {f: pid for f in self.pid_files[1:] if (pid := read_pid(f)) is not None}

    def start_taskmanager(self) -> int:
        """Start one more TaskManager (a replacement after a crash, or extra capacity); return its pid.

        Its pid file (``taskmanager-<n>.pid``, n above every existing one) is found by :attr:`pid_files`, so
        ``stop()`` and ``riskctl stack down`` stop it too. Returns once the JVM is spawned, not registered:
        wait for :meth:`overview` to count it when that matters.
        """
        if not self.pids():
            msg = "the Flink cluster is not running: start it first ('riskctl stack up --flink')"
            raise ServiceError(self.name, msg, log=str(self.log))
        taken = [self._taskmanager_index(p) for p in self.dir.glob("taskmanager-*.pid")]
        n = max([1, self.stack.flink_taskmanagers, *taken]) + 1
        return self._spawn_taskmanager(self.dir / f"taskmanager-{n}.pid")

    def warm(self, new_pid: int | None = None, timeout: float = 90.0) -> WarmResult:
        """Start the job's Python in the idle TaskManagers (:mod:`riskctl.flink.warm`) and in ``new_pid``, one
        just started.

        When no slot is free anywhere (a job holds them all, as after a TaskManager was lost), the warm-up job
        is submitted at once: its subtask waits for a slot and so runs on ``new_pid`` the moment it registers
        (10-15 s on the loaded box of the fault suite), the job built meanwhile. With free slots elsewhere the
        subtask would take one of those: then it waits for ``new_pid`` to register first, and Flink's
        spreading puts the subtasks on the idle TaskManagers, the least used.
        """
        from riskctl.flink.warm import idle_of, taskmanagers, warm

        started = time.monotonic()
        listed = taskmanagers(self.rest_url)  # one look: the new one is either in it or still starting

        # Registered is not enough: a TaskManager's slots come in a second message (its slot report), and
        # one listed with 0 slots is not idle. The warm-up then asked for one subtask too few, and the
        # subtask meant for an idle TaskManager went to the new one (CI at b7653c0).
        def has_slots(tms: list[dict[str, object]]) -> bool:
            return any(
                self.taskmanager_pid(str(t["id"])) == new_pid and int(str(t.get("slotsNumber", 0))) > 0
                for t in tms
            )

        def reported() -> bool:
            nonlocal listed
            with suppress(ServiceError):
                listed = taskmanagers(self.rest_url)
                return has_slots(listed)
            return False

        if new_pid is not None and not has_slots(listed):
            if not sum(int(t.get("freeSlots", 0)) for t in listed):
                return warm(self.rest_url, idle=idle_of(listed), expect=1, timeout_s=timeout)
            if not wait_until(reported, timeout=timeout):
                msg = f"TaskManager pid {new_pid} did not register its slots within {timeout:.0f} s"
                raise ServiceError(self.name, msg, log=str(self.log))
        left = max(1.0, timeout - (time.monotonic() - started))
        return warm(self.rest_url, idle=idle_of(listed), timeout_s=left)

    def kill_taskmanager(self, pid: int) -> None:
        """``kill -9`` one TaskManager JVM of this stack (a crash, for fault tests); forget its pid file."""
        owned = {p: f for f, p in self.taskmanager_pids().items()}
        if pid not in owned:
            msg = f"pid {pid} is not a running TaskManager of this stack (running: {sorted(owned)})"
            raise ServiceError(self.name, msg, log=str(self.log))
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), timeout=10)
        owned[pid].unlink(missing_ok=True)

    def registered_taskmanager_pids(self) -> set[int]:
        """The pids of this stack's TaskManagers that the JobManager lists as registered (REST)."""
        try:
            with urllib.request.urlopen(f"{self.rest_url}/taskmanagers", timeout=3) as resp:  # noqa: S310
                listed = json.load(resp).get("taskmanagers", [])
        except (OSError, ValueError):
            return set()
        return {pid for t in listed if (pid := self.taskmanager_pid(str(t.get("id", "")))) is not None}

    def taskmanager_pid(self, taskmanager_id: str) -> int | None:
        """The pid of a TaskManager from its REST id (``host:rpcport-suffix``): who listens on that port."""
        try:
            port = int(taskmanager_id.split(":", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            return None
        pid = listening_pid(port)
        return pid if pid in self.taskmanager_pids().values() else None

    def flink_bin(self) -> Path:
        return self.home / "bin" / "flink"

    def run_env(self) -> dict[str, str]:
        """Environment for ``bin/flink run`` against this cluster."""
        return self._env()


def _drop_nested(cfg: dict[str, object], dotted: str) -> None:
    """Remove ``a: {b: {c: ...}}`` for the key ``a.b.c`` so that a flat key given for it is the only one."""
    *parents, leaf = dotted.split(".")
    node: object = cfg
    for part in parents:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(leaf, None)


def services(settings: Settings, *, flink: bool) -> list[Service]:
    """The stack's services in start order: Kafka, MariaDB, and the Flink cluster when ``flink``."""
    out: list[Service] = [Kafka(settings), MariaDB(settings)]
    if flink:
        out.append(FlinkCluster(settings))
    return out
