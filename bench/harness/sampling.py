"""CPU time and resident memory of the processes of a run, read from ``/proc`` once a second."""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(path: str) -> tuple[str, float, list[str]] | None:
    """(name, cpu seconds, the fields after the name) of a ``/proc/.../stat`` file, or None when it is gone.
    The name is read between the first '(' and the last ')': it may hold spaces and parentheses."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2 :].split()
    return stat[stat.index("(") + 1 : stat.rindex(")")], (int(rest[11]) + int(rest[12])) / CLK, rest


def proc_stat(pid: int) -> tuple[str, int, float, int] | None:
    """(comm, session id, cpu seconds, rss bytes) of a process, or None when it is gone."""
    st = _stat(f"/proc/{pid}/stat")
    if st is None:
        return None
    comm, cpu, rest = st
    return comm, int(rest[3]), cpu, int(rest[21]) * PAGE


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (a process started with start_new_session leads one: its pid)."""
    return [
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and (p := proc_stat(int(entry))) is not None and p[1] == sid
    ]


def thread_cpu(session: int | None, prefix: str) -> float | None:
    """CPU seconds so far of the threads whose name starts with ``prefix`` in the processes of ``session``
    (Flink names a task's thread after the task: ``decide -> ...``; Linux keeps its first 15 characters), or
    None when there is none."""
    if session is None:
        return None
    total, found = 0.0, False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        p = proc_stat(int(entry))
        if p is None or p[1] != session or p[0] != "java":
            continue
        try:
            tids = os.listdir(f"/proc/{entry}/task")
        except OSError:
            continue
        for tid in tids:
            st = _stat(f"/proc/{entry}/task/{tid}/stat")
            if st is not None and st[0].startswith(prefix):
                total += st[1]
                found = True
    return total if found else None


class Sampler(threading.Thread):
    """Once a second: CPU time and RSS of named processes (a role each) and of a contender's whole session."""

    def __init__(self, roles: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.roles = dict(roles)
        self.session: int | None = None
        self.samples: list[tuple[float, dict[str, tuple[float, int]]]] = []
        self.stop_flag = threading.Event()

    def watch_session(self, sid: int | None) -> None:
        self.session = sid

    def _snapshot(self) -> dict[str, tuple[float, int]]:
        out: dict[str, tuple[float, int]] = {}
        for role, pid in self.roles.items():
            p = proc_stat(pid)
            if p is not None:
                out[role] = (p[2], p[3])
        if self.session is not None:
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                p = proc_stat(int(entry))
                if p is None or p[1] != self.session:
                    continue
                role = "contender " + ("JVM" if p[0] == "java" else p[0])
                cpu, rss = out.get(role, (0.0, 0))
                out[role] = (cpu + p[2], rss + p[3])
        return out

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.samples.append((time.monotonic(), self._snapshot()))
            self.stop_flag.wait(1.0)

    def window(self, t0: float, t1: float) -> dict[str, dict[str, float]]:
        """Average CPU (% of one core) and peak RSS (MB) per role between two monotonic times."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        roles = {role for _, snap in inside for role in snap}
        out: dict[str, dict[str, float]] = {}
        for role in sorted(roles):
            seen = [(t, snap[role]) for t, snap in inside if role in snap]
            if len(seen) < 2:
                continue
            (ta, (cpu_a, _)), (tb, (cpu_b, _)) = seen[0], seen[-1]
            out[role] = {
                "cpu_pct": round((cpu_b - cpu_a) / (tb - ta) * 100, 1),
                "rss_mb_peak": round(max(rss for _, (_, rss) in seen) / 2**20, 1),
                "seconds": round(tb - ta, 1),
            }
        return out

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=5)


def machine() -> dict[str, Any]:
    """The machine a run's figures come from: cores, load at the start, Python, platform, memory."""
    return {
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mem_total_mb": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**20),
    }
