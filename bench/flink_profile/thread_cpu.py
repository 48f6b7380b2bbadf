"""CPU of a process's threads over a few seconds, summed by thread name (names may hold spaces).

    .venv/bin/python bench/flink_profile/thread_cpu.py <pid of the job's JVM> 10

Prints the process's CPU seconds and the live threads' sum (a gap means threads that ended during the
window), then the busiest thread names.
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.sampling import proc_stat, process_threads  # noqa: E402


def threads(pid: int) -> collections.Counter[str]:
    return collections.Counter(process_threads(pid))


def process(pid: int) -> float:
    st = proc_stat(pid)
    if st is None:
        raise SystemExit(f"no process {pid}")
    return st[2]


def main() -> None:
    pid, seconds = int(sys.argv[1]), float(sys.argv[2])
    a, pa = threads(pid), process(pid)
    time.sleep(seconds)
    b, pb = threads(pid), process(pid)
    delta = collections.Counter({name: b[name] - a.get(name, 0) for name in b})
    print(f"process {pb - pa:.2f} CPU s, live threads {sum(delta.values()):.2f} CPU s, over {seconds:g} s")
    for name, cpu in delta.most_common(12):
        print(f"{cpu:7.2f} {name}")


if __name__ == "__main__":
    main()
