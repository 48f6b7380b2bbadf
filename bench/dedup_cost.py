"""What the engine's deduplication (job.dedup, riskctl/core/dedup.py) costs per event, by mode.

    .venv/bin/python bench/dedup_cost.py [--rounds 5] [--events 60000] [--out bench/results/dedup-cost.md]

``bench/engine_bench.py``'s workload and rules, lateness 5 s, ``tune_gc()``; each round runs every mode once,
in turn, each in a fresh process (two timed passes, the better kept), so the box's load hits all alike; CPU
time per event, min / median / max over the rounds. The modes: ``off``; ``api`` (the job's default) on
events from Kafka (no ``reply_to``: nothing checked); ``api`` on the API's events (every event carries a
``reply_to``, so every one is digested, looked up and remembered); ``all``. With ``RISKCTL_NATIVE_CORE``
set, the compiled core. Every mode must give the same records (no event of the workload repeats): checked.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/bench")
import engine_bench as eb
from riskctl.core import engine, native
from riskctl.core.runner import tune_gc
mode, n = sys.argv[2], int(sys.argv[3])
window = 0 if mode == "off" else 600_000
events = eb.generate(n, 10_000)
if mode == "api-replies":
    events = [{**e, "reply_to": "api-0"} for e in events]
orig = engine.Engine.__init__
def init(self, *a, **k):
    k["dedup_window"] = window
    k["dedup_all"] = mode == "all"
    orig(self, *a, **k)
engine.Engine.__init__ = init
tune_gc()
best = None
for _ in range(2):
    elapsed, _runner, counts = eb.run(events, 5_000)
    best = elapsed if best is None else min(best, elapsed)
print(json.dumps({"us": best / n * 1e6, "counts": counts, "core": native.status}))
"""

MODES = ("off", "api", "api-replies", "all")
LABELS = {
    "off": "`off`",
    "api": "`api` (default), events from Kafka",
    "api-replies": "`api` (default), events of the API (`reply_to`)",
    "all": "`all`",
}


def measure(mode: str, events: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), mode, str(events)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--out", default=None, help="write the table (markdown) here too")
    args = ap.parse_args()
    us: dict[str, list[float]] = {m: [] for m in MODES}
    records: dict[str, object] = {}
    core = ""
    for r in range(args.rounds):
        for mode in MODES:
            got = measure(mode, args.events)
            us[mode].append(float(got["us"]))  # type: ignore[arg-type]
            records[mode] = got["counts"]
            core = str(got["core"])
            print(f"round {r + 1} {mode}: {us[mode][-1]:.1f} µs/event", file=sys.stderr)
    assert all(records[m] == records["off"] for m in MODES), records
    lines = [
        f"`bench/dedup_cost.py --rounds {args.rounds} --events {args.events}` ({core} core, "
        f"load average at start {os.getloadavg()[0]:.2f})",
        "",
        "| job.dedup | µs/event CPU (min / median / max) | against off (median) |",
        "|---|---|---|",
    ]
    base = statistics.median(us["off"])
    for mode in MODES:
        v = us[mode]
        med = statistics.median(v)
        lines.append(f"| {LABELS[mode]} | {min(v):.1f} / {med:.1f} / {max(v):.1f} | {med - base:+.1f} |")
    lines += ["", f"records (identical in every mode): {json.dumps(records['off'])}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
