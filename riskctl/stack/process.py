"""Small process helpers for the local stack: daemons with pid files, port probes, waiting."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> str | None:
    """A best-effort description of the process listening on ``port`` (via /proc), for error messages."""
    try:
        pid = listening_pid(port)
    except OSError:
        return None
    if pid is None:
        return None
    return f"pid {pid}: {(cmdline(pid) or '')[:120].strip()}"


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on ``port`` on this machine (via /proc), or None."""
    inode = _listening_inode(port)
    if inode is None:
        return None
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == f"socket:[{inode}]" for fd in (pid_dir / "fd").iterdir()):
                return int(pid_dir.name)
        except OSError:
            continue
    return None


def _listening_inode(port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return inode
    return None


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0): look at its state
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str | None:
    """The command line of ``pid`` (arguments joined by spaces), or None when it cannot be read.

    An empty one is None too: Popen returns once the child's exec has begun, and for a moment after, the
    new program's arguments are not in place yet and /proc/PID/cmdline reads empty (a just-spawned service
    was taken for dead and started again: CI, 2026-12-03). Kernel threads, which have none, read empty too.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None


#: the flag of a kernel thread in /proc/PID/stat (include/linux/sched.h)
PF_KTHREAD = 0x00200000


def kernel_thread(pid: int) -> bool:
    """True when ``pid`` is a kernel thread (a kworker, kthreadd): no program of anyone's, no command line."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return bool(int(fields[6]) & PF_KTHREAD)
    except (OSError, IndexError, ValueError):
        return False


def environ_value(pid: int, name: str) -> str | None:
    """The value of ``name`` in the environment ``pid`` started with; None when absent or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def same_user(pid: int) -> bool:
    """True when ``pid`` runs as this process's user (its real uid): the only processes the stack may take
    for its own and signal. The owner of /proc/PID is not used: it reads root for a process that is not
    dumpable, whoever runs it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1]) == os.getuid()
    except (OSError, IndexError, ValueError):
        pass
    return False


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat), or None: a pid that was reused by
    another process reads another start time."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive; None for a missing, unreadable or stale file."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def spawn(
    cmd: Sequence[str],
    *,
    log: Path,
    pid_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``cmd`` detached (own session, stdin closed, output appended to ``log``); record its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def run_bounded(cmd: Sequence[str], *, log: Path, timeout: float) -> int | None:
    """Run ``cmd`` in a session of its own, its output in ``log`` (truncated first); its exit code, or None
    when it had not finished after ``timeout`` seconds: then its whole process group is killed (a script's
    children too, e.g. the server that mariadb-install-db runs, which waits for ever on a full disk)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        assert proc is not None  # noqa: S101 - only wait() times out
        terminate(proc.pid, timeout=0)
        proc.wait()
        return None
    except BaseException:
        # a Ctrl-C reaches this process's group only: its own session would outlive it and go on writing
        if proc is not None:
            terminate(proc.pid, timeout=0)
        raise


#: below this much free space a failed start says that the disk is (nearly) full
LOW_DISK_BYTES = 256 * 1024 * 1024


def low_disk(path: Path) -> str:
    """ "" or a sentence saying that the disk holding ``path`` is (nearly) full, for error messages."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return ""
    if free >= LOW_DISK_BYTES:
        return ""
    return f" Only {free // (1024 * 1024)} MB are free on the disk of {path}: free some space and retry."


#: what :func:`terminate` did: the process ended on SIGTERM (or was gone already), it needed SIGKILL, or it
#: still runs (even SIGKILL did not end it within 5 s: stuck in the kernel; or it may not be signalled)
ENDED, KILLED, ALIVE = "ended", "killed", "alive"


def terminate(pid: int, timeout: float = 20.0) -> str:
    """SIGTERM the process group of ``pid``, then SIGKILL whatever is left after ``timeout`` seconds; return
    :data:`ENDED`, :data:`KILLED` or :data:`ALIVE`.

    A ``pid`` that leads no process group (not started in a session of its own) is signalled alone.
    """
    for sig, wait, outcome in ((signal.SIGTERM, timeout, ENDED), (signal.SIGKILL, 5.0, KILLED)):
        if not _signal(pid, sig):
            return ALIVE
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid) and not _group_alive(pid):
                return outcome
            time.sleep(0.1)
    _reap(pid)
    return KILLED if not pid_alive(pid) and not _group_alive(pid) else ALIVE


