"""Typed configuration in one place.

Values come, last one winning, from the defaults below, a TOML file (``riskctl.toml`` in the working
directory,
or the path in ``RISKCTL_CONFIG``), and environment variables named ``RISKCTL_<SECTION>_<KEY>`` (for instance
``RISKCTL_KAFKA_BOOTSTRAP``, ``RISKCTL_MYSQL_PASSWORD``). Secrets never live in code: the MySQL password comes
from the environment, the file, or — for the local stack only — the password file the stack generated on its
first start (``.stack/mysql/password``). ``Settings.redacted()`` masks secrets for printing.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from riskctl.core.door import Limits
from riskctl.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_SECRET_KEYS = {"password"}


@dataclass
class StackSettings:
    """The local stack that ``riskctl stack`` runs: where its data lives and which ports it takes."""

    dir: str = str(PROJECT_ROOT / ".stack")
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    mysql_port: int = 13306
    flink_rest_port: int = 18081
    flink_rpc_port: int = 16123
    flink_slots: int = 2
    #: TaskManager processes of the local cluster; in thread mode each runs one Python interpreter (one GIL)
    flink_taskmanagers: int = 1
    kafka_heap: str = "512m"
    #: how the local cluster notices a dead TaskManager (or JobManager): heartbeats every interval; a target
    #: is dead after ``flink_heartbeat_rpc_failure_threshold`` heartbeat RPCs in a row failed (a killed
    #: process refuses the connection: noticed in interval x threshold, ~3 s), or after the timeout
    #: without an answer (a hung or cut-off machine). Flink's defaults (10 s, 50 s, 2) took 11-16 s, while
    #: the job kept deploying to the dead TaskManager. See docs/operations.md.
    flink_heartbeat_interval_ms: int = 1000
    flink_heartbeat_timeout_ms: int = 10000
    flink_heartbeat_rpc_failure_threshold: int = 3


@dataclass
class KafkaSettings:
    bootstrap: str = ""  # empty: the local stack's broker


@dataclass
class MysqlSettings:
    host: str = ""  # empty: the local stack's server
    port: int = 0
    user: str = "riskctl"
    password: str = ""
    database: str = "riskctl"


@dataclass
class FlinkSettings:
    jars_dir: str = str(PROJECT_ROOT / ".cache" / "jars")
    rest_url: str = ""  # empty: the local stack's standalone cluster
    #: extra Flink configuration for the job, "key=value" pairs separated by ";" (e.g. "rest.port=8082")
    options: str = ""


@dataclass
class JobSettings:
    """The risk job: topics, rules source, state, time and delivery."""

    events_topic: str = "riskctl.events"
    decisions_topic: str = "riskctl.decisions"
    alerts_topic: str = "riskctl.alerts"
    dead_letter_topic: str = "riskctl.dead-letter"
    rule_status_topic: str = "riskctl.rule-status"
    group_id: str = "riskctl-job"
    starting_offsets: str = "committed"  # committed (falls back to earliest) | earliest | latest
    rules_source: str = "cdc"  # cdc | poll | file
    rules_table: str = "rules"
    rules_dir: str = str(PROJECT_ROOT / "rules")
    poll_interval_ms: int = 1000
    cdc_server_id: str = "5401-5404"
    #: how often the CDC binlog client checks its connection and reconnects after an outage (Debezium's
    #: connect.keep.alive.interval.ms, default 60 s: a rule edit took 66-71 s to arrive after an outage)
    cdc_keepalive_ms: int = 1000
    #: after a failed write of a rule status to MySQL, wait this long before the next attempt (statuses queue)
    status_retry_ms: int = 1000
    #: Kafka clients of the job: the longest wait between reconnection attempts to a broker that went away
    kafka_reconnect_backoff_max_ms: int = 1000
    parallelism: int = 1
    checkpoint_interval_ms: int = 5000
    checkpoint_dir: str = ""  # empty: <stack dir>/checkpoints
    state_ttl_ms: int = 24 * 3600 * 1000
    lateness_ms: int = 5000
    idleness_ms: int = 10000
    delivery: str = "at-least-once"  # at-least-once | exactly-once
    rules_wait_ms: int = 10000  # hold events this long at start-up until the first rules arrive
    buffer_timeout_ms: int = 5
    sink_linger_ms: int = 2  # Kafka producer linger.ms of the job's sinks (0 costs a request per record)
    restore_from: str = ""  # a retained checkpoint (.../chk-N) or savepoint to start from
    # limits at the door (riskctl.core.door, docs/config.md "Limits at the door")
    max_event_bytes: int = 65_536
    max_depth: int = 16
    max_string_chars: int = 4_096
    max_clock_skew_ms: int = 300_000
    dead_letter_max_bytes: int = 262_144

    def limits(self) -> Limits:
        """The door's :class:`~riskctl.core.door.Limits` from these settings; a bad value is a ConfigError."""
        try:
            return Limits(
                max_event_bytes=self.max_event_bytes,
                max_depth=self.max_depth,
                max_string_chars=self.max_string_chars,
                max_clock_skew_ms=self.max_clock_skew_ms,
                dead_letter_max_bytes=self.dead_letter_max_bytes,
            )
        except ValueError as exc:
            msg = f"job.{exc}"
            raise ConfigError(msg) from None

    #: Restarts after a failure (a lost TaskManager, a broker gone): Flink's exponential-delay strategy. The
    #: first restart waits ``restart_initial_backoff_ms``, each next one ``restart_backoff_multiplier`` times
    #: longer, at most ``restart_max_backoff_ms``; after ``restart_reset_backoff_threshold_ms`` without a
    #: failure the delay (and the attempt count) starts over. ``restart_max_attempts`` failures in a row
    #: without such a reset fail the job; 0: no cap (a job that fails forever restarts every max backoff,
    #: which ``numRestarts`` shows). See docs/operations.md.
    restart_initial_backoff_ms: int = 1000
    restart_max_backoff_ms: int = 30000
    restart_backoff_multiplier: float = 2.0
    restart_reset_backoff_threshold_ms: int = 20000
    restart_jitter_factor: float = 0.1
    restart_max_attempts: int = 0


