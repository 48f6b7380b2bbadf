"""Contender: PyFlink's floor with the job's Kafka in and out, no risk logic: what any PyFlink job of
riskctl's shape drains on this box.

bench/floor.py measures the ladder by which issue 14's targets were set (datagen -> Java keyBy -> one Python
KeyedProcessFunction in thread mode with RocksDB -> blackhole). This runs the ladder's level 3 between the
risk job's own Java parts instead, in the job's own environment (``riskctl.flink.main.environment``: its
checkpoints every ``job.checkpoint_interval_ms``, RocksDB and its options, the MiniCluster's folders):

* the job's source, event time and key (``riskctl.flink.job._events``: the Kafka record's bytes, ``ts`` and
  ``user_id`` read on the Java side, Java's keyBy), preloaded by the bench as for the other contenders;
* one Python ``KeyedProcessFunction`` named ``decide`` (so that the bench reads its thread's CPU and its
  checkpoints as the job's), which does what level 3 does with the event: reads and writes one pickled
  600-byte dict in a ValueState (with the job's TTL), ``orjson.loads`` of the record and ``orjson.dumps`` of a
  small decision, one row out (key: the event id);
* the job's Kafka sink for decisions (``riskctl.flink.job._kafka_sink``: keyed, ``job.sink_linger_ms``, the
  job's delivery guarantee).

What it leaves out of the job: the rules' broadcast input, the door's checks, the engine, the other sinks.
So its drain rate bounds any PyFlink job that reads, keys, keeps a state per user and writes one record
per event here; the risk job's rate over it is what its logic costs.

Run by bench/bench.py (``--only pyflink-floor``) with the risk job's environment variables
(``RISKCTL_JOB_*``, ``RISKCTL_FLINK_OPTIONS``)::

    RISKCTL_JOB_EVENTS_TOPIC=... RISKCTL_JOB_DECISIONS_TOPIC=... python bench/contenders/pyflink_floor.py
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

#: level 3's state (bench/floor.py): a dict of twelve lists of three (time, amount) tuples, about 600 bytes
#: pickled, one counter added per event
STATE = {f"feat{i}": [(1_700_000_000_000 + i, i * 1.5)] * 3 for i in range(12)}


def floor_function(ttl_ms: int) -> Any:
    """The floor's Python function (level 3 of the ladder, keyed by the job's key, one row out)."""
    import orjson
    from pyflink.common import Row, Types
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.datastream.state import ValueStateDescriptor

    class Floor(KeyedProcessFunction):  # type: ignore[misc]
        def open(self, runtime_context: Any) -> None:
            from riskctl.flink.env import ttl_config

            # the job's state name, under which the bench reads RocksDB's metrics
            desc = ValueStateDescriptor("engine", Types.PICKLED_BYTE_ARRAY())
            desc.enable_time_to_live(ttl_config(ttl_ms))
            self.state = runtime_context.get_state(desc)

        def process_element(self, value: Any, ctx: Any) -> Any:
            try:
                event_id = str(orjson.loads(value[0])["event_id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                event_id = ""
            doc = self.state.value() or dict(STATE)
            doc["n"] = doc.get("n", 0) + 1
            self.state.update(doc)
            decision = {"event_id": event_id, "action": "PASS", "rules": [], "features": {"n": doc["n"]}}
            yield Row(event_id, orjson.dumps(decision))

    return Floor()


def main() -> int:
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    logging.basicConfig(level=logging.WARNING)
    from pyflink.table import StreamTableEnvironment

    from riskctl.config import load_settings
    from riskctl.flink.job import _events, _kafka_sink
    from riskctl.flink.main import environment
    from riskctl.flink.risk_function import RECORD

    settings = load_settings()
    env = environment(settings)
    t_env = StreamTableEnvironment.create(env)
    job = settings.job
    decided = (
        _events(t_env, settings)
        .process(floor_function(job.state_ttl_ms + job.state_ttl_margin_ms), output_type=RECORD)
        .name("decide")
        .uid("floor-decide")
    )
    sink = _kafka_sink(t_env, "decisions_sink", job.decisions_topic, settings)
    t_env.from_data_stream(decided).execute_insert(sink).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