def _signal(pid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group of ``pid``, or to ``pid`` alone when it leads none; False when that is not
    permitted (a process of another user)."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        pass  # no group of that id: pid (if it still runs) is not a group leader
    except PermissionError:
        pass
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    return True


def exit_status(pid: int) -> str | None:
    """How a child process of this one ended ("exit code N" / "killed by SIGNAME"), or None when unknown.

    Only a child that has not been reaped yet can tell; for any other process this answers None.
    """
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if waited == 0:
        return None
    code = os.waitstatus_to_exitcode(status)
    return f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_until(
    check: Callable[[], bool], timeout: float, interval: float = 0.2, abort: Callable[[], bool] | None = None
) -> bool:
    """Poll ``check`` until it is true (True), ``abort`` is true or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if abort is not None and abort():
            return False
        time.sleep(interval)
    return check()


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read), for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LockTimeout(Exception):
    """:func:`locked` waited its time and another process still holds the lock (``holder``: who it is)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


#: the locks this process holds, by thread and path: (open file, depth), so that a holder may take its own
#: lock again; another thread opens the file anew and waits like another process (flock is per open file)
_held: dict[tuple[int, str], tuple[int, int]] = {}


#: how long a process waiting for a lock looks for the holder's line in the lock file (the holder writes it
#: just after taking the lock) before it tells that it waits without naming the holder
HOLDER_GRACE = 1.0


@contextmanager
def locked(
    path: Path, timeout: float, interval: float = 0.2, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when missing) for the block; reentrant in a process.

    The lock dies with its process (a ``kill -9`` leaves no stale lock). Another process holding it is
    waited for up to ``timeout`` seconds, then :class:`LockTimeout` names it (the holder writes its pid and
    command line into the file, and empties it when it lets go). ``on_wait`` is called once, with what the
    holder wrote ("" when unknown), when the lock is not free at once: a command that waits says so.
    """
    key = (threading.get_ident(), str(path))
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            _held[key] = (fd, depth)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waiting_since: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                holder = os.pread(fd, 300, 0).decode(errors="replace").strip()
                if on_wait is not None:
                    waiting_since = now if waiting_since is None else waiting_since
                    # the line of a holder that has just taken the lock may not be written yet: told as soon
                    # as it is (a live pid), else after a moment without it
                    if _live_holder(holder) or now - waiting_since >= HOLDER_GRACE or now >= deadline:
                        on_wait(holder if _live_holder(holder) else "")
                        on_wait = None
                if now >= deadline:
                    raise LockTimeout(holder) from None
                time.sleep(interval)
        try:  # who holds it, for the message of a process that waits in vain (best effort: a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {(cmdline(os.getpid()) or '')[:200]}".encode(), 0)
        except OSError:
            pass
        _held[key] = (fd, 1)
        try:
            yield
        finally:
            del _held[key]
            try:  # no line of a holder that has let go: a waiting process would name it
                os.ftruncate(fd, 0)
            except OSError:
                pass
    finally:
        os.close(fd)  # closing the file releases the lock


_HOLDER = re.compile(r"pid (\d+):\s*(.*)", re.DOTALL)


def _live_holder(holder: str) -> bool:
    """True when ``holder`` (a lock file's line) names a process that runs."""
    m = _HOLDER.fullmatch(holder)
    return m is not None and pid_alive(int(m.group(1)))


def describe_holder(holder: str) -> str:
    """Who holds a lock, for a message: "pid N (COMMAND)" from the holder's line ("pid N: command line"),
    riskctl's own command shortened to "riskctl ARGS"; "another process" when the line is unknown."""
    m = _HOLDER.fullmatch(holder.strip())
    if m is None:
        return "another process"
    pid, command = m.group(1), m.group(2).strip()
    words = command.split()
    for i, word in enumerate(words):
        if os.path.basename(word) == "riskctl" or word == "riskctl.cli.main":
            command = " ".join(["riskctl", *words[i + 1 :]])
            break
    if len(command) > 100:
        command = command[:99] + "…"
    return f"pid {pid} ({command})" if command else f"pid {pid}"
