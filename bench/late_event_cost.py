"""What one late event costs the pure engine against one in order: the amplification a producer that stamps
its events late gets.

    .venv/bin/python bench/late_event_cost.py [--events 20000] [--rounds 3] [--out FILE.md]

The rules in ``rules/``, lateness 5 s, one user. The user first sends 40 events 100 ms apart (the sequences'
buffers and the late re-check's memory fill up), then either ``--events`` more in order, 100 ms apart, or as
many stamped 3 s behind its newest event (within the lateness: each one is recorded, replayed by the
sequences and re-checked against the newer events). CPU µs per event (``time.process_time``), each arm in the
same process, alternating, ``--rounds`` times; then the share of the late arm's time in the sequences' replay
and in the late re-check (cProfile, one pass; not with the compiled core, ``RISKCTL_NATIVE_CORE``). Event
types cycle through login, transfer, payment, order and password_change.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from riskctl.core import native  # noqa: E402
from riskctl.core.engine import Engine  # noqa: E402
from riskctl.core.rules import load_rules  # noqa: E402
from riskctl.core.state import InMemoryKeyedState  # noqa: E402

KINDS = ("login", "transfer", "payment", "order", "password_change")
BASE_TS = 1_700_000_000_000


def _event(i: int, ts: int) -> dict[str, object]:
    return {
        "event_id": f"e{i}",
        "user_id": "u1",
        "type": KINDS[i % len(KINDS)],
        "ts": ts,
        "amount": 10.0,
        "city": "c",
        "device_id": "d",
        "success": False,
        "ip": "10.0.0.1",
    }


def run(engine: Engine, late: bool, events: int) -> float:
    """CPU µs per event of ``events`` events after a warm-up of 40, in order or each 3 s late."""
    state = InMemoryKeyedState()
    ts = BASE_TS
    for i in range(40):
        ts += 100
        engine.process(state, _event(i, ts))
    started = time.process_time()
    for j in range(40, 40 + events):
        if late:
            engine.process(state, _event(j, ts - 3_000))
        else:
            ts += 100
            engine.process(state, _event(j, ts))
    return (time.process_time() - started) / events * 1e6


def shares(engine: Engine, events: int) -> dict[str, float]:
    """Of the late arm's time: the sequences' replay and the late re-check (cumulative, cProfile)."""
    prof = cProfile.Profile()
    prof.runcall(run, engine, True, events)
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())  # own times add up to the whole
    cum = {f"{Path(k[0]).name}:{k[2]}": v[3] for k, v in stats.items()}
    return {
        "sequences' replay (patterns.py:_replay)": cum.get("patterns.py:_replay", 0.0) / total,
        "late re-check (engine.py:_recheck)": cum.get("engine.py:_recheck", 0.0) / total,
    }


def _shares_text(parts: dict[str, float]) -> str:
    if not parts:
        return ""
    return " Of the late arm's time: " + ", ".join(f"{k} {v:.0%}" for k, v in parts.items()) + "."


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    engine = Engine(load_rules(ROOT / "rules"), lateness=5_000)
    in_order: list[float] = []
    late: list[float] = []
    for _ in range(args.rounds):
        in_order.append(run(engine, False, args.events))
        late.append(run(engine, True, args.events))
    ratios = [b / a for a, b in zip(in_order, late, strict=True)]
    compiled = bool(native.compiled())  # RISKCTL_NATIVE_CORE: no Python frames for cProfile to see
    parts = {} if compiled else shares(engine, max(1, args.events // 4))
    lines = [
        f"## {datetime.now(UTC):%Y-%m-%dT%H:%M}Z: `bench/late_event_cost.py --events {args.events} "
        f"--rounds {args.rounds}` (load average {os.getloadavg()[0]:.1f}, "
        f"core: {'compiled' if compiled else 'python'})",
        "",
        "| arm | CPU µs/event (min / median / max) |",
        "|---|---|",
        f"| in order | {min(in_order):.1f} / {statistics.median(in_order):.1f} / {max(in_order):.1f} |",
        f"| 3 s late | {min(late):.1f} / {statistics.median(late):.1f} / {max(late):.1f} |",
        "",
        f"Late ÷ in order, per round: {', '.join(f'{r:.1f}' for r in ratios)}.{_shares_text(parts)}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        old = args.out.read_text() if args.out.exists() else "# What a late event costs the pure engine\n\n"
        at = old.find("\n## ")  # newest run first, after the title and the text before the first run
        head, rest = (old, "") if at < 0 else (old[: at + 1], old[at + 1 :])
        args.out.write_text(f"{head.rstrip()}\n\n{text}\n{rest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
