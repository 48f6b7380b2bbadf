"""What the door costs per record, accepted or refused: the CPU an attacker buys with one hostile record.

    .venv/bin/python bench/door_hostile.py [--rounds 5] [--trees DIR ...] [--out FILE.md]

Each record is put through ``riskctl.core.events.parse_event(raw, limits, now)``, the call of the Flink job
(``riskctl/flink/risk_function.py``, ``_element``) and of ``riskctl replay`` (``riskctl/cli/replay.py``):
``door.decode`` then ``normalize_event`` then the clock check. Records are bytes, as Kafka hands them to the
job, with the default limits (``docs/config.md``, "Limits at the door"); the refused ones also have their
dead letter built (``door.dead_letter``, second column), which the job does next for each.

Each round runs every tree (``--trees``, default this checkout; ``git archive <rev> | tar -x -C /tmp/before``
for an older one) in a fresh process, in turn, so the shared machine's load hits all alike; in a process each
kind is timed in turn, ``--n`` calls (scaled down for slow kinds) per sample, the best of 3 samples kept.
CPU time (``time.process_time``), µs per record; min / median / max over the rounds. The outcome of each
record (accepted, or the reason and field of its refusal) is printed for every tree, so a faster door can be
checked to say the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_700_000_000_000
LIMIT = 65_536  # max_event_bytes
HEAD = b'{"event_id":"e-1","user_id":"u-1","type":"transfer","ts":1699999999000,"amount":12.5'


def fill(unit: bytes, tail: bytes = b"}", head: bytes = HEAD + b',"x":{', close: bytes = b"}") -> bytes:
    """``head`` + as many ``unit`` as fit + ``close`` + ``tail``, at most max_event_bytes."""
    room = LIMIT - len(head) - len(close) - len(tail)
    body = unit * (room // len(unit))
    return head + body.rstrip(b",") + close + tail


def keys(n_bytes: int, value: bytes = b"1") -> bytes:
    """Distinct keys ``"k0":1,"k1":1,...`` of about ``n_bytes``."""
    out, i = [], 0
    size = 0
    while size < n_bytes:
        out.append(b'"k%d":%s,' % (i, value))
        size += len(out[-1])
        i += 1
    return b"".join(out).rstrip(b",")


def after_keys(z: bytes, first: bytes = b"") -> bytes:
    """An event whose ``x`` holds as many distinct keys as fit before ``"z": <z>`` (its last member)."""
    head = HEAD + first + b',"x":{'
    return head + keys(LIMIT - len(head) - len(z) - 24) + b',"z":' + z + b"}}"


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def array(unit: bytes, last: bytes = b"", tail: bytes = b"}") -> bytes:
    """An event whose ``x`` is a list of as many ``unit`` as fit, then ``last``."""
    return fill(unit + b",", head=HEAD + b',"x":[', close=(b"," + last if last else b"") + b"]", tail=tail)


def records() -> dict[str, bytes]:
    """Each kind of record, at or just over the limits. ``ok:`` ones are within them."""
    deep = nested(15)[5:-1]  # an object 15 deep: with the event and its list, 16 levels
    junk = (HEAD + b',"x":{' + keys(64_900))[:64_999] + b"?}}"  # a syntax error at byte 65,000
    nan_junk = (HEAD + b',"n":NaN,"x":{' + keys(64_900))[:64_999] + b"?}}"
    r = {
        "ok: typical event (150 B)": HEAD + b',"device_id":"d-1","city":"Berlin","success":true}',
        "ok: 64 KB, ~6,500 distinct keys": after_keys(b"1"),
        "ok: 64 KB, list of ~32,000 ints": array(b"1"),
        "ok: 64 KB, ~4,000 floats": array(b"123456789012.5"),
        "ok: 64 KB, 15 strings of 4,096 chars": array(b'"' + b"s" * 4096 + b'"'),
        "ok: 64 KB, non-ASCII strings of 4,096 chars": array(b'"' + "\u00e9".encode() * 4096 + b'"'),
        "ok: 64 KB, ~1,000 objects 15 deep": array(deep),
        "ok: 64 KB, ~21,000 empty objects": array(b"{}"),
        "ok: 64 KB, ~16,000 lists of one int": array(b"[0]"),
        "~16,000 lists of one int, then a NaN": array(b"[0]", b"NaN"),
        "~16,000 lists of one int, then 10^16": array(b"[0]", b"10000000000000000"),
        "~21,000 empty objects, then a NaN": array(b"{}", b"NaN"),
        "~21,000 empty objects, then 10^16": array(b"{}", b"10000000000000000"),
        "~21,000 empty objects, then a lone surrogate": array(b"{}", b'"\\ud800"'),
        "~1,000 objects 15 deep, then a NaN": array(deep, b"NaN"),
        "~1,000 objects 15 deep, then 1 too deep": array(deep, nested(16)),
        "~1,000 objects 15 deep, then a syntax error": array(deep, tail=b"?"),
        "invalid JSON at byte 65,000 (after ~6,500 keys)": junk,
        "invalid JSON at byte 65,000 (a NaN first)": nan_junk,
        "64 KB of [": b"[" * LIMIT,
        "64 KB of {": b'{"a":' * (LIMIT // 5),
        "nested 17 deep (limit + 1)": HEAD + b',"x":' + nested(16) + b"}",
        "nested 17 deep after ~6,500 keys": after_keys(nested(16)),
        "string of 4,097 chars (limit + 1)": HEAD + b',"note":"' + b"n" * 4097 + b'"}',
        "string of 4,097 chars after ~6,500 keys": after_keys(b'"' + b"n" * 4097 + b'"'),
        '64 KB of duplicate keys ("a":1,)': b"{" + b'"a":1,' * ((LIMIT - 8) // 6) + b'"a":1}',
        '64 KB of duplicate ids ("event_id":"e",)': fill(b'"event_id":"e",', head=b"{", close=b""),
        "number 10^16 after ~6,500 keys": after_keys(b"10000000000000000"),
        "64 KB of 1e400": array(b"1e400"),
        "1e400 after ~6,500 keys": after_keys(b"1e400"),
        "64 KB of NaN": array(b"NaN"),
        "NaN after ~6,500 keys": after_keys(b"NaN"),
        "-Infinity first, then ~6,500 keys": after_keys(b"1", first=b',"y":-Infinity'),
        "integer of 4,301 digits": HEAD + b',"z":' + b"7" * 4301 + b"}",
        "integers of 4,301 digits, 15 of them": array(b"7" * 4301),
        "integer of 4,301 digits after ~6,500 keys": after_keys(b"7" * 4301),
        "invalid UTF-8 at the end (64 KB)": after_keys(b'"\xff"'),
        "lone surrogate escape after ~6,500 keys": after_keys(b'"\\ud800"'),
        "64 KB of lone surrogate escapes": array(b'"\\udc00"'),
        "BOM + 64 KB event": b"\xef\xbb\xbf" + after_keys(b"1"),
        "64 KB of spaces": b" " * LIMIT,
    }
    for name, raw in r.items():
        assert len(raw) <= LIMIT, (name, len(raw))
    return r


# ------------------------------------------------------------------------------------------------ child
def child(tree: str, n: int) -> dict[str, Any]:
    sys.path.insert(0, tree)
    from riskctl.core.door import DEFAULT_LIMITS, dead_letter
    from riskctl.core.errors import EventError
    from riskctl.core.events import parse_event

    def outcome(raw: bytes) -> str:
        try:
            parse_event(raw, DEFAULT_LIMITS, NOW)
        except EventError as exc:
            return f"{exc.reason[:110]} [field {(exc.field or '-')[:30]}]"
        except Exception as exc:  # noqa: BLE001 - a crash of the door is an outcome to report
            return f"CRASH {type(exc).__name__}: {exc}"[:120]
        return "accepted"

    def door(raw: bytes) -> None:
        try:
            parse_event(raw, DEFAULT_LIMITS, NOW)
        except EventError:
            pass

    def door_and_dead_letter(raw: bytes) -> None:
        try:
            parse_event(raw, DEFAULT_LIMITS, NOW)
        except EventError as exc:
            dead_letter(raw, reason=exc.reason, field=exc.field, coordinates={"topic": "t", "offset": 1})

    def per_record(fn: Callable[[bytes], None], raw: bytes, calls: int) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            for _ in range(calls):
                fn(raw)
            best = min(best, time.process_time() - t0)
        return best / calls * 1e6

    out: dict[str, Any] = {}
    for name, raw in records().items():
        t0 = time.process_time()
        door(raw)
        first = time.process_time() - t0
        calls = max(3, min(n, int(0.05 / max(first, 1e-6))))  # ~50 ms per sample
        out[name] = {
            "bytes": len(raw),
            "outcome": outcome(raw),
            "door_us": per_record(door, raw, calls),
            "dead_letter_us": per_record(door_and_dead_letter, raw, calls),
        }
    return out


# ----------------------------------------------------------------------------------------------- parent
def table(results: dict[str, list[dict[str, Any]]]) -> str:
    trees = list(results)
    names = list(results[trees[0]][0])
    lines = [
        "| record | bytes | "
        + " | ".join(f"{t}: door µs min / med / max | {t}: + dead letter µs (med)" for t in trees)
        + " |",
        "|---|---:|" + "---:|---:|" * len(trees),
    ]
    for name in names:
        cells = [name, f"{results[trees[0]][0][name]['bytes']:,}"]
        for t in trees:
            door = sorted(r[name]["door_us"] for r in results[t])
            dl = [r[name]["dead_letter_us"] for r in results[t]]
            cells.append(f"{door[0]:,.1f} / {statistics.median(door):,.1f} / {door[-1]:,.1f}")
            cells.append(f"{statistics.median(dl):,.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for t in trees:
        lines.append(f"Outcomes ({t}):")
        lines.append("")
        lines.extend(f"- {name}: {results[t][0][name]['outcome']}" for name in names)
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=2000, help="calls per sample at most")
    ap.add_argument("--trees", nargs="+", default=[str(ROOT)], help="[LABEL=]DIR holding riskctl/")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n)))
        return
    trees = dict(t.split("=", 1) if "=" in t else (t, t) for t in args.trees)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    for i in range(args.rounds):
        for label, tree in trees.items():
            cmd = [sys.executable, __file__, "--child", str(Path(tree).resolve()), "--n", str(args.n)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)  # noqa: S603
            results[label].append(json.loads(proc.stdout))
            print(f"round {i + 1}/{args.rounds} {label}", file=sys.stderr)
    text = table(results)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
