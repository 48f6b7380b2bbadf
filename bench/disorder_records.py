"""The records and the sequences' overflow of the pure engine over a disordered stream, for comparing trees.

    .venv/bin/python bench/disorder_records.py [TREE] [--users 5] [--events 30000] [--late 0.5]
        [--spread 4000] [--speed 100]

``bench/engine_bench.py``'s workload of ``--users`` users, its event time sped up ``--speed`` times (100:
about 40 events/s per user with 5 users), then a share ``--late`` of the events delayed by up to ``--spread``
ms (within the lateness of 5 s) and the stream fed in arrival order. Prints one JSON line: the number of
records, a digest of all of them (in order), the count per action or alert reason, ``pattern_overflow``, the
CPU seconds. Run it on two trees (``git archive REV | tar -x -C DIR``) and compare the digests: a change that
keeps the decisions keeps the digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--late", type=float, default=0.5, help="the share of the events delayed")
    ap.add_argument("--spread", type=int, default=4_000, help="the most an event is delayed, ms")
    ap.add_argument("--speed", type=float, default=100.0, help="event time sped up this many times")
    args = ap.parse_args()
    tree = str(args.tree.resolve())
    sys.path.insert(0, tree)
    sys.path.insert(0, tree + "/bench")
    import engine_bench  # the tree's own

    from riskctl.core.engine import Engine
    from riskctl.core.rules import load_rules
    from riskctl.core.runner import LocalRunner

    events = engine_bench.generate(args.events, args.users, 7)
    t0 = events[0]["ts"]
    for e in events:
        e["ts"] = t0 + int((e["ts"] - t0) / args.speed)
    rng = random.Random(3)
    arrivals = []
    for i, e in enumerate(events):
        delay = rng.randrange(args.spread) if rng.random() < args.late else 0
        arrivals.append((e["ts"] + delay, i, e))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    engine = Engine(load_rules(Path(tree) / "rules"), lateness=5_000)
    runner = LocalRunner(engine)
    digest = hashlib.sha256()
    kinds: dict[str, int] = {}
    n = 0
    start = time.process_time()
    for _, _, e in arrivals:
        for record in runner.feed(e):
            n += 1
            digest.update(json.dumps(record.to_dict(), sort_keys=True, default=str).encode())
            kind = getattr(record, "action", None) or f"alert:{getattr(record, 'reason', None)}"
            kinds[kind] = kinds.get(kind, 0) + 1
    cpu = time.process_time() - start
    out = {"records": n, "digest": digest.hexdigest()[:16], "kinds": kinds}
    out |= {"pattern_overflow": engine.pattern_overflow, "cpu_s": round(cpu, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
