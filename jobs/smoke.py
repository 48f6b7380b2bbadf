"""Smoke job: Kafka -> count per key (RocksDB state with TTL) -> Kafka, plus a MySQL CDC table -> Kafka.

Embedded (MiniCluster):      .venv/bin/python jobs/smoke.py --input-topic in --output-topic out
Standalone cluster:          .stack/flink/home/bin/flink run -d -py jobs/smoke.py -- --input-topic in ...
Connection settings come from riskctl.toml / RISKCTL_* variables (see riskctl/config/).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from riskctl.config import load_settings
from riskctl.errors import RiskctlError


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input-topic", default="smoke-in")
    p.add_argument("--output-topic", default="smoke-out")
    p.add_argument("--group-id", default="riskctl-smoke")
    p.add_argument("--key-field", default="user_id")
    p.add_argument("--mysql-table", default="smoke_rows", help="table for the CDC source; '' disables it")
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--checkpoint-interval-ms", type=int, default=1000)
    p.add_argument("--ttl-ms", type=int, default=24 * 3600 * 1000)
    args = p.parse_args(argv)

    # imported here so that --help works without a JVM
    from riskctl.flink.env import EnvOptions, create_env, prepare_minicluster
    from riskctl.flink.smoke import SmokeOptions, build_smoke_pipeline
    from riskctl.kafka_admin import ensure_topics

    try:
        # as the risk job does: the MiniCluster's folders and log in the stack, not in /tmp and site-packages
        working_dir = prepare_minicluster(Path(settings.stack.dir), os.environ)
        env = create_env(
            EnvOptions(
                jars_dir=settings.flink.jars_dir,
                parallelism=args.parallelism,
                checkpoint_interval_ms=args.checkpoint_interval_ms,
                working_dir=working_dir,
            )
        )
        opts = SmokeOptions(
            bootstrap=settings.kafka_bootstrap,
            input_topic=args.input_topic,
            output_topic=args.output_topic,
            group_id=args.group_id,
            key_field=args.key_field,
            ttl_ms=args.ttl_ms,
            mysql_host=settings.mysql_host if args.mysql_table else None,
            mysql_port=settings.mysql_port,
            mysql_user=settings.mysql.user,
            mysql_password=settings.mysql_password if args.mysql_table else "",
            mysql_database=settings.mysql.database,
            mysql_table=args.mysql_table,
        )
        ensure_topics(opts.bootstrap, [opts.input_topic, opts.output_topic])
        build_smoke_pipeline(env, opts)
    except RiskctlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env.execute("riskctl-smoke")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
