"""What a record costs in PyFlink thread mode before any risk logic, on this box, today.

The issue that set the job's speed targets (issue 14) measured the floor of the job's shape with
``../shared/perf/floor_ladder.py`` on a quiet box of this kind (2026-12-02): Java datagen -> Java keyBy -> one
Python KeyedProcessFunction (thread mode, RocksDB, p=1) -> blackhole, each level adding one piece:

====  ===========================================================================  ============  ===========
level the Python function does                                                      records/s     us/record
====  ===========================================================================  ============  ===========
0     nothing (called, yields nothing)                                              74,000        13.5
1     + read and write one pickled ValueState (a 600-byte dict of lists of tuples)  33,000        30
2     + yield one Row(str, str, str)                                                31,000        32
3     + orjson loads and dumps                                                      29,000        34
====  ===========================================================================  ============  ===========

This is that ladder, kept in the repository so that every full bench run measures it beside the job
(``bench/bench.py`` runs levels 0 and 3 just before its first contender and after its last, and its report
sets the decide thread's figure against the first): a shared box's speed changes by the hour, and these
levels run no riskctl code, so what they cost more than on 2026-12-02 is the box. The pieces are the
ladder's, not the job's (a pickled state against the job's marshalled bytes, a blackhole against its Kafka
writers, one input against two).

Per-record cost: each level runs twice, ``--small`` and ``--big`` records, each in a fresh process (its own
MiniCluster); (seconds at big - seconds at small) / (big - small) removes the start-up and the job's
submission. Usage::

    .venv/bin/python bench/floor.py [--levels 0,1,2,3] [--small 20000] [--big 220000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, log, process_env  # noqa: E402
from harness.sampling import REFERENCE_FLOOR_US  # noqa: E402

LEVELS = tuple(REFERENCE_FLOOR_US)
#: each level's run prints this prefix, then its figures as JSON
MARK = "floor-level "


def per_record_us(small: tuple[int, float], big: tuple[int, float]) -> float | None:
    """us per record from two runs ``(records, seconds)`` of one level: the start-up cancels out. None when
    the larger run was not slower (the box stalled the small one: no figure rather than a wrong one)."""
    (n0, s0), (n1, s1) = small, big
    if n1 <= n0 or s1 <= s0:
        return None
    return (s1 - s0) / (n1 - n0) * 1e6


def floor(levels: tuple[int, ...] = (0, 3), small: int = 20_000, big: int = 220_000) -> dict[str, Any]:
    """Each level's cost per record on this box (a child process per level and size), and the reference."""
    out: dict[str, Any] = {"small": small, "big": big, "levels": {}}
    for level in levels:
        runs = [(n, _child(level, n)) for n in (small, big)]
        us, ref = per_record_us(runs[0], runs[1]), REFERENCE_FLOOR_US[level]
        out["levels"][str(level)] = {
            "seconds": {str(n): round(s, 2) for n, s in runs},
            "us_per_record": round(us, 1) if us is not None else None,
            "records_per_s": round(1e6 / us) if us else None,
            "reference_us_per_record": ref,
        }
        log(f"  floor level {level}: {us and round(us, 1)} us per record (2026-12-02: {ref})")
    return out


def _child(level: int, rows: int) -> float:
    """Run one level over ``rows`` records in a fresh process: the seconds from submitting to the end."""
    from riskctl.flink.pythonpath import python_path

    env = process_env({"PYTHONPATH": python_path()})  # pemja's interpreter needs the venv's site-packages
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(level), str(rows)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)  # noqa: S603
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        msg = f"floor level {level} ({rows} records) exited {done.returncode}: {done.stderr[-1500:]}"
        raise RuntimeError(msg)
    return float(json.loads(lines[-1][len(MARK) :])["seconds"])


