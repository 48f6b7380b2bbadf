"""Every figure of the side-by-side benchmark, in one run: riskctl against what a user would pick instead.

    .venv/bin/python bench/bench.py --quick      # small workload, short phases
    .venv/bin/python bench/bench.py              # the full run (durations: bench/README.md)

Writes ``bench/results/bench.json`` (every figure, the machine and the command), ``bench/results/bench.md``
(tables) and PNG plots (``bench_latency.png``: latency percentiles against offered rate, per contender;
``bench_throughput.png``: maximum sustained throughput per contender). Progress goes to stderr.

Workload: the simulator's traffic (``riskctl.sim``) with attacks mixed in, 100,000 users with Zipf-skewed
activity, generated once into ``bench/.work/`` (JSON lines) and loaded into Kafka, so every contender reads
the same records with the same rules (``rules/``).

Contenders (each on its own fresh topics, started from its own process):

* ``riskctl-thread``: the risk job on the embedded MiniCluster, thread mode (the default), rules by MySQL CDC.
* ``pyflink-floor``: PyFlink's floor between the job's own Kafka source and sink, no risk logic
  (``bench/contenders/pyflink_floor.py``): what any PyFlink job of this shape drains here; throughput only.
* ``riskctl-process``: the same job with ``python.execution-mode=process``.
* ``plain-loop``: a plain Python Kafka consumer loop running the same pure engine with in-memory dicts
  (``bench/contenders/plain_loop.py``); at parallelism 2, two such processes in one consumer group.
* ``match-recognize``: Flink SQL ``MATCH_RECOGNIZE`` (Java CEP) for the brute-force rule only, as the JVM
  reference; checked against riskctl's brute-force hits on the same records.

Figures: (a) maximum sustained throughput, Kafka in to decisions out, parallelism 1 and 2 (events preloaded,
then the contender starts: decisions/s from the first to the last decision); (b) latency from produce to
decision visible at fixed offered rates (1k, 5k events/s, 80% of the contender's maximum); (c) rule
propagation, MySQL commit to the first decision made with the new version, over 20+ edits; (d) RocksDB state
bytes per active user (RocksDB's own estimates, through the Flink REST metrics); (e) the pure engine's
events/s on the same workload; (f) CPU and memory of every process during each contender's run.

This file is the command; the harness it drives is the package ``bench/harness/`` (workload, Kafka I/O,
contenders, sampling, measures, propagation, one contender's run, report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from floor import floor  # noqa: E402
from harness import RESULTS, ROOT, WORK, log  # noqa: E402
from harness.contenders import (  # noqa: E402
    ClusterJob,
    Contender,
    MatchRecognize,
    PlainLoop,
    PyFlinkFloor,
    RiskctlJob,
    RiskctlProcessJob,
    cluster_down,
    cluster_process_name,
    cluster_running,
    cluster_up,
)
from harness.measures import pure_engine_runs  # noqa: E402
from harness.profiler import phase_and_event  # noqa: E402
from harness.report import markdown, plots, targets  # noqa: E402
from harness.run import match_recognize_check, run_contender  # noqa: E402
from harness.sampling import Sampler, machine, speed  # noqa: E402
from harness.workload import Plan, workload  # noqa: E402

from riskctl.config import load_settings  # noqa: E402
from riskctl.core import native  # noqa: E402


def pyflink_floor(when: str) -> dict[str, Any]:
    """PyFlink's floor on this box (bench/floor.py, levels 0 and 3; no riskctl code): what the box charges the
    job's shape; a failure is reported in its place, and the run goes on."""
    log(f"PyFlink's floor {when} (bench/floor.py, levels 0 and 3)")
    try:
        return floor((0, 3))
    except Exception as exc:  # noqa: BLE001 - the contenders' figures are written all the same
        log(f"PyFlink's floor failed: {exc}")
        return {"error": str(exc)[-2000:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small workload, short phases (a few minutes)")
    ap.add_argument(
        "--only",
        default="",
        help="contenders to run, comma-separated "
        "(riskctl-thread, pyflink-floor, riskctl-process, plain-loop, match-recognize, riskctl-cluster)",
    )
    ap.add_argument("--no-p2", action="store_true", help="skip the parallelism-2 throughput runs")
    ap.add_argument(
        "--no-cluster",
        action="store_true",
        help="skip the standalone-cluster run (p=2 on two one-slot TaskManagers, started if needed)",
    )
    ap.add_argument(
        "--flink-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Flink configuration for the riskctl jobs (repeatable), to compare settings",
    )
    ap.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the throughput figures (no latency phases, no rule propagation): for before/after runs",
    )
    ap.add_argument(
        "--profile",
        metavar="PHASE",
        help="attach async-profiler to the MiniCluster jobs' JVM during one phase: 'sustained' or a rate of "
        "the latency phases (e.g. 1000), with ':wall' for wall-clock samples (e.g. sustained:wall); "
        "collapsed stacks in the run's log folder under bench/.work",
    )
    ap.add_argument(
        "--timeline",
        action="store_true",
        help="write every latency phase's events (send time, latency) and the job's checkpoints into the "
        "run's log folder under bench/.work, for bench/flink_profile/stalls.py (where the tail comes from)",
    )
    ap.add_argument("--out", default=str(RESULTS), help="folder for bench.json, bench.md and the plots")
    args = ap.parse_args(argv)
    try:
        phase_and_event(args.profile or "")
    except ValueError as exc:
        ap.error(f"--profile: {exc}")
    plan = Plan.of(args.quick)
    settings = load_settings()
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    doc: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "plan": plan.__dict__,
        "flink_options": args.flink_option,
        "job_engine_core": native.describe(),  # compiled by default when setup built it
        "machine": machine(),
        "runs": [],
    }
    needed = plan.events_needed()
    records = workload(plan.users, needed)
    from riskctl.core.rules import load_rules

    doc["workload"] = {
        "users": plan.users,
        "events": len(records),
        "zipf": 1.0,
        "rules": len(load_rules(ROOT / "rules").rules),
    }
    from riskctl.stack.services import services

    roles = {"bench (load generator, reader)": os.getpid()}
    for service in services(settings, flink=False):
        pids = service.pids()
        if not pids:
            msg = f"the local {service.name} is not running: start the stack with 'riskctl stack up'"
            raise SystemExit(msg)
        roles[service.name] = pids[0]

    runs: list[tuple[type[Contender], str, int, bool, bool]] = [
        (RiskctlJob, "riskctl-thread", 1, True, True),
        (PyFlinkFloor, "pyflink-floor", 1, False, False),
        (PlainLoop, "plain-loop", 1, True, False),
        (RiskctlProcessJob, "riskctl-process", 1, True, False),
        (MatchRecognize, "match-recognize", 1, False, False),
    ]
    if not args.no_p2:
        runs += [(RiskctlJob, "riskctl-thread", 2, False, False), (PlainLoop, "plain-loop", 2, False, False)]
    # The cluster run's cluster is checked now (a busy one fails the run before any contender) and started
    # just before that run, last: up from the start, its idle JVMs took some 10% of a core beside every other
    # contender on this 2-core box (bench-20261207-1753). One the bench started is stopped after it.
    cluster_was_up = False
    if not args.no_p2 and not args.no_cluster and (not only or "riskctl-cluster" in only):
        cluster_was_up = cluster_running(settings)
        runs += [(ClusterJob, "riskctl-cluster", 2, True, False)]
    # PyFlink's floor just before the first contender (riskctl-thread p=1), which the report sets against it,
    # and again at the end: the box's speed moves within a run
    doc["floor"] = pyflink_floor("at the start")
    sampler = Sampler(roles)
    sampler.start()
    # contenders' logs and checkpoints stay here after the run (bench/.work is ignored by git)
    tmp = WORK / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    tmp.mkdir(parents=True)
    doc["logs"] = str(tmp)
    for kind, name, p, latency, propagation in runs:
        if only and name not in only:
            continue
        try:
            if kind is ClusterJob:
                pids = cluster_up(settings)
                sampler.add_roles({f"flink cluster {cluster_process_name(pid)} {pid}": pid for pid in pids})
            doc["runs"].append(
                run_contender(
                    kind,
                    name,
                    p,
                    settings,
                    plan,
                    records,
                    sampler,
                    tmp,
                    latency=latency and not args.throughput_only,
                    propagation=propagation and not args.throughput_only,
                    flink_options=args.flink_option,
                    profile=args.profile,
                    timeline=args.timeline,
                )
            )
        except Exception as exc:  # noqa: BLE001 - one contender failing is a result, the others still run
            log(f"{name} p={p} failed: {exc}")
            doc["runs"].append({"contender": name, "parallelism": p, "error": str(exc)[-2000:]})
        finally:
            if kind is ClusterJob and not cluster_was_up:
                cluster_down(settings)
    sampler.stop()

    doc["floor_end"] = pyflink_floor("at the end")
    # After the contenders, on an idle box: measured before them, it shared the cores with the cluster's JVMs
    # starting (38,540 events/s against 45,000-51,000 alone, 2026-12-05). Each run in a fresh process.
    log("pure engine on the throughput events (3 runs of each, each in a fresh process)")
    engine_events = records[: plan.engine_events]
    # the compiled core the riskctl jobs run (scripts/setup builds it), or the one RISKCTL_NATIVE_CORE names
    build = os.environ.get(native.ENV, "").strip() or native.default_for_jobs()
    # each core with the collector as riskctl replay runs it, and as the job does (off: what the engine costs
    # in the job's decide function)
    for base, core in (("pure_engine", ""), ("pure_engine_compiled", build)):
        if core is None:
            continue
        for key, collector in ((base, "replay"), (f"{base}_job_gc", "job")):
            try:
                doc[key] = pure_engine_runs(engine_events, core, collector=collector)
                log(
                    f"  {doc[key]['runs_events_per_s']} events/s ({doc[key]['core']}, collector: {collector})"
                )
            except Exception as exc:  # noqa: BLE001 - the contenders' figures are written all the same
                log(f"pure engine ({core or 'python'}, collector: {collector}) failed: {exc}")
                doc[key] = {"error": str(exc)[-2000:], "core": core or "python"}

    # the box's speed again after the run: a shared box changes speed within the hour (harness.sampling)
    doc["machine"] |= speed("_end")
    check = match_recognize_check(doc["runs"], records[: plan.backlog_events])
    if check is not None:
        doc["match_recognize_check"] = check
    for r in doc["runs"]:
        r.pop("brute_force_hits", None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    earlier = out / "bench.json"
    if earlier.exists():  # the API's figures come from bench/api_bench.py: kept until its next run
        api = json.loads(earlier.read_text()).get("api")
        if api:
            doc["api"] = api
    doc["targets"] = targets(doc)
    doc["plots"] = plots(doc, out)
    (out / "bench.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(markdown(doc))
    log(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {len(doc['plots'])} plots")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
