"""Where a latency phase's tail came from: its slow events, grouped into stalls, beside the job's checkpoints.

Reads what ``bench/bench.py --timeline`` leaves in a run's log folder (``bench/.work/run-*``): one
``timeline-<contender>-p<p>-<rate>.csv`` per latency phase (every decided event: send time, latency in
Kafka) and ``checkpoints-<contender>-p<p>.json`` (each checkpoint's trigger time and the decide task's
synchronous phase). For each phase: how many events were slower than the threshold, grouped into stalls
(slow events less than ``--gap-ms`` apart), and for each stall the checkpoint triggered just before it, if
any; then the share of slow events that followed a checkpoint.

    .venv/bin/python bench/flink_profile/stalls.py bench/.work/run-20261204-061138 [--threshold-ms 20]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: a stall starting this long after a checkpoint's trigger (or less) is put down to that checkpoint: the
#: barrier reaches the decide task a few ms after the trigger, and the synchronous phase follows
AFTER_TRIGGER_MS = 150.0


@dataclass
class Stall:
    """Slow events less than the gap apart: when the first was sent (ms), how many, the slowest latency."""

    start_ms: float
    end_ms: float
    events: int
    worst_ms: float
    checkpoint: dict[str, Any] | None = None


def stalls(rows: list[tuple[float, float]], threshold_ms: float, gap_ms: float) -> list[Stall]:
    """The stalls of a phase's ``(sent_ms, latency_ms)`` rows, in send order."""
    out: list[Stall] = []
    for sent, latency in rows:
        if latency <= threshold_ms:
            continue
        if out and sent - out[-1].end_ms < gap_ms:
            last = out[-1]
            last.end_ms, last.events, last.worst_ms = sent, last.events + 1, max(last.worst_ms, latency)
        else:
            out.append(Stall(sent, sent, 1, latency))
    return out


def attribute(found: list[Stall], checkpoints: list[dict[str, Any]]) -> None:
    """Give each stall the checkpoint triggered at most :data:`AFTER_TRIGGER_MS` before it began (or the
    stall's events sent before the trigger, still waiting when the task paused: up to the slowest latency)."""
    for stall in found:
        for cp in checkpoints:
            if stall.start_ms - stall.worst_ms <= cp["trigger_ms"] <= stall.start_ms + AFTER_TRIGGER_MS:
                stall.checkpoint = cp
                break


def read_phase(path: Path) -> list[tuple[float, float]]:
    with path.open(encoding="utf-8") as f:
        return [(float(r["sent_ms"]), float(r["in_kafka_ms"])) for r in csv.DictReader(f)]


def report(run: Path, threshold_ms: float, gap_ms: float) -> str:
    lines = []
    phases = sorted(
        run.glob("timeline-*.csv"), key=lambda p: (p.name.rsplit("-", 1)[0], int(p.stem.rsplit("-", 1)[1]))
    )
    if not phases:
        return f"no timeline-*.csv in {run} (run bench/bench.py with --timeline)"
    for path in phases:
        contender_p, rate = path.stem.removeprefix("timeline-").rsplit("-", 1)
        cp_file = run / f"checkpoints-{contender_p}.json"
        checkpoints = json.loads(cp_file.read_text()) if cp_file.is_file() else []
        rows = read_phase(path)
        if not rows:
            continue
        found = stalls(rows, threshold_ms, gap_ms)
        attribute(found, checkpoints)
        slow = sum(s.events for s in found)
        after_cp = sum(s.events for s in found if s.checkpoint is not None)
        t0 = rows[0][0]
        lines.append(
            f"## {contender_p} at {int(rate):,}/s: {len(rows):,} events, {slow:,} ({slow / len(rows):.1%}) "
            f"slower than {threshold_ms:g} ms, in {len(found)} stalls; {after_cp:,} of them right after a "
            "checkpoint's trigger"
        )
        for s in found:
            cp = s.checkpoint
            why = (
                f"checkpoint {cp['id']} (synchronous phase {cp['sync_ms']} ms, alignment "
                f"{cp['alignment_ms']} ms, start delay {cp['start_delay_ms']} ms)"
                if cp is not None
                else "no checkpoint"
            )
            lines.append(
                f"- +{(s.start_ms - t0) / 1000:6.2f} s: {s.events:4d} events over "
                f"{s.end_ms - s.start_ms:5.0f} ms, worst {s.worst_ms:6.1f} ms; {why}"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run's log folder (bench/.work/run-*)")
    ap.add_argument("--threshold-ms", type=float, default=20.0, help="slower than this is slow (default 20)")
    ap.add_argument("--gap-ms", type=float, default=300.0, help="slow events this close are one stall")
    args = ap.parse_args(argv)
    print(report(args.run, args.threshold_ms, args.gap_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
