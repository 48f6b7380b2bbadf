"""Contender: Flink SQL ``MATCH_RECOGNIZE`` (Java CEP) for the brute-force rule, the JVM reference for it.

The rule (``rules/brute_force.yaml``): three consecutive failed logins of a user (no other event of that user
in between), then a successful login, the whole run within 10 s of event time. Here as SQL only (no Python
function runs in the job, so it is Java end to end): a Kafka table of JSON events with a 5 s
bounded-out-of-orderness watermark (the riskctl job's default lateness), ``MATCH_RECOGNIZE`` partitioned by
user and ordered by event time, one output record per match (key: the success event's id) to a Kafka topic.

Differences in semantics that can make it disagree with riskctl, by design of each (``compare`` reports them):

* CEP emits a match only once the watermark passes it (event-time order); riskctl decides each event when it
  arrives and places late events within the lateness. On a finite input, matches in the last ``lateness`` of
  event time are never emitted by CEP (the watermark stops with the input).
* ``WITHIN INTERVAL '10' SECOND`` bounds the time from the first to the last row of a match; riskctl's
  ``within: 10s`` does the same; a run of exactly 10 s may fall on either side of the boundary.

    python bench/contenders/match_recognize.py --bootstrap 127.0.0.1:19092 --events-topic T --out-topic O \\
        --group-id G [--parallelism 1]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from harness.contenders import contender_parser  # noqa: E402

LATENESS_S = 5
WITHIN_S = 10


def _q(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def statements(bootstrap: str, events_topic: str, out_topic: str, group_id: str) -> list[str]:
    """The DDL and the INSERT of the job (also what the tests of this file check)."""
    source = {
        "connector": "kafka",
        "topic": events_topic,
        "properties.bootstrap.servers": bootstrap,
        "properties.group.id": group_id,
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "earliest-offset",
        "format": "json",
        "json.ignore-parse-errors": "true",
        "json.fail-on-missing-field": "false",
    }
    sink = {
        "connector": "kafka",
        "topic": out_topic,
        "properties.bootstrap.servers": bootstrap,
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "at-least-once",
    }

    def with_(opts: dict[str, str]) -> str:
        return ", ".join(f"{_q(k)} = {_q(v)}" for k, v in opts.items())

    return [
        f"""CREATE TEMPORARY TABLE mr_events (
              event_id STRING, user_id STRING, `type` STRING, success BOOLEAN, ts BIGINT,
              rt AS TO_TIMESTAMP_LTZ(ts, 3),
              WATERMARK FOR rt AS rt - INTERVAL '{LATENESS_S}' SECOND
            ) WITH ({with_(source)})""",
        f"CREATE TEMPORARY TABLE mr_matches (k STRING, v STRING) WITH ({with_(sink)})",
        f"""INSERT INTO mr_matches
            SELECT success_event_id,
                   JSON_OBJECT('user_id' VALUE user_id, 'success_event_id' VALUE success_event_id,
                               'first_fail_ts' VALUE first_fail_ts, 'success_ts' VALUE success_ts)
            FROM mr_events
            MATCH_RECOGNIZE (
              PARTITION BY user_id
              ORDER BY rt
              MEASURES
                FIRST(F.ts) AS first_fail_ts,
                S.ts AS success_ts,
                S.event_id AS success_event_id
              ONE ROW PER MATCH
              AFTER MATCH SKIP PAST LAST ROW
              PATTERN (F{{3}} S) WITHIN INTERVAL '{WITHIN_S}' SECOND
              DEFINE
                F AS F.`type` = 'login' AND F.success = FALSE,
                S AS S.`type` = 'login' AND S.success = TRUE
            )""",
    ]


def compare(mr_hits: set[str], riskctl_hits: set[str]) -> dict[str, Any]:
    """Success event ids flagged by MATCH_RECOGNIZE and by riskctl's ``brute_force_login`` on the same
    records. Matches riskctl alone has may be at the very end of the input (see the module docstring)."""
    common = mr_hits & riskctl_hits
    return {
        "match_recognize": len(mr_hits),
        "riskctl": len(riskctl_hits),
        "common": len(common),
        "only_match_recognize": sorted(mr_hits - riskctl_hits)[:20],
        "only_riskctl": sorted(riskctl_hits - mr_hits)[:20],
        "agree": mr_hits == riskctl_hits,
    }


def main(argv: list[str] | None = None) -> int:
    ap = contender_parser(__doc__)
    ap.add_argument("--out-topic", required=True)
    ap.add_argument("--parallelism", type=int, default=1)
    args = ap.parse_args(argv)

    from pyflink.table import StreamTableEnvironment

    from riskctl.config import load_settings
    from riskctl.flink.env import EnvOptions, create_env, prepare_minicluster
    from riskctl.kafka_admin import ensure_topics

    settings = load_settings()
    ensure_topics(args.bootstrap, [args.events_topic, args.out_topic], partitions=2)
    # as the risk job: its MiniCluster's folders and log in the stack, where the next run removes them
    working_dir = prepare_minicluster(Path(settings.stack.dir), os.environ)
    env = create_env(
        EnvOptions(
            jars_dir=settings.flink.jars_dir,
            parallelism=args.parallelism,
            checkpoint_interval_ms=0,
            working_dir=working_dir,
        )
    )
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.exec.source.idle-timeout", "10 s")
    *ddl, insert = statements(args.bootstrap, args.events_topic, args.out_topic, args.group_id)
    for sql in ddl:
        t_env.execute_sql(sql)
    print("READY", flush=True)
    t_env.execute_sql(insert).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
