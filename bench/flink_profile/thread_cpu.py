"""CPU of a process's threads over a few seconds, summed by thread name (/proc; names may hold spaces).

    .venv/bin/python bench/flink_profile/thread_cpu.py <pid of the job's JVM> 10

Prints the process's CPU ticks (100 per second of one core) and the live threads' sum (a gap means threads
that ended during the window), then the busiest thread names.
"""

from __future__ import annotations

import collections
import os
import sys
import time


def threads(pid: int) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()  # noqa: SIM115, PTH123
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        out[stat[stat.index("(") + 1 : stat.rindex(")")]] += int(rest[11]) + int(rest[12])
    return out


def process(pid: int) -> int:
    stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115, PTH123
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def main() -> None:
    pid, seconds = int(sys.argv[1]), float(sys.argv[2])
    a, pa = threads(pid), process(pid)
    time.sleep(seconds)
    b, pb = threads(pid), process(pid)
    delta = collections.Counter({name: b[name] - a.get(name, 0) for name in b})
    print(f"process {pb - pa} ticks, live threads {sum(delta.values())} ticks, over {seconds:g} s")
    for name, ticks in delta.most_common(12):
        print(f"{ticks:6d} {name}")


if __name__ == "__main__":
    main()
