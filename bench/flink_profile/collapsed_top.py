"""Summarise async-profiler collapsed stacks (``threads`` mode): CPU per thread, then self and inclusive
frames of the threads whose name starts with a prefix.

    .venv/bin/python bench/flink_profile/collapsed_top.py .cache/profile/job.collapsed [THREAD_PREFIX] [N]
"""

from __future__ import annotations

import collections
import sys


def main(argv: list[str]) -> int:
    path = argv[0]
    prefix = argv[1] if len(argv) > 1 else ""
    top = int(argv[2]) if len(argv) > 2 else 40
    threads: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    selected = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            threads[frames[0][:90]] += n
            if prefix and frames[0].startswith("[" + prefix):
                selected += n
                self_time[frames[-1]] += n
                for frame in set(frames[1:]):
                    inclusive[frame] += n
    total = sum(threads.values()) or 1
    print(f"{total} samples")
    for name, n in threads.most_common(15):
        print(f"{n / total * 100:5.1f}%  {name}")
    if prefix:
        print(f"\nthreads starting with {prefix!r}: {selected} samples\n-- self")
        for frame, n in self_time.most_common(top):
            print(f"{n / max(selected, 1) * 100:5.1f}%  {frame[:140]}")
        print("-- inclusive")
        for frame, n in inclusive.most_common(top):
            print(f"{n / max(selected, 1) * 100:5.1f}%  {frame[:140]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