def child(level: int, rows: int) -> None:
    """The ladder's job at ``level`` over ``rows`` datagen records; prints its seconds."""
    import orjson
    from pyflink.common import Configuration, Row, Types
    from pyflink.datastream import KeyedProcessFunction, KeyedStream, StreamExecutionEnvironment
    from pyflink.datastream.state import ValueStateDescriptor
    from pyflink.java_gateway import get_gateway
    from pyflink.table import StreamTableEnvironment

    cfg = Configuration()
    cfg.set_string("python.execution-mode", "thread")
    cfg.set_string("state.backend.type", "rocksdb")
    cfg.set_string("python.executable", sys.executable)
    cfg.set_string("rest.bind-address", "127.0.0.1")
    cfg.set_string("jobmanager.bind-host", "127.0.0.1")
    env = StreamExecutionEnvironment.get_execution_environment(cfg)
    env.set_parallelism(1)
    t_env = StreamTableEnvironment.create(env)
    # datagen's default is 10,000 rows a second: raised, or every level would read 10k/s
    t_env.execute_sql(f"""CREATE TEMPORARY TABLE src (k INT, v STRING) WITH ('connector'='datagen',
      'number-of-rows'='{rows}', 'rows-per-second'='100000000',
      'fields.k.min'='0', 'fields.k.max'='9999', 'fields.v.length'='300')""")
    table = t_env.sql_query("SELECT CAST(k AS STRING) AS k, ROW(v) AS v FROM src")
    raw = Types.ROW_NAMED(["v"], [Types.STRING()])
    stream = t_env.to_append_stream(table, Types.ROW_NAMED(["k", "v"], [Types.STRING(), raw]))
    keyed_j = stream._j_data_stream.keyBy(  # noqa: SLF001 - the Java keyBy the job uses too (no Python key selector)
        get_gateway().jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    keyed = KeyedStream(keyed_j, raw, stream)
    out_type = Types.ROW_NAMED(["ch", "k", "v"], [Types.STRING(), Types.STRING(), Types.STRING()])
    doc = {f"feat{i}": [(1_700_000_000_000 + i, i * 1.5)] * 3 for i in range(12)}

    class Level(KeyedProcessFunction):  # type: ignore[misc]
        def open(self, ctx: Any) -> None:
            self.st = ctx.get_state(ValueStateDescriptor("s", Types.PICKLED_BYTE_ARRAY()))

        def process_element(self, value: Any, ctx: Any) -> Any:
            if level >= 1:
                d = self.st.value() or dict(doc)
                d["n"] = d.get("n", 0) + 1
                self.st.update(d)
            if level >= 3:
                orjson.loads(orjson.dumps({"raw": value[0]}))
                out = orjson.dumps(
                    {"event_id": "x", "action": "PASS", "rules": [], "features": {"a": 1}}
                ).decode()
            else:
                out = "PASS"
            if level >= 2:
                yield Row("decision", "k", out)

    outs = keyed.process(Level(), output_type=out_type)
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE sink (ch STRING, k STRING, v STRING) WITH ('connector'='blackhole')"
    )
    t0 = time.time()
    t_env.from_data_stream(outs).execute_insert("sink").wait()
    print(MARK + json.dumps({"level": level, "rows": rows, "seconds": time.time() - t0}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="0,1,2,3", help="comma-separated levels (0-3)")
    ap.add_argument("--small", type=int, default=20_000, help="records of the first run of each level")
    ap.add_argument("--big", type=int, default=220_000, help="records of the second run of each level")
    ap.add_argument("--child", nargs=2, type=int, metavar=("LEVEL", "ROWS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    try:
        levels = tuple(int(x) for x in args.levels.split(","))
    except ValueError:
        ap.error(f"--levels: not a list of integers: {args.levels!r}")
    if bad := [x for x in levels if x not in LEVELS]:
        ap.error(f"--levels: no level {bad[0]} (0-3)")
    if not 0 < args.small < args.big:
        ap.error("--small must be positive and less than --big")
    print(json.dumps(floor(levels, args.small, args.big), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
