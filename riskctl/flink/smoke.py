"""The smoke pipeline: proves the stack end to end through every real part the product uses.

* Kafka -> JSON parse -> key by a field -> count per key in a RocksDB ``ValueState`` with TTL -> Kafka
  (thread mode, a ``KeyedProcessFunction``);
* a MySQL CDC source (Flink CDC ``mysql-cdc`` through the Table API, turned into a changelog stream) on one
  table: every inserted/updated/deleted row becomes a record on the same output topic.

Output records are JSON: ``{"source": "kafka", "key": K, "count": N, "offset_ts": T}`` and
``{"source": "cdc", "op": "INSERT", "row": {...}}``
(op is the RowKind: INSERT, UPDATE_BEFORE, UPDATE_AFTER, DELETE).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyflink.common import Row, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import DataStream, KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import StreamTableEnvironment

from riskctl.flink.env import ttl_config


@dataclass
class SmokeOptions:
    """The smoke pipeline's topics, key, state TTL and (optional) MySQL table."""

    bootstrap: str
    input_topic: str
    output_topic: str
    group_id: str
    key_field: str = "user_id"
    ttl_ms: int = 24 * 3600 * 1000
    mysql_host: str | None = None
    mysql_port: int = 3306
    mysql_user: str = "riskctl"
    mysql_password: str = ""
    mysql_database: str = "riskctl"
    mysql_table: str = "smoke_rows"
    server_id: str = "5500-5504"


class CountPerKey(KeyedProcessFunction):  # type: ignore[misc]
    """Counts the records of each key in a TTL'd ValueState (RocksDB) and emits the running count."""

    def __init__(self, ttl_ms: int) -> None:
        self.ttl_ms = ttl_ms
        self.count: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        desc = ValueStateDescriptor("count", Types.LONG())
        desc.enable_time_to_live(ttl_config(self.ttl_ms))
        self.count = runtime_context.get_state(desc)

    def process_element(self, value: tuple[str, str], ctx: KeyedProcessFunction.Context) -> Iterator[str]:
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield json.dumps({"source": "kafka", "key": value[0], "count": n})


def _key_of(key_field: str) -> Any:
    def parse(raw: str) -> tuple[str, str]:
        try:
            doc = json.loads(raw)
            key = str(doc.get(key_field)) if isinstance(doc, dict) else "<not-an-object>"
        except ValueError:
            key = "<not-json>"
        return key, raw

    return parse


def _cdc_stream(env: StreamExecutionEnvironment, opts: SmokeOptions) -> DataStream:
    t_env = StreamTableEnvironment.create(env)
    password = opts.mysql_password.replace("'", "''")
    t_env.execute_sql(f"""
        CREATE TABLE smoke_cdc (
            id BIGINT,
            name STRING,
            PRIMARY KEY (id) NOT ENFORCED
        ) WITH (
            'connector' = 'mysql-cdc',
            'hostname' = '{opts.mysql_host}',
            'port' = '{opts.mysql_port}',
            'username' = '{opts.mysql_user}',
            'password' = '{password}',
            'database-name' = '{opts.mysql_database}',
            'table-name' = '{opts.mysql_table}',
            'server-id' = '{opts.server_id}',
            'server-time-zone' = 'UTC',
            'scan.startup.mode' = 'initial'
        )
    """)  # noqa: S608 - DDL built from our own options
    changelog = t_env.to_changelog_stream(t_env.from_path("smoke_cdc"))

    def to_json(row: Row) -> str:
        return json.dumps(
            {"source": "cdc", "op": row.get_row_kind().name, "row": {"id": row[0], "name": row[1]}}
        )

    return changelog.map(to_json, output_type=Types.STRING())


def build_smoke_pipeline(env: StreamExecutionEnvironment, opts: SmokeOptions) -> None:
    """Add the smoke pipeline's sources, operators and sink to ``env``."""
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(opts.bootstrap)
        .set_topics(opts.input_topic)
        .set_group_id(opts.group_id)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("fetch.max.wait.ms", "50")
        .build()
    )
    events = env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-events")
    counts = (
        events.map(_key_of(opts.key_field), output_type=Types.TUPLE([Types.STRING(), Types.STRING()]))
        .key_by(lambda kv: kv[0], key_type=Types.STRING())
        .process(CountPerKey(opts.ttl_ms), output_type=Types.STRING())
        .name("count-per-key")
    )
    out = counts
    if opts.mysql_host:
        out = counts.union(_cdc_stream(env, opts))
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(opts.bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(opts.output_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("linger.ms", "0")
        .build()
    )
    out.sink_to(sink).name("kafka-out")
