"""``riskctl simulate report`` streams its files (found in review).

Before: both files were read whole into lists of dicts (and the events copied once more), so memory grew
with the files: a 5 GB events file needed tens of GB, and a decision line of 16 MiB or more ended the report.
Now the files are read a line at a time, an event keeps 8 bytes of memory (its id's hash) and a distinct
user 16; a line over the job's own record limit (job.max_event_bytes for an event, 1,000,000 bytes for a
decision) is skipped without being held, counted and reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from riskctl.sim.report import build_report

#: run `riskctl simulate report` and print its peak memory beyond what the imports took (kB)
PROBE = """
import resource, sys
from click.testing import CliRunner
import numpy  # noqa: F401 - imported by the report: part of the baseline, not of the files
import riskctl.sim.report  # noqa: F401
from riskctl.cli.main import cli
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
args = ["simulate", "report", "--json", "--events", sys.argv[1], "--decisions", sys.argv[2]]
res = CliRunner().invoke(cli, args)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.stdout = sys.__stdout__
print(res.exit_code, after - before)
import json
print(json.dumps(json.loads(res.stdout)) if res.exit_code == 0 else json.dumps(res.output))
"""


def _write(tmp_path: Path, n: int, pad: int, *, long_decision: int = 0) -> tuple[Path, Path]:
    events, decisions = tmp_path / "events.jsonl", tmp_path / "decisions.jsonl"
    filler = "x" * pad
    with events.open("w") as ev, decisions.open("w") as dec:
        for i in range(n):
            e = {"event_id": f"e{i}", "user_id": f"u{i % 5000}", "type": "login", "ts": i, "pad": filler}
            if i % 100 == 0:
                e["sim"] = {"attack_id": f"a{i // 1000}", "attack": "brute_force"}
            ev.write(json.dumps(e) + "\n")
            action = "REJECT" if i % 100 == 0 else "PASS"
            d = {"kind": "decision", "event_id": f"e{i}", "user_id": e["user_id"], "action": action,
                 "rules": [{"id": "r1"}] if action != "PASS" else [], "pad": filler}  # fmt: skip
            dec.write(json.dumps(d) + "\n")
        if long_decision:
            dec.write('{"kind": "decision", "pad": "' + "y" * long_decision + '"}\n')
    return events, decisions


def _peak_kb(events: Path, decisions: Path) -> tuple[int, dict]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(events), str(decisions)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    first, doc = out.stdout.splitlines()[:2]
    code, peak = map(int, first.split())
    assert code == 0, out.stdout + out.stderr
    return peak, json.loads(doc)


def test_memory_does_not_grow_with_the_files(tmp_path: Path) -> None:
    """60,000 events and decisions of ~500 bytes (30 MB each), and a decision line of 30 MB: the old report
    held ~400 MB more than the imports (and refused the long line: exit 1); this one a few MB."""
    events, decisions = _write(tmp_path, 60_000, 450, long_decision=30_000_000)
    assert events.stat().st_size > 29e6 and decisions.stat().st_size > 59e6
    peak, doc = _peak_kb(events, decisions)
    assert doc["events"] == 60_000 and doc["decided"] == 60_000
    assert doc["caught"] == doc["attacks"] == 60
    assert doc["skipped"] == {"records_over_max_record_bytes": 1}
    assert peak < 40_000, f"peak memory grew by {peak:,} kB for files of 90 MB"


def test_the_streamed_report_is_the_report_of_the_lists() -> None:
    events = [
        {"event_id": "e1", "user_id": "u1"},
        {"event_id": "e2", "user_id": "u2", "ts": 5, "sim": {"attack_id": "a1", "attack": "brute_force"}},
        {"event_id": "e3", "user_id": "u3", "ts": 6, "sim": {"attack_id": "a2", "attack": "velocity"}},
        {"event_id": "e4", "user_id": "u4", "sim": {"role": "clock"}},
        {"event_id": "e5", "user_id": "u5"},
    ]
    records = [
        {"event_id": "e1", "user_id": "u1", "action": "REVIEW", "rules": [{"id": "r9"}]},
        {"event_id": "e1", "user_id": "u1", "action": "REJECT", "rules": [{"id": "r8"}]},  # a duplicate
        {"event_id": "e2", "action": "REJECT", "rules": [{"id": "r1"}, {"id": "r2"}]},
        {"event_id": "e4", "user_id": "u4", "action": "REVIEW", "rules": [{"id": "r9"}]},  # the clock user
        {"event_id": "zz", "action": "REJECT"},  # another run's
        {"kind": "alert", "rule": {"id": "r3"}, "trigger_event_id": "e3", "user_id": "u3"},
        {"kind": "alert", "rule": {"id": "r4"}, "user_id": "u5"},
    ]
    r = build_report(iter(events), iter(records))
    assert (r["events"], r["decided"], r["coverage"], r["alerts"]) == (5, 3, 0.6, 2)
    assert r["actions"] == {"REVIEW": 2, "REJECT": 1}
    assert r["caught"] == 2 and r["scenarios"]["brute_force"]["by_rule"] == {"r1": 1, "r2": 1}
    assert r["legit_users"] == 2 and r["false_positive_users"] == 2
    assert r["false_positive_decisions"] == 1 and r["false_positives_by_rule"] == {"r9": 1, "r4": 1}
    assert r["skipped"] == {}