@dataclass
class ServeSettings:
    """``riskctl serve``, the synchronous decision API (docs/api.md). Its limits on events are the job's
    (``job.max_event_bytes`` ...), on purpose: the API refuses exactly what the job would dead-letter."""

    host: str = "127.0.0.1"
    port: int = 8088
    #: this instance's name (reply keys, probe user); empty: <hostname>-<pid>
    instance: str = ""
    #: the topic where the job also writes the decision of an event that carries a ``reply_to`` key; empty:
    #: the job writes no replies (and ``riskctl serve`` refuses to start)
    replies_topic: str = "riskctl.replies"
    #: partitions of the replies topic when it is created: the most instances that get a partition each
    replies_partitions: int = 16
    #: the partition of the replies topic this instance reads; -1: derived from the instance name (crc32)
    reply_partition: int = -1
    #: wait for the job's decision this long by default (fits a 200 ms budget with room for the network)
    timeout_ms: int = 150
    #: bounds of the ``timeout_ms`` a request may ask for
    min_timeout_ms: int = 5
    max_timeout_ms: int = 10_000
    #: what to answer when the decision does not come in time: open (PASS), review (REVIEW), reject (REJECT)
    fallback: str = "open"
    #: idempotency by event_id: how long and how many requests are remembered (per instance)
    idempotency_ttl_ms: int = 600_000
    idempotency_max_entries: int = 100_000
    #: requests waiting for a decision at once; beyond: 503
    max_in_flight: int = 20_000
    #: /readyz needs a decision round trip within this window; a probe event is sent when none happened
    #: for probe_interval_ms (0: no probes, readiness then depends on real traffic)
    ready_window_ms: int = 10_000
    probe_interval_ms: int = 2_000
    #: on SIGTERM, in-flight requests get this long to finish before Kafka is closed
    shutdown_timeout_ms: int = 10_000
    #: the producer gives up delivering an event after this long (the request has its fallback by then)
    produce_timeout_ms: int = 5_000


@dataclass
class Settings:
    stack: StackSettings = field(default_factory=StackSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    mysql: MysqlSettings = field(default_factory=MysqlSettings)
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    job: JobSettings = field(default_factory=JobSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)

    # -- derived values: what a client connects to -------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap or f"{self.stack.host}:{self.stack.kafka_port}"

    @property
    def mysql_host(self) -> str:
        return self.mysql.host or self.stack.host

    @property
    def mysql_port(self) -> int:
        return self.mysql.port or self.stack.mysql_port

    @property
    def mysql_password(self) -> str:
        if self.mysql.password:
            return self.mysql.password
        generated = Path(self.stack.dir) / "mysql" / "password"
        if generated.exists():
            return generated.read_text().strip()
        msg = (
            "no MySQL password: set RISKCTL_MYSQL_PASSWORD (or [mysql] password in riskctl.toml), "
            "or start the local stack with 'riskctl stack up', which generates one"
        )
        raise ConfigError(msg)

    @property
    def flink_rest_url(self) -> str:
        return self.flink.rest_url or f"http://{self.stack.host}:{self.stack.flink_rest_port}"

    @property
    def checkpoint_dir(self) -> str:
        return self.job.checkpoint_dir or f"file://{Path(self.stack.dir).resolve() / 'checkpoints'}"

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, for printing."""
        out = dataclasses.asdict(self)
        for section in out.values():
            for key in section:
                if key in _SECRET_KEYS and section[key]:
                    section[key] = "***"
        return out


def _coerce(value: str, like: Any, name: str) -> Any:
    if isinstance(like, bool):
        return value.lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        try:
            return int(value)
        except ValueError:
            msg = f"{name} must be an integer, got {value!r}"
            raise ConfigError(msg) from None
    if isinstance(like, float):
        try:
            return float(value)
        except ValueError:
            msg = f"{name} must be a number, got {value!r}"
            raise ConfigError(msg) from None
    return value


def load_settings(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from defaults, the TOML file and ``RISKCTL_*`` environment variables."""
    env = dict(os.environ) if env is None else env
    settings = Settings()
    file = Path(path or env.get("RISKCTL_CONFIG") or "riskctl.toml")
    data: dict[str, Any] = {}
    if file.exists():
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    elif path or env.get("RISKCTL_CONFIG"):
        msg = f"config file {file} does not exist"
        raise ConfigError(msg)
    for section_field in fields(settings):
        section = getattr(settings, section_field.name)
        given = data.get(section_field.name, {})
        for f in fields(section):
            default = getattr(section, f.name)
            if f.name in given:
                setattr(section, f.name, given[f.name])
            env_name = f"RISKCTL_{section_field.name}_{f.name}".upper()
            if env_name in env:
                setattr(section, f.name, _coerce(env[env_name], default, env_name))
        unknown = set(given) - {f.name for f in fields(section)}
        if unknown:
            msg = f"unknown key(s) in [{section_field.name}] of {file}: {', '.join(sorted(unknown))}"
            raise ConfigError(msg)
    return settings
