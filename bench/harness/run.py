"""One contender, start to stop: fresh topics, the preloaded backlog, every measurement in order, cleanup."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import ROOT, log
from harness.contenders import ClusterJob, Contender, MatchRecognize, PlainLoop, RiskctlJob
from harness.kafka_io import Reader, Topics, delete_topics, log_append_time, preload
from harness.measures import measure_drain, measure_latency, wait_quiet
from harness.profiler import Profile, jvm_of, phase_and_event
from harness.propagation import PROBE_TYPE, install_rules, measure_propagation
from harness.sampling import (
    JIT_WARM_SHARE,
    Sampler,
    jit_share,
    per_event_us,
    thread_cpu,
    thread_schedule,
    threads_cpu,
    waiting_share,
)
from harness.workload import Plan, key_of
from riskctl.config import Settings
from riskctl.kafka_admin import ensure_topics


def keep_probe_and_brute_force(key: str, value: bytes) -> bool:
    """Decisions the reader keeps whole: probe events (rule propagation) and brute-force hits (the check
    against MATCH_RECOGNIZE); of the others it keeps only the receive time."""
    return key.startswith(PROBE_TYPE) or b"brute_force_login" in value


def _profile(
    contender: Contender, wanted: str | None, phase: str, *, delay: float, seconds: float
) -> Profile | None:
    """async-profiler on a MiniCluster job's JVM during ``phase`` ("sustained" or a rate), when asked for
    (``wanted`` is the phase, with ``:wall`` for wall-clock samples: where a thread waits, not only where it
    runs)."""
    if wanted is None:
        return None
    wanted_phase, event = phase_and_event(wanted)
    if wanted_phase != phase or not isinstance(contender, RiskctlJob) or isinstance(contender, ClusterJob):
        return None
    pid = jvm_of(contender.session)
    if pid is None:
        return None
    out = contender.tmp / f"profile-{contender.name}-p{contender.parallelism}-{phase}-{event}.collapsed"
    profiling = Profile(pid, out, delay, seconds, event=event)
    profiling.start()
    return profiling


def run_contender(
    kind: type[Contender],
    name: str,
    parallelism: int,
    settings: Settings,
    plan: Plan,
    records: list[bytes],
    sampler: Sampler,
    tmp: Path,
    *,
    latency: bool,
    propagation: bool = False,
    flink_options: Sequence[str] = (),
    profile: str | None = None,
    timeline: bool = False,
) -> dict[str, Any]:
    """Fresh topics; preload the throughput events; start; measure; then (optionally) latency phases at fixed
    rates with later events of the workload, and rule propagation; stop. Every figure goes in the result.

    ``timeline``: each latency phase's events (``timeline-<name>-p<p>-<rate>.csv``) and the job's
    checkpoints (``checkpoints-<name>-p<p>.json``) go to ``tmp``, the run's log folder, for
    ``bench/flink_profile/stalls.py``."""
    bootstrap = settings.kafka_bootstrap
    topics = Topics.fresh(name)
    ensure_topics(bootstrap, topics.all(), partitions=2)
    log_append_time(bootstrap, topics.events)
    log_append_time(bootstrap, topics.decisions)
    warm = records[: plan.warmup_events]
    settle = records[plan.warmup_events : plan.warmup_events + plan.settle_events]
    main = records[plan.warmup_events + plan.settle_events : plan.backlog_events]
    rest = records[plan.backlog_events :]
    if timeline:  # Flink's REST keeps ten checkpoints by default: enough for the whole run
        flink_options = [*flink_options, f"web.checkpoints.history={CHECKPOINT_HISTORY}"]
    contender = kind(name, parallelism, settings, topics, tmp, flink_options=list(flink_options))
    if isinstance(contender, RiskctlJob) and contender.reads_rules:
        contender.rules_table = f"bench_{uuid.uuid4().hex[:8]}"
        install_rules(settings, contender.rules_table)
    first_batch = warm + settle + main
    log(f"{name} (p={parallelism}): preloading {len(first_batch):,} events")
    preload_s = preload(bootstrap, topics.events, first_batch)
    keep = (lambda k, v: True) if kind is MatchRecognize else keep_probe_and_brute_force
    reader = Reader(bootstrap, topics.decisions, keep=keep)
    reader.start()
    result: dict[str, Any] = {"contender": name, "parallelism": parallelism, "preload_s": round(preload_s, 1)}
    t0 = time.monotonic()
    try:
        contender_started = time.monotonic()
        contender.start()
        sampler.watch_session(contender.session)
        if isinstance(contender, MatchRecognize):
            # its output is the matches only: wait for them to stop coming (or for the limit)
            result["matches"] = wait_quiet(contender, reader, plan.throughput_limit_s + 120)
            result["resources"] = sampler.window(contender_started, time.monotonic())
            with reader.lock:
                result["brute_force_hits"] = sorted(reader.kept)
            return result
        log(f"  {name}: cold start, {len(warm):,} events preloaded")
        result["cold"] = cold = measure_drain(
            contender, reader, [key_of(r)[1] for r in warm], plan.throughput_limit_s, 240, "cold"
        )
        log(f"  {name}: cold {cold.get('events_per_s')} events/s (complete: {cold.get('complete')})")
        tp: dict[str, Any] = {}
        if cold.get("complete") and settle:
            # decided, not measured: a JVM is still compiling after the cold events (the JIT's share shows
            # in jit_share_of_jvm_cpu)
            log(f"  {name}: settling: {len(settle):,} more events, not measured")
            result["settle"] = settled = measure_drain(
                contender, reader, [key_of(r)[1] for r in settle], plan.throughput_limit_s, 60, "settling"
            )
            if not settled.get("complete") and settled.get("decided"):
                # a slow contender (process mode: 650-800 events/s) may take longer than the limit to settle;
                # the settling is not measured, so the sustained phase goes on behind what is left of it (on
                # each partition the sustained events come after the settling ones)
                log(
                    f"  {name}: settling stopped at its {plan.throughput_limit_s:.0f} s limit with "
                    f"{settled['decided']:,}/{len(settle):,} decided; the sustained phase goes on behind them"
                )
            cold = {**cold, "complete": bool(settled.get("decided"))}
        if cold.get("complete"):
            # the sustained events were preloaded behind the cold ones: the warmed-up contender drains a
            # backlog, with nothing else producing on the box (a producer running beside it on 2 cores would
            # measure the producer: kafka-python sends 5-7k events/s while a contender runs)
            log(f"  {name}: sustained: {len(main):,} more events, preloaded behind the cold ones")
            decide_cpu_0 = thread_cpu(contender.session, DECIDE_THREAD)
            decide_sched_0 = thread_schedule(contender.session, DECIDE_THREAD)
            threads_0 = threads_cpu(contender.session)
            profiling = _profile(contender, profile, "sustained", delay=3, seconds=8)
            sustained_from = time.monotonic()
            tp.update(
                measure_drain(
                    contender,
                    reader,
                    [key_of(r)[1] for r in main],
                    plan.throughput_limit_s,
                    60,
                    "sustained",
                )
            )
            decide_cpu_1 = thread_cpu(contender.session, DECIDE_THREAD)
            # the decide thread held back by the machine: runnable, but no core free (2 cores, shared)
            waited = waiting_share(decide_sched_0, thread_schedule(contender.session, DECIDE_THREAD))
            if waited is not None:
                tp["decide_thread_waiting_for_a_core"] = round(waited, 3)
            # every process's CPU over the phase: what the machine had left (the limit at p=2 on 2 cores)
            tp["resources"] = sampler.window(sustained_from, time.monotonic())
            threads_1 = threads_cpu(contender.session)
            if profiling is not None:
                tp["profile"] = profiling.finish()
            if threads_1 and tp.get("decided"):
                # where the JVM's CPU went, per thread group (source, decide, producers, RocksDB, JIT, GC)
                tp["jvm_threads_cpu_us_per_event"] = per_event_us(threads_0, threads_1, tp["decided"])
                share = jit_share(threads_0, threads_1)
                if share is not None:
                    tp["jit_share_of_jvm_cpu"] = round(share, 3)
                    if share > JIT_WARM_SHARE:
                        log(
                            f"  {name}: the JVM was still compiling during the sustained phase (JIT "
                            f"{share:.0%} of its CPU; a longer settling phase measured no higher figure)"
                        )
            if decide_cpu_0 is not None and decide_cpu_1 is not None and tp.get("decided"):
                # the decide task's thread(s) alone: what one decision costs where the Python runs
                per_event = (decide_cpu_1 - decide_cpu_0) / tp["decided"]
                tp["decide_thread_cpu_us_per_event"] = round(per_event * 1e6, 1)
            log(
                f"  {name}: sustained {tp.get('events_per_s')} events/s (complete: {tp.get('complete')})"
                + (
                    f"; decide thread {tp['decide_thread_cpu_us_per_event']} us CPU per event"
                    if "decide_thread_cpu_us_per_event" in tp
                    else ""
                )
            )
        result["throughput"] = tp
        with reader.lock:  # success events flagged for brute force
            result["brute_force_hits"] = sorted(k for k in reader.kept if not k.startswith(PROBE_TYPE))
        max_rate = tp.get("events_per_s") or 0
        offset = 0  # events of `rest` sent so far
        if latency and tp.get("complete"):
            phases = sorted({*plan.rates, max(100, int(0.8 * max_rate))})
            result["latency"] = []
            for rate in phases:
                n = int(rate * plan.phase_s)
                if offset + n > len(rest):
                    log(f"  {name}: workload too short for {rate}/s x {plan.phase_s:.0f} s; skipped")
                    continue
                log(f"  {name}: latency at {rate:,}/s for {plan.phase_s:.0f} s")
                p0 = time.monotonic()
                threads_0 = threads_cpu(contender.session)
                third = plan.phase_s / 3
                profiling = _profile(contender, profile, str(rate), delay=third, seconds=min(10.0, third))
                phase = measure_latency(
                    contender,
                    reader,
                    bootstrap,
                    rest[offset : offset + n],
                    rate,
                    300,
                    timeline=tmp / f"timeline-{name}-p{parallelism}-{rate}.csv" if timeline else None,
                )
                threads_1 = threads_cpu(contender.session)
                if profiling is not None:
                    phase["profile"] = profiling.finish()
                phase["resources"] = sampler.window(p0, time.monotonic())
                if threads_1:
                    # what a decision costs at this rate (at light load, per wake-up more than per event)
                    phase["jvm_threads_cpu_us_per_event"] = per_event_us(threads_0, threads_1, n)
                phase["at_80pct_of_max"] = rate == max(100, int(0.8 * max_rate))
                offset += n
                result["latency"].append(phase)
                lat, read = phase["latency_in_kafka_ms"], phase["latency_ms"]
                log(
                    f"  {name}: {rate:,}/s -> decided {phase['decided_per_s']:,}/s; "
                    f"in Kafka p50 {lat['p50']} ms, p99 {lat['p99']} ms, p99.9 {lat['p99_9']} ms; "
                    f"read p99 {read['p99']} ms; broker to broker p99 "
                    f"{phase['latency_broker_to_broker_ms']['p99']} ms"
                    + (" (SATURATED)" if phase["saturated"] else "")
                )
                if phase["saturated"]:
                    log(f"  {name}: saturated at {rate:,}/s; higher rates not run")
                    break
        if propagation and isinstance(contender, RiskctlJob) and contender.rules_table:
            log(f"  {name}: rule propagation over {plan.edits} edits")
            last_ts = max(json.loads(r)["ts"] for r in records[: plan.backlog_events + offset])
            result["propagation"] = measure_propagation(
                settings, contender.rules_table, bootstrap, topics, reader, plan.edits, last_ts + 1
            )
        if isinstance(contender, RiskctlJob):
            try:
                result["checkpoints"] = contender.checkpoints()
                if timeline:
                    path = tmp / f"checkpoints-{name}-p{parallelism}.json"
                    path.write_text(json.dumps(contender.checkpoint_timeline(), indent=1))
                log(f"  {name}: checkpoints of the decide task: {result['checkpoints']}")
            except Exception as exc:  # noqa: BLE001 - a figure we could not read is reported, not fatal
                result["checkpoints"] = {"error": str(exc)}
            try:
                rocks = contender.rocksdb()
                keys = rocks.get("estimate-num-keys") or 0
                result["rocksdb"] = rocks | {
                    "live_bytes_per_key": round(rocks["estimate-live-data-size"] / keys, 1) if keys else None,
                    "sst_bytes_per_key": round(rocks["total-sst-files-size"] / keys, 1) if keys else None,
                }
            except Exception as exc:  # noqa: BLE001 - a metric we could not read is reported, not fatal
                result["rocksdb"] = {"error": str(exc)}
        result["resources"] = sampler.window(contender_started, time.monotonic())
    finally:
        contender.stop()
        reader.stop()
        sampler.watch_session(None)
        if isinstance(contender, PlainLoop):
            result["plain_loop_stats"] = contender.stats()
        delete_topics(bootstrap, topics.all())
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


#: completed checkpoints Flink's REST history keeps with ``--timeline`` (a full run takes about 40); a
#: MiniCluster takes it from the job's options, a standalone cluster keeps its own (ten by default)
CHECKPOINT_HISTORY = 500

#: the name Flink gives the decide task's thread (``decide -> ...``), as Linux keeps it (15 characters)
DECIDE_THREAD = "decide"


def match_recognize_check(runs: list[dict[str, Any]], seen: list[bytes]) -> dict[str, Any] | None:
    """MATCH_RECOGNIZE's brute-force hits against riskctl's (the thread job's, else the plain loop's) on the
    records both read (``seen``), or None when either run is missing its hits.

    CEP emits a match once the watermark (newest ts - 5 s) passes it; at the end of a finite input the
    watermark stops, so only successes that the final watermark passed are compared (plus the raw figures)."""
    by = {(r["contender"], r["parallelism"]): r for r in runs}
    mr = by.get(("match-recognize", 1))
    ref = next((by[k] for k in (("riskctl-thread", 1), ("plain-loop", 1)) if k in by), None)
    if not (mr and ref and "brute_force_hits" in mr and "brute_force_hits" in ref):
        return None
    sys.path.insert(0, str(ROOT / "bench" / "contenders"))
    from match_recognize import compare  # type: ignore[import-not-found]

    ts_of = {d["event_id"]: d["ts"] for d in map(json.loads, seen)}
    final_watermark = max(ts_of.values()) - 5000
    ref_hits = {h for h in ref["brute_force_hits"] if h in ts_of}
    passed = {h for h in ref_hits if ts_of[h] <= final_watermark}
    check = compare(set(mr["brute_force_hits"]), passed)
    return {
        "against": ref["contender"],
        "compared": "success events the final watermark passed",
        **check,
        "reference_hits_after_the_final_watermark": len(ref_hits - passed),
    }
