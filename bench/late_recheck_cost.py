"""What one late event's re-check of condition rules costs with a rule at the features' read bound.

    .venv/bin/python bench/late_recheck_cost.py [TREE ...] [--rounds 5]

One user, one rule (``applies_to: [login]``) whose ``distinct_count`` reads ``MAX_FEATURE_READS`` (100,000)
values an event: 100 buckets of 1,000 ips filled by 100,000 page views, then 32 logins (the later events the
re-check remembers), then a login 1 s older than them (late, within the lateness of 5 s). CPU ms of that one
late event (``time.process_time``), ``--rounds`` times on a copy of the same state, for each TREE (a checkout:
``git archive REV | tar -x -C DIR``; default: this one). The filled state is built once (a few minutes: each
page view computes the feature) and kept in ``.cache/bench/late-recheck-state.pkl``; the trees share it, as
the features' stored layout is the same.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".cache" / "bench" / "late-recheck-state.pkl"

_CHILD = """
import copy, pickle, sys, time
tree, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, tree)
from riskctl.core.engine import Engine
from riskctl.core.rules import load_rules_text
from riskctl.core.state import InMemoryKeyedState
T0 = 1_700_000_000_000
RULE = (
    "id: heavy\\naction: REVIEW\\napplies_to: [login]\\nfeatures:\\n  ips: {kind: distinct_count, field: ip, "
    "window: 100s, granularity: 1s, max_values: 1000}\\nwhen: ips >= 100000\\n"
)
engine = Engine(load_rules_text(RULE), lateness=5000)
base = T0 + 100_000
try:
    with open(path, "rb") as f:
        data = pickle.load(f)
except FileNotFoundError:
    state = InMemoryKeyedState()
    for k in range(100_000):
        s, v = divmod(k, 1000)
        event = {"event_id": f"f{k}", "user_id": "u", "type": "page_view", "ts": T0 + s * 1000 + v}
        engine.process(state, {**event, "ip": f"{s}.{v}"})
    for i in range(32):
        login = {"event_id": f"n{i}", "user_id": "u", "type": "login", "ts": base + 4000 + i, "ip": "a"}
        engine.process(state, login)
    data = state.data
    with open(path, "wb") as f:
        pickle.dump(data, f)
times = []
for r in range(rounds):
    state = InMemoryKeyedState(copy.deepcopy(data))
    late = {"event_id": f"l{r}", "user_id": "u", "type": "login", "ts": base + 3000, "ip": "b"}
    t = time.process_time()
    engine.process(state, late)
    times.append((time.process_time() - t) * 1000)
print(" ".join(f"{x:.1f}" for x in times))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="*", type=Path, default=[ROOT])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    STATE.parent.mkdir(parents=True, exist_ok=True)
    for tree in args.trees:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tree.resolve()), str(STATE), str(args.rounds)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"{tree}: one late event, CPU ms per round: {out}")


if __name__ == "__main__":
    main()
