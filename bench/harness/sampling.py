"""CPU time and resident memory of the processes of a run, read from ``/proc`` once a second."""

from __future__ import annotations

import os
import platform
import random
import re
import threading
import time
from collections.abc import Iterator
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


def _thread_group(name: str) -> str:
    """A thread's name without its numbers (``rocksdb:low1`` and ``rocksdb:low0`` are one group)."""
    return re.sub(r"[0-9]+", "", name).strip(" -#") or name


def session_jvms(session: int | None) -> list[int]:
    """The JVMs among the processes of ``session`` (none without a session)."""
    if session is None:
        return []
    return [pid for pid in session_pids(session) if (p := proc_stat(pid)) is not None and p[0] == "java"]


def _threads(pid: int) -> Iterator[tuple[str, tuple[str, float, list[str]]]]:
    """(thread id, :func:`_stat` of it) of each live thread of ``pid``; nothing when the process is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        st = _stat(f"/proc/{pid}/task/{tid}/stat")
        if st is not None:
            yield tid, st


def process_threads(pid: int) -> dict[str, float]:
    """CPU seconds so far of the live threads of ``pid``, summed by thread name (names may hold spaces);
    empty when the process is gone."""
    out: dict[str, float] = {}
    for _, st in _threads(pid):
        out[st[0]] = out.get(st[0], 0.0) + st[1]
    return out


def threads_cpu(session: int | None) -> dict[str, float]:
    """CPU seconds so far per thread group (names without numbers; Linux keeps 15 characters of a name) of
    the JVMs of ``session``."""
    out: dict[str, float] = {}
    for pid in session_jvms(session):
        for name, cpu in process_threads(pid).items():
            group = _thread_group(name)
            out[group] = out.get(group, 0.0) + cpu
    return out


def thread_cpu(session: int | None, prefix: str) -> float | None:
    """CPU seconds so far of the threads whose name starts with ``prefix`` in the processes of ``session``
    (Flink names a task's thread after the task: ``decide -> ...``; Linux keeps its first 15 characters), or
    None when there is none."""
    groups = {name: cpu for name, cpu in threads_cpu(session).items() if name.startswith(prefix)}
    return sum(groups.values()) if groups else None


def thread_schedule(session: int | None, prefix: str) -> tuple[float, float] | None:
    """(seconds on a core, seconds runnable but waiting for one) so far of the threads whose name starts with
    ``prefix`` in the JVMs of ``session`` (``/proc/<pid>/task/<tid>/schedstat``), or None when there is none.
    A thread that waits for a core while it has work is held back by the machine, not by its own code."""
    on = waiting = 0.0
    found = False
    for pid in session_jvms(session):
        for tid, st in _threads(pid):
            if not st[0].startswith(prefix):
                continue
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                on, waiting = on + int(fields[0]) / 1e9, waiting + int(fields[1]) / 1e9
            except (OSError, IndexError, ValueError):
                continue
            found = True
    return (on, waiting) if found else None


def waiting_share(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Of the time between two :func:`thread_schedule` readings that the threads had work, the share they
    spent waiting for a core (0..1), or None."""
    if before is None or after is None:
        return None
    on, waiting = after[0] - before[0], after[1] - before[1]
    return None if on + waiting <= 0 else waiting / (on + waiting)


#: HotSpot's JIT compiler threads (``C1 CompilerThre``, ``C2 CompilerThre``; numbers dropped)
JIT_GROUP = "C CompilerThre"
#: above this share of a JVM's CPU for its JIT compilers, a sustained figure is flagged as not warm
JIT_WARM_SHARE = 0.05


def jit_share(before: dict[str, float], after: dict[str, float]) -> float | None:
    """The JIT compilers' share of the JVMs' CPU between two :func:`threads_cpu` readings (0..1), or None
    without any CPU spent. A JVM still compiling runs slower than it will once warm."""
    total = sum(after.values()) - sum(before.values())
    if total <= 0:
        return None
    return (after.get(JIT_GROUP, 0.0) - before.get(JIT_GROUP, 0.0)) / total


def per_event_us(
    before: dict[str, float], after: dict[str, float], events: int, top: int = 8
) -> dict[str, float]:
    """CPU microseconds per event of each thread group between two :func:`threads_cpu` readings, the
    ``top`` largest, the rest summed as ``other``, and the ``total``."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])
    out = {name: round(cpu / events * 1e6, 1) for name, cpu in ranked[:top]}
    out["other"] = round(sum(cpu for _, cpu in ranked[top:]) / events * 1e6, 1)
    out["total"] = round(sum(spent.values()) / events * 1e6, 1)
    return out


class Sampler(threading.Thread):
    """Once a second: CPU time and RSS of named processes (a role each) and of a contender's whole session."""

    def __init__(self, roles: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.roles = dict(roles)
        self.session: int | None = None
        self.samples: list[tuple[float, dict[str, tuple[float, int]]]] = []
        self.stop_flag = threading.Event()

    def add_roles(self, roles: dict[str, int]) -> None:
        """Sample these processes too from now on (a service started during the run)."""
        self.roles = {**self.roles, **roles}  # a new dict: the sampling thread iterates the one it read

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


#: bench/floor.py's levels (PyFlink's floor, no riskctl code) on the quiet box of 2026-12-02 by which issue
#: 14's targets were set (``../shared/perf/floor_ladder.py``), us per record
REFERENCE_FLOOR_US = {0: 13.5, 1: 30.0, 2: 32.0, 3: 34.0}
#: what the Python function of each of those levels does
FLOOR_LEVELS = {
    0: "nothing (called, yields nothing)",
    1: "+ reads and writes a pickled ValueState of 600 bytes",
    2: "+ yields one Row of three strings",
    3: "+ orjson loads and dumps",
}


def calibrate() -> float:
    """Seconds for a fixed pure-Python loop (best of three), to compare runs across machines and loads: the
    box is shared, and its speed for the same code has varied by a third between hours.

    The loop runs in a function, as the engine's code does: the same loop at a module's top level (``python
    -c``) reads and writes its variables in a dict and takes about 2.5 times as long, so only figures taken
    this way compare.
    """
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        s = 0
        for i in range(3_000_000):
            s += i
        best = min(best, time.perf_counter() - t)
    return best


def calibrate_memory(n: int = 1_000_000) -> float:
    """Seconds for ``n`` lookups at random keys of a dict of ``n`` one-element lists, each read through
    (best of three): the objects lie scattered over some 150 MB, so nearly every step misses the CPU's caches,
    as the engine's walk over many users' state does. :func:`calibrate`'s loop stays in the first-level cache
    and misses what other tenants of a shared box do to the memory (2026-12-07: that loop 1.3 times its quiet
    figure, the job and the plain loop 2-2.6 times slower).
    """
    rng = random.Random(7)
    keys = [rng.getrandbits(62) for _ in range(n)]
    table = {k: [k] for k in keys}
    rng.shuffle(keys)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        s = 0
        for k in keys:
            s += table[k][0]
        best = min(best, time.perf_counter() - t)
    return best


def speed(at: str = "") -> dict[str, float]:
    """Both probes of the box's speed, under keys ending ``at`` (``""`` at a run's start, ``"_end"`` at its
    end), as bench.json's ``machine`` holds them."""
    return {
        f"calibration{at}_s": round(calibrate(), 3),
        f"calibration_memory{at}_s": round(calibrate_memory(), 3),
    }


def machine() -> dict[str, Any]:
    """The machine a run's figures come from: cores, load at the start, its speed (:func:`calibrate`,
    :func:`calibrate_memory`), Python, platform, memory."""
    return {
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
        **speed(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mem_total_mb": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**20),
    }
