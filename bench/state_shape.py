"""What a user's state is made of in the job: objects and bytes per state name, and object kinds.

    .venv/bin/python bench/state_shape.py [--events 40000]

Runs the job's decide function (``bench/decide_budget.py``'s ``job`` arm: the state encoded as the job
stores it) over the first ``--events`` events of the side-by-side bench's workload, then decodes every
stored user and counts, per state name (a pattern by its rule, a feature by its kind and digest), how many
users hold it and how many objects and bytes it takes per user; and over all of it, the kinds of objects
(an int past 31 bits is written by marshal as 15-bit digits). Encoding and decoding cost per object, so the
objects are where a flatter layout would save: bench/flink_profile/README.md.
"""

from __future__ import annotations

import argparse
import marshal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import decide_budget as db  # noqa: E402

from riskctl.core.state import decode_state, state_code  # noqa: E402


def objects(value: Any) -> int:
    """The objects marshal writes for ``value`` (a container, its items, a dict's keys)."""
    if isinstance(value, list | tuple):
        return 1 + sum(objects(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(objects(k) + objects(v) for k, v in value.items())
    return 1


def _kinds(value: Any, into: Counter[str]) -> None:
    if isinstance(value, list | tuple):
        into[type(value).__name__] += 1
        for v in value:
            _kinds(v, into)
    elif isinstance(value, dict):
        into["dict"] += 1
        for k, v in value.items():
            _kinds(k, into)
            _kinds(v, into)
    elif type(value) is int:
        into["int past 31 bits" if abs(value) >= 2**31 else "int"] += 1
    else:
        into[type(value).__name__] += 1


def _label(name: str) -> str:
    return "pattern:" + name.split(":")[1] if name.startswith("pattern:") else name


def shape(stored: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Per state name: users holding it, objects and bytes per user; the kinds of objects per user."""
    labels = {state_code(n): _label(n) for n in names}
    users = []
    for raw in stored.values():
        raw = bytes(raw)
        data = decode_state(raw)
        users.append(decode_state(data) if type(data) is bytes else data)  # the job's write, pickled once
    held: Counter[str] = Counter()
    objs: Counter[str] = Counter()
    size: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for user in users:
        for code, value in user.items():
            label = labels.get(code, f"#{code}")
            held[label] += 1
            objs[label] += objects(value)
            size[label] += len(marshal.dumps(value, 4))
            _kinds(value, kinds)
    n = max(len(users), 1)
    return {
        "users": len(users),
        "names": {
            label: {"held_by": held[label] / n, "objects": objs[label] / n, "bytes": size[label] / n}
            for label, _ in objs.most_common()
        },
        "kinds": {kind: count / n for kind, count in kinds.most_common()},
    }


def run(events: int) -> dict[str, Any]:
    """The shape of the states the job arm stored over the first ``events`` events of the workload."""
    feed, _ = db.runner("job")
    feed(db.records(db.workload(db.USERS, events)))
    fn = next(c.cell_contents for c in feed.__closure__ or () if hasattr(c.cell_contents, "engine"))
    return shape(fn.state._value.store, fn.engine.state_names)  # noqa: SLF001 - the bench's own stand-in


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000)
    args = parser.parse_args(argv)
    found = run(args.events)
    print(f"{found['users']:,} users with state after {args.events:,} events of the workload\n")
    print("| state | held by (share of users) | objects per user | bytes per user |")
    print("|---|---:|---:|---:|")
    for label, row in found["names"].items():
        print(f"| {label} | {row['held_by']:.2f} | {row['objects']:.1f} | {row['bytes']:.1f} |")
    kinds = ", ".join(f"{kind} {count:.1f}" for kind, count in found["kinds"].items())
    print(f"\nobjects per user by kind: {kinds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
