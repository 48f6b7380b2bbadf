"""Rule propagation: from a MySQL commit of a rule edit to the job applying it and to the first decision
made with it.

The bench edits a shadow probe rule (``bench_probe``) that matches only its own probe events, so the edits
change no decision of the workload.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from harness import ROOT, log
from harness.kafka_io import Reader, Topics, producer
from harness.measures import percentiles
from riskctl.config import Settings

PROBE_RULE = "bench_probe"
PROBE_TYPE = "bench_probe"


def measure_propagation(
    settings: Settings, table: str, bootstrap: str, topics: Topics, reader: Reader, edits: int, event_ts: int
) -> dict[str, Any]:
    """Edit the probe rule ``edits`` times; for each, time from the MySQL commit to (1) the job's accepted
    status and (2) the first decision that carries the new version (probe events every 10 ms).

    The probes' event time continues the workload's (from ``event_ts`` on, at wall-clock pace): a probe
    stamped with today's date would move the watermark years ahead and fire every pending timer of every user
    at once, a stall of many seconds that has nothing to do with rule propagation."""
    store = _store(settings, table)
    prod = producer(bootstrap, linger_ms=0)
    applied: list[float] = []
    first_decision: list[float] = []
    stop = threading.Event()
    n_probe = [0]
    t_start = time.time()

    def probes() -> None:
        while not stop.is_set():
            n_probe[0] += 1
            doc = {
                "event_id": f"{PROBE_TYPE}-{topics.events}-{n_probe[0]}",
                "user_id": "bench-probe",
                "type": PROBE_TYPE,
                "ts": event_ts + int((time.time() - t_start) * 1000),
            }
            prod.send(topics.events, json.dumps(doc).encode(), key=b"bench-probe")
            prod.flush()
            stop.wait(0.01)

    sender = threading.Thread(target=probes, daemon=True)
    sender.start()
    try:
        for i in range(edits):
            version, committed = _edit_probe(store, i)
            status = _wait_status(store, version, 30)
            if status is not None:
                applied.append((status - committed) * 1000)
            seen = _wait_probe_version(reader, version, committed, 30)
            if seen is not None:
                first_decision.append((seen - committed) * 1000)
            log(
                f"  edit {i + 1}/{edits}: v{version} applied {applied[-1] if applied else '?':.0f} ms, first "
                f"decision {first_decision[-1] if first_decision else float('nan'):.0f} ms"
            )
            time.sleep(0.3)
    finally:
        stop.set()
        sender.join(timeout=5)
        prod.close()
        store.conn.close()
    return {
        "edits": edits,
        "commit_to_applied_ms": percentiles(applied) | {"n": len(applied)},
        "commit_to_first_decision_ms": percentiles(first_decision) | {"n": len(first_decision)},
        "probe_interval_ms": 10,
    }


def _store(settings: Settings, table: str) -> Any:
    from riskctl.store.connection import connect
    from riskctl.store.rules_store import RuleStore

    return RuleStore(connect(settings), table)


def probe_rule(threshold: int) -> dict[str, Any]:
    """The probe rule's document; each edit changes ``threshold``, which makes a new version."""
    return {
        "id": PROBE_RULE,
        "description": "benchmark probe: edited to time rule propagation",
        "status": "shadow",
        "action": "REVIEW",
        "when": f'event.type == "{PROBE_TYPE}" and {threshold} >= 0',
    }


def install_rules(settings: Settings, table: str) -> None:
    """The project's rules plus the (shadow) probe rule, into a fresh rules table."""
    from riskctl.core.rules import RuleSet, load_rules, parse_rule

    store = _store(settings, table)
    try:
        rules = list(load_rules(ROOT / "rules").rules) + [parse_rule(probe_rule(0))]
        store.apply(store.plan(RuleSet(rules)), author="bench", comment="benchmark rules")
    finally:
        store.conn.close()


def _edit_probe(store: Any, i: int) -> tuple[int, float]:
    from riskctl.core.rules import RuleSet, parse_rule

    others = [parse_rule(r.document) for r in store.current() if r.rule_id != PROBE_RULE]
    plan = store.plan(RuleSet([*others, parse_rule(probe_rule(i + 1))]))
    changes = store.apply(plan, author="bench", comment=f"probe {i + 1}")
    committed = time.time()
    (change,) = [c for c in changes if c.rule_id == PROBE_RULE]
    return int(change.version), committed


def _wait_status(store: Any, version: int, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = store.job_status([(PROBE_RULE, version)]).get((PROBE_RULE, version))
        if st is not None and st.state == "accepted" and st.seen_at is not None:
            return st.seen_at.timestamp()
        time.sleep(0.02)
    return None


def _wait_probe_version(reader: Reader, version: int, after: float, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with reader.lock:
            hits = [
                t
                for docs in reader.kept.values()
                for t, doc in docs
                if t >= after
                and any(
                    r.get("id") == PROBE_RULE and r.get("version") == version for r in doc.get("shadow", [])
                )
            ]
        if hits:
            return min(hits)
        time.sleep(0.01)
    return None
