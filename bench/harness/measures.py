"""The measurements of one contender: throughput (draining a preloaded backlog), latency at a fixed offered
rate, and the pure engine alone on the same events.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import ROOT, log
from harness.contenders import Contender
from harness.kafka_io import Reader, paced_send
from riskctl.core.stats import percentile


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p90, p99, p99.9 (key ``p99_9``) and the maximum, nearest rank, rounded to 0.1 (None if empty)."""
    out = {f"p{p}".replace(".", "_"): percentile(values, p) for p in (50, 90, 99, 99.9)}
    out["max"] = max(values) if values else None
    return {k: (round(v, 1) if v is not None else None) for k, v in out.items()}


def wait_until(cond: Callable[[], bool], timeout: float, contender: Contender, what: str) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` passes (False, logged); a contender that exits
    meanwhile raises at once instead of being waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        contender.check_alive()
        time.sleep(0.05)
    log(f"  {contender.name}: gave up waiting for {what} after {timeout:.0f} s")
    return False


def measure_drain(
    contender: Contender, reader: Reader, ids: list[str], limit_s: float, start_timeout: float, what: str
) -> dict[str, Any]:
    """Time the decisions of ``ids`` (in the topic already, or being produced): first to last.

    Progress is counted by these ids, not by all decisions read: with two partitions, decisions of events
    behind ``ids`` arrive while some of ``ids`` are still to come."""
    n = len(ids)
    started = time.time()
    any_decided = lambda: reader.decided(ids) > 0  # noqa: E731
    if not wait_until(any_decided, start_timeout, contender, f"the first {what} decision"):
        return {"events": n, "complete": False, "error": "no decision before the start timeout"}
    first = time.time()
    log(f"  {contender.name}: first {what} decision after {first - started:.1f} s; {n:,} events to decide")
    last_report = first
    deadline = first + limit_s
    while (done := reader.decided(ids)) < n and time.time() < deadline:
        contender.check_alive()
        time.sleep(0.2)
        if time.time() - last_report > 10:
            last_report = time.time()
            log(f"  {contender.name}: {done:,}/{n:,} decided ({done / (time.time() - first):,.0f}/s)")
    recv = reader.times()
    got = sorted(recv[k] for k in ids if k in recv)
    with reader.lock:
        created = sorted(reader.created[k] / 1000 for k in ids if k in reader.created)
    complete = len(got) == n
    span = (got[-1] - got[0]) if len(got) > 1 else 0.0
    lo, hi = (got[len(got) // 10], got[(len(got) * 9) // 10 - 1]) if len(got) >= 10 else (0.0, 0.0)
    return {
        "events": n,
        "decided": len(got),
        "complete": complete,
        "stopped_at_limit_s": None if complete else limit_s,
        "wait_for_first_decision_s": round(first - started, 1),
        "first_to_last_s": round(span, 2),
        "events_per_s": round(len(got) / span, 1) if span > 0 else None,
        "events_per_s_10_90": round(len(got) * 0.8 / (hi - lo), 1) if hi > lo else None,
        # the same span by the decision records' broker append times: a difference to first_to_last_s is the
        # reader's delay, not the contender's
        "first_to_last_by_record_ts_s": round(created[-1] - created[0], 2) if len(created) > 1 else None,
        "duplicates": reader.duplicates,
    }


def wait_quiet(contender: Contender, reader: Reader, limit_s: float, quiet_s: float = 20) -> dict[str, Any]:
    """Wait until no new output record has come for ``quiet_s`` (after at least one), or ``limit_s``."""
    t0 = time.time()
    last_n, last_change = 0, time.time()
    while time.time() - t0 < limit_s:
        contender.check_alive()
        n = reader.count()
        if n != last_n:
            last_n, last_change = n, time.time()
        elif n and time.time() - last_change >= quiet_s:
            break
        time.sleep(0.5)
    return {"records": last_n, "last_record_after_s": round(last_change - t0, 1)}


def measure_latency(
    contender: Contender,
    reader: Reader,
    bootstrap: str,
    records: list[bytes],
    rate: float,
    drain_s: float,
    *,
    timeline: Path | None = None,
) -> dict[str, Any]:
    """Send at a fixed rate; latency = decision received - event sent, per event. A contender that cannot keep
    up builds a queue: the phase is marked saturated, and the bench waits (up to ``drain_s``) for the backlog
    to drain, so that it does not spill into the next measurement.

    Two latencies per event: to the decision *in Kafka* (the broker's append time of the decision record,
    the decisions topic having ``message.timestamp.type=LogAppendTime``: when any consumer can read it), and
    to the decision *read* by the bench's own consumer (that plus the reader's fetch wait and its share of
    this process's interpreter lock with the sender).

    ``timeline``: also write every decided event of the phase to that CSV file (``bench.py --timeline``),
    in send order: ``sent_ms`` (epoch), ``in_kafka_ms`` (its latency in Kafka) and ``event_appended_ms``
    (the broker's append time of the event, empty when unknown), to see when the tail happened."""
    base = reader.count()
    event_appended: dict[str, int] = {}
    sent, took = paced_send(bootstrap, contender.topics.events, records, rate, event_appended)
    t_sent = time.time()
    drained = wait_until(
        lambda: reader.count() - base >= len(sent), drain_s, contender, "the phase's decisions"
    )
    time.sleep(1)
    recv = reader.times()
    lat = [(recv[k] - t) * 1000 for k, t in sent.items() if k in recv]
    with reader.lock:
        appended = {k: reader.created[k] for k in sent if k in reader.created}
    lat_kafka = [appended[k] - t * 1000 for k, t in sent.items() if k in appended]
    lat_job = [appended[k] - event_appended[k] for k in sent if k in appended and k in event_appended]
    if timeline is not None:
        write_timeline(timeline, sent, appended, event_appended)
    decided_span = max((recv[k] for k in sent if k in recv), default=0) - min(sent.values())
    decided_rate = len(lat) / decided_span if decided_span > 0 else 0.0
    saturated = len(lat) < len(sent) or decided_rate < 0.9 * rate
    return {
        "offered_per_s": round(rate, 1),
        "achieved_send_per_s": round(len(sent) / took, 1),
        "drained": drained,
        "drain_after_send_s": round(time.time() - t_sent, 1),
        "events": len(sent),
        "decided": len(lat),
        "decided_per_s": round(decided_rate, 1),
        "saturated": saturated,
        "latency_ms": percentiles(lat),
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "latency_in_kafka_ms": percentiles(lat_kafka),
        # event record appended -> decision record appended, both by the broker's clock: the contender's own
        # latency, without the bench's producer (its client-side queueing and sender thread)
        "latency_broker_to_broker_ms": percentiles(lat_job),
    }


def write_timeline(
    path: Path, sent: dict[str, float], appended: dict[str, float], event_appended: dict[str, int]
) -> None:
    """One row per decided event, in send order (see :func:`measure_latency`)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("sent_ms,in_kafka_ms,event_appended_ms\n")
        for key, t in sorted(sent.items(), key=lambda kv: kv[1]):
            if key in appended:
                ev = event_appended.get(key)
                out.write(f"{t * 1000:.1f},{appended[key] - t * 1000:.1f},{'' if ev is None else ev}\n")


def pure_engine_child(records: list[bytes], build: str, collector: str = "replay") -> dict[str, Any]:
    """:func:`pure_engine` in a fresh child process, with ``RISKCTL_NATIVE_CORE=build`` (empty: pure Python;
    a build: the compiled core the riskctl jobs run), since ``riskctl.core`` picks its modules when first
    imported (riskctl/core/native.py), and a fresh heap each time; ``collector`` as :func:`pure_engine`'s. The
    child says which core it ran; a stale or unusable build runs pure Python and is reported as such."""
    import json
    import os
    import pickle
    import subprocess
    import sys
    import tempfile

    code = (
        "import json, pickle, sys; sys.path.insert(0, sys.argv[2]); "
        "from harness.measures import pure_engine; from riskctl.core import native; "
        "out = pure_engine(pickle.load(open(sys.argv[1], 'rb')), sys.argv[3]); out['core'] = native.status; "
        "print(json.dumps(out))"
    )
    with tempfile.NamedTemporaryFile(suffix=".pickle") as f:
        pickle.dump(records, f)
        f.flush()
        env = {**os.environ, "RISKCTL_NATIVE_CORE": build}
        done = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code, f.name, str(ROOT / "bench"), collector],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def pure_engine_runs(
    records: list[bytes], build: str, runs: int = 3, collector: str = "replay"
) -> dict[str, Any]:
    """:func:`pure_engine_child` ``runs`` times: the median run's figures, with every run's events/s
    (``runs_events_per_s``, in order). The box is shared: one run is one sample of its load."""
    done = [pure_engine_child(records, build, collector) for _ in range(runs)]
    rates = [d["events_per_s"] for d in done]
    median = sorted(done, key=lambda d: d["events_per_s"])[len(done) // 2]
    return {**median, "runs_events_per_s": rates}


def run_engine(records: list[bytes], lateness: int = 5000) -> tuple[Any, float]:
    """The rules of ``rules/`` in a LocalRunner (in-memory state) fed ``records``, parsed first: the runner
    and the seconds the feeding took."""
    from riskctl.core.engine import Engine
    from riskctl.core.events import parse_event
    from riskctl.core.rules import load_rules
    from riskctl.core.runner import LocalRunner

    events = [parse_event(r) for r in records]
    from riskctl.config.settings import JobSettings

    engine = Engine(
        load_rules(ROOT / "rules"),
        lateness=lateness,
        state_ttl=24 * 3600 * 1000,
        dedup_window=JobSettings().dedup_window_ms,  # as the job decides (job.dedup "api")
    )
    runner = LocalRunner(engine)
    t0 = time.perf_counter()
    for e in events:
        for _ in runner.feed(e):
            pass
    return runner, time.perf_counter() - t0


def pure_engine(records: list[bytes], collector: str = "replay") -> dict[str, Any]:
    """The engine alone (LocalRunner, in-memory state) over the same events: events/s on one core.

    ``collector``: CPython's cyclic collector as ``riskctl replay`` runs it (``replay``: ``tune_gc``, each
    new object scanned once), or as the job's decide functions do (``job``: what exists frozen, the collector
    off; riskctl/flink/risk_function.py). Then the collection after the run finds the cyclic garbage the
    engine left, which the job's policy takes to be none (``cyclic_garbage``)."""
    import gc

    from riskctl.core.runner import tune_gc

    if collector == "job":
        gc.collect()
        gc.freeze()
        gc.disable()
    else:
        tune_gc()
    runner, took = run_engine(records)
    garbage = gc.collect() if collector == "job" else None
    sizes = runner.store.encoded_sizes()
    return {
        "collector": collector,
        "cyclic_garbage": garbage,
        "events": len(records),
        "seconds": round(took, 2),
        "events_per_s": round(len(records) / took, 1),
        "users": len(sizes) or None,
        "state_bytes_per_user_encoded": round(statistics.fmean(sizes), 1) if sizes else None,
    }
