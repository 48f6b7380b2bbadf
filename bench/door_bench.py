"""Per-event cost of the door: parse + validate of the simulator's events, before and after the limits.

"before" is what the job did per record until the door: ``jsoncodec.loads`` then ``normalize_event``.
"after" is :func:`riskctl.core.events.parse_event` with the door's default limits and a clock-skew check
(``riskctl.core.door``), as the job now calls it per record. Both take the same encoded records (bytes, as
Kafka hands them to the job). Also timed: the engine deciding the same events (``LocalRunner`` with
``rules/``), so the door's cost can be read as a share of the per-event work it guards.

Run: ``PYTHONPATH=. .venv/bin/python bench/door_bench.py [--events 20000] [--repeat 7]``. Prints a JSON line
and a table; best-of-``repeat`` CPU times (``time.process_time``), before and after interleaved (the least
disturbed runs on a shared machine). Last, what one hostile record costs until its dead letter is built.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from riskctl.core import jsoncodec  # noqa: E402
from riskctl.core.door import DEFAULT_LIMITS, dead_letter  # noqa: E402
from riskctl.core.engine import Engine  # noqa: E402
from riskctl.core.errors import EventError  # noqa: E402
from riskctl.core.events import normalize_event, parse_event  # noqa: E402
from riskctl.core.rules import load_rules  # noqa: E402
from riskctl.core.runner import LocalRunner  # noqa: E402
from riskctl.sim.generator import SimConfig, generate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    config = SimConfig(users=2000, rate=500.0, duration_s=args.events / 500.0, seed=7)
    events = generate(config)[0][: args.events]
    records = [jsoncodec.dumps(e).encode() for e in events]
    n = len(records)
    now = max(e["ts"] for e in events)

    def before() -> None:
        for r in records:
            normalize_event(jsoncodec.loads(r))

    def after() -> None:
        for r in records:
            parse_event(r, DEFAULT_LIMITS, now)

    parsed = [parse_event(r, DEFAULT_LIMITS, now) for r in records]

    def decide() -> None:
        runner = LocalRunner(Engine(load_rules(ROOT / "rules"), lateness=5000))
        for e in parsed:
            for _ in runner.feed(e):
                pass

    # interleaved, best of each: on a shared machine both see the same quiet moments
    t_before = t_after = float("inf")
    for _ in range(args.repeat):
        t_before = min(t_before, best_of(1, before))
        t_after = min(t_after, best_of(1, after))
    t_decide = best_of(max(1, args.repeat // 2), decide)
    us = 1e6 / n
    res = {
        "events": n,
        "mean_record_bytes": round(sum(map(len, records)) / n, 1),
        "parse_before_us": round(t_before * us, 3),
        "parse_after_us": round(t_after * us, 3),
        "door_extra_us": round((t_after - t_before) * us, 3),
        "engine_decide_us": round(t_decide * us, 3),
        "door_extra_share_of_parse_and_decide": round((t_after - t_before) / (t_before + t_decide), 4),
    }
    hostile = {
        "binary_1MB": bytes((i * 7 + 3) % 256 for i in range(1_000_000)),
        "text_60KB_not_json": b'{"x": "' + b"\x01" * 60_000 + b'"}x',
        "nested_1024": b'{"a":' * 1024 + b"1" + b"}" * 1024,
        "number_10e400": b'{"event_id":"e","user_id":"u","type":"t","ts":1,"amount":1' + b"0" * 400 + b"}",
        "invalid_utf8_small": b'{"event_id":"e","user_id":"\xff","type":"t","ts":1}',
    }
    for name, record in hostile.items():

        def refuse(record: bytes = record, name: str = name) -> None:
            try:
                parse_event(record, DEFAULT_LIMITS, now)
            except EventError as exc:
                dead_letter(record, reason=exc.reason, field=exc.field, coordinates={"line": 1})
            else:
                raise AssertionError(name)

        res[f"dead_letter_{name}_us"] = round(best_of(args.repeat, refuse) * 1e6, 1)
    print(json.dumps(res))
    print(f"{'events':<40}{n:>10}")
    print(f"{'mean record bytes':<40}{res['mean_record_bytes']:>10}")
    for key in [k for k in res if k.endswith("_us")]:
        print(f"{key:<44}{res[key]:>10}")
    share = res["door_extra_share_of_parse_and_decide"]
    print(f"{'door cost / (parse + decide)':<40}{share:>10.2%}")
    return res


if __name__ == "__main__":
    main()
