"""The settings: one dataclass per section, each field with its default and what it accepts.

docs/config.md documents every field (tests/unit/test_docs.py checks that it does).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from riskctl.config.checks import (
    INT,
    LONG,
    Refusal,
    ms,
    one_of,
    path,
    port,
    positive,
    refused,
    setting,
    shown,
    text,
)
from riskctl.core.door_limits import (
    DEFAULT_LIMITS,
    MAX_CLOCK_SKEW_MS,
    MAX_DEAD_LETTER_BYTES,
    MIN_DEAD_LETTER_BYTES,
    Limits,
)
from riskctl.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: properties of Settings that ``riskctl config show`` prints after the settings (not mysql_password: secret)
_DERIVED = ("kafka_bootstrap", "mysql_host", "mysql_port", "flink_rest_url", "checkpoint_dir")


#: Flink's network buffer size for riskctl's jobs: the MiniCluster's configuration (riskctl.flink.env), the
#: local cluster's config.yaml (riskctl.stack) and docker-compose.yml. 4 KB instead of 32 KB: a checkpoint
#: barrier queues behind 8x fewer records in flight (docs/operations.md, "Losing a TaskManager").
NETWORK_SEGMENT_SIZE = "4kb"

#: HotSpot options of the JVMs that run riskctl's jobs: the MiniCluster's (riskctl.flink.env) and the local
#: cluster's (riskctl.stack). The JVM's event log, kept for crash reports, formats a line for every exception
#: thrown, and pemja throws one per event (the end of each Python generator): without it the decide thread
#: spent 4.8-10.9 µs less per event in three alternating rounds (bench/results/logevents-ab). A crash report
#: then lacks its "Events" section; nothing else changes.
JVM_OPTIONS = ("-XX:+UnlockDiagnosticVMOptions", "-XX:-LogEvents")


def parse_options(text: str) -> dict[str, str]:
    """``"k=v;k2=v2"`` -> ``{"k": "v", "k2": "v2"}`` (Flink configuration in one setting); a pair without
    ``=`` is a ConfigError (a refused setting)."""
    out: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            msg = f"Flink options take key=value pairs separated by ';', got {mask_options(pair)!r}"
            raise refused(msg)
        out[key.strip()] = value.strip()
    return out


#: what makes a Flink option's value a secret: one of these anywhere in its key, lowercased (Flink's own rule,
#: GlobalConfiguration.isSensitive, with its list of 1.20 and riskctl's words): ``s3.secret-key``,
#: ``security.ssl.keystore-password``, ``properties.sasl.jaas.config``, ``fs.azure.account.key.<account>...``;
#: or a last part ending in ``key`` (``s3.access-key``). Only the last part was read: a JAAS config's password
#: and an Azure account key were printed by ``riskctl config show`` (found in review)
_SECRET_WORDS = (
    "password",
    "secret",
    "token",
    "credential",
    "jaas",
    "fs.azure.account.key",
    "fs.azure.sas.",
    "apikey",
    "api-key",
    "auth-params",
    "service-key",
    "basic-auth",
)


def mask_options(text: str) -> str:
    """Flink options as printed and in messages: the value of a key that looks secret is ``***``, and a pair
    without ``=`` shows only its first word (what follows may be a secret written with a blank instead)."""
    shown = []
    for pair in text.split(";"):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        lowered = key.strip().lower()
        if not sep:
            word = pair.split()[0]
            hidden = len(pair.strip()) - len(word)
            shown.append(word + (f" ({hidden} more characters, not shown)" if hidden else ""))
        elif any(w in lowered for w in _SECRET_WORDS) or lowered.rsplit(".", 1)[-1].endswith("key"):
            shown.append(f"{key.strip()}=***")
        else:
            shown.append(f"{key.strip()}={value.strip()}")
    return ";".join(shown)


def _flink_options_ok(value: str) -> bool:
    try:
        parse_options(value)
    except ConfigError:
        return False
    return True


#: the bounds of an API key of ``serve.api_keys``, and what a caller's name and a key are made of
MIN_KEY_CHARS = 20
MAX_KEY_CHARS = 256
API_KEY_NAME = re.compile(r"[A-Za-z0-9._-]{1,40}")
API_KEY_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")


def parse_api_keys(text: str) -> dict[str, str]:
    """``"checkout:KEY1, login:KEY2"`` -> ``{"checkout": "KEY1", "login": "KEY2"}``; ConfigError when a pair
    is malformed, a name or key repeats, or a key is too short to be a secret. Messages never show a key."""
    try:
        return _api_keys(text)
    except Refusal as exc:
        msg = f"serve.api_keys, {exc}"
        raise ConfigError(msg) from None


def _api_keys(text: str) -> dict[str, str]:
    """:func:`parse_api_keys`, refusing with a :class:`Refusal` that says which pair is wrong and why: the
    setting's check, so that a bad pair is refused when the settings load (exit 2, as any other refused
    setting), not only when ``riskctl serve`` starts (exit 3), and ``riskctl config show`` reports it."""
    keys: dict[str, str] = {}
    seen: set[str] = set()
    for n, pair in enumerate(text.split(","), 1):
        pair = pair.strip()
        if not pair:
            continue
        name, sep, key = pair.partition(":")
        name, key = name.strip(), key.strip()
        where = f"pair {n}"
        if not sep or not API_KEY_NAME.fullmatch(name):
            msg = (
                f"{where}: expected name:key, the name 1-40 letters, digits, '.', '_', '-' "
                f"(got a pair of {len(pair)} characters, not shown: it may hold a key)"
            )
            raise Refusal(msg)
        if name in keys:
            msg = f"{where}: the caller {name!r} is named twice"
            raise Refusal(msg)
        if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS or not API_KEY_CHARS.fullmatch(key):
            msg = (
                f"{where}: the key of {name!r} must be {MIN_KEY_CHARS}-{MAX_KEY_CHARS} characters of "
                "letters, digits and . _ ~ + / = - (a random one: python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
            raise Refusal(msg)
        if key in seen:
            msg = f"{where}: the key of {name!r} is another caller's too: each caller needs its own"
            raise Refusal(msg)
        seen.add(key)
        keys[name] = key
    return keys


def _api_keys_ok(value: str) -> bool:
    _api_keys(value)  # a Refusal saying which pair is wrong
    return True


#: the most entries of ``console.trusted_proxies``: the proxies in front of one console, or their networks
MAX_TRUSTED_PROXIES = 64
#: the longest entry read as an address (an IPv6 network with a zone id is under 60 characters)
_MAX_PROXY_CHARS = 64


def parse_trusted_proxies(text: str) -> list[str]:
    """``"10.0.0.5, 10.1.0.0/16"`` -> ``["10.0.0.5", "10.1.0.0/16"]`` (each as :mod:`ipaddress` writes it);
    ConfigError when an entry is not an IP address or network, or there are more than
    :data:`MAX_TRUSTED_PROXIES`."""
    try:
        return _trusted_proxies(text)
    except Refusal as exc:
        msg = f"console.trusted_proxies, {exc}"
        raise ConfigError(msg) from None


def _trusted_proxies(text: str) -> list[str]:
    """:func:`parse_trusted_proxies`, refusing with a :class:`Refusal` that names the wrong entry.

    uvicorn takes any entry it cannot read as an address for a literal it compares with the peer's, so a
    typo (``10.0.0.300``, ``10.0.0.1/8`` with host bits) silently trusted nobody, or the wrong peers; and
    ``*`` trusts every peer and then takes the *left-most* X-Forwarded-For address, which the client writes
    itself even through a proxy that appends its own: anyone could choose the address the login limit and
    the audit log see. Both are refused here, and so is a network of every address (``0.0.0.0/0``,
    ``::/0``), which uvicorn reads as an address but which trusts every peer as ``*`` does."""
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if len(entries) > MAX_TRUSTED_PROXIES:
        msg = (
            f"{len(entries)} entries, more than {MAX_TRUSTED_PROXIES}: name the proxies' networks "
            "(10.0.0.0/8) rather than each address"
        )
        raise Refusal(msg)
    out = []
    for n, entry in enumerate(entries, 1):
        if entry == "*":
            msg = (
                f"entry {n}: '*' is not accepted: it would trust every peer, and the console would take the "
                "left-most X-Forwarded-For address, which any client writes itself; name the proxies' "
                "addresses or networks"
            )
            raise Refusal(msg)
        try:
            if len(entry) > _MAX_PROXY_CHARS:
                raise ValueError
            parsed = ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)
        except ValueError as exc:
            why = f" ({exc})" if "host bits" in str(exc) else ""
            msg = (
                f"entry {n}: {shown(entry)} is not an IP address or network such as 10.0.0.5, "
                f"10.0.0.0/8 or fd00::/8{why}"
            )
            raise Refusal(msg) from None
        if isinstance(parsed, ipaddress.IPv4Network | ipaddress.IPv6Network) and parsed.prefixlen == 0:
            msg = (
                f"entry {n}: {parsed} is not accepted: it holds every address, so it would trust every peer "
                "as '*' does, and the console would take the left-most X-Forwarded-For address, which any "
                "client writes itself; name the proxies' addresses or networks"
            )
            raise Refusal(msg)
        out.append(str(parsed))
    return out


def _trusted_proxies_ok(value: str) -> bool:
    _trusted_proxies(value)  # a Refusal naming the wrong entry
    return True


def _options_setting() -> Any:
    """A setting of Flink options ("k=v;k2=v2"), shown with :func:`mask_options`."""
    return setting("", test=_flink_options_ok, shape="key=value pairs separated by ';'", masked=mask_options)


def server_ids(value: str) -> range | None:
    """The MySQL server ids of ``job.cdc_server_id`` (``5401`` or ``5401-5404``), or None if Flink CDC would
    refuse them: it reads each as a Java int (ServerIdRange.parseServerId), and gives subtask i the id
    first + i, refusing a subtask beyond the range. Accepted here, ``3000000000`` ended 'riskctl run' in a
    Java traceback while the job was built, and ``5404-5401`` failed every attempt of the job inside Flink
    ('Subtask ID 0 is out of server id range'), for ever (found in review). 0 is no replica's id."""
    first, _, last = value.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        return None
    if not 1 <= low <= high <= INT:
        return None
    return range(low, high + 1)


def _checkpoint_dir_ok(value: str) -> bool:
    """``job.checkpoint_dir`` as Flink's checkpoint storage takes it: a scheme and a folder that is not the
    root (FileSystemCheckpointStorage.validatePath). A plain path, ``/var/chk``, was accepted here and ended
    'riskctl run' in an 80-line Java traceback ("The scheme (hdfs://, file://, etc) is null"), and made
    'riskctl submit' fail inside 'flink run' (found in review)."""
    if not value:
        return True
    parsed = urlparse(value)
    return len(parsed.scheme) > 1 and bool(parsed.path.strip("/"))  # one letter: a Windows drive


#: the deepest ``job.max_depth`` accepted: orjson, which writes the API's events and the job's records,
#: refuses to write data nested deeper than 255 levels, and a decision holds an event's field values 4 levels
#: deeper than the event did (riskctl.alerts.model.RECORD_ENVELOPE_DEPTH): at most 251, 250 with a margin.
#: Beyond it, an event the door accepted could not be written (riskctl serve answered it with a 500).
MAX_EVENT_DEPTH = 250

_TOPIC = {
    "pattern": r"[A-Za-z0-9._-]{1,249}",
    "shape": "a Kafka topic name (1-249 letters, digits, '.', '_', '-')",
}


@dataclass
class StackSettings:
    """The local stack that ``riskctl stack`` runs: where its data lives and which ports it takes."""

    dir: str = path(str(PROJECT_ROOT / ".stack"))
    host: str = text("127.0.0.1")
    kafka_port: int = port(19092)
    kafka_controller_port: int = port(19093)
    mysql_port: int = port(13306)
    flink_rest_port: int = port(18081)
    flink_rpc_port: int = port(16123)
    flink_slots: int = positive(2)
    #: TaskManager processes of the local cluster; in thread mode each runs one Python interpreter (one GIL)
    flink_taskmanagers: int = positive(1)
    kafka_heap: str = setting("512m", pattern=r"[0-9]+[kmgtKMGT]?", shape="a JVM heap size, e.g. 512m or 2g")
    #: how the local cluster notices a dead TaskManager (or JobManager): heartbeats every interval; a target
    #: is dead after ``flink_heartbeat_rpc_failure_threshold`` heartbeat RPCs in a row failed (a killed
    #: process refuses the connection: noticed in interval x threshold, ~1 s), or after the timeout
    #: without an answer (a hung or cut-off machine). Flink's defaults (10 s, 50 s, 2) took 11-16 s, while
    #: the job kept deploying to the dead TaskManager. See docs/operations.md.
    flink_heartbeat_interval_ms: int = ms(500)
    flink_heartbeat_timeout_ms: int = ms(10000)
    flink_heartbeat_rpc_failure_threshold: int = setting(2, low=1, high=INT, special=(-1,))  # -1: off
    #: extra configuration of the local cluster (its conf/config.yaml), "key=value" pairs separated by ";",
    #: e.g. "taskmanager.memory.segment-size=8kb"; they win over riskctl's own values
    flink_config: str = _options_setting()


@dataclass
class KafkaSettings:
    #: empty: the local stack's broker; blanks around the commas are allowed (the Kafka clients strip them)
    bootstrap: str = setting(
        "",
        pattern=r"\s*([^\s,]+:[0-9]+(\s*,\s*[^\s,]+:[0-9]+)*)?\s*",
        shape="empty or host:port[,host:port...]",
    )


@dataclass
class MysqlSettings:
    host: str = ""  # empty: the local stack's server
    port: int = setting(0, low=0, high=65535)  # 0: the local stack's port
    user: str = text("riskctl")
    password: str = setting("", secret=True)
    database: str = text("riskctl")


@dataclass
class FlinkSettings:
    jars_dir: str = path(str(PROJECT_ROOT / ".cache" / "jars"))
    #: empty: the local stack's standalone cluster
    rest_url: str = setting("", pattern=r"(https?://\S+)?", shape="empty or an http:// or https:// URL")
    #: extra Flink configuration for the job, "key=value" pairs separated by ";" (e.g. "rest.port=8082")
    options: str = _options_setting()


@dataclass
class JobSettings:
    """The risk job: topics, rules source, state, time and delivery."""

    events_topic: str = setting("riskctl.events", **_TOPIC)
    decisions_topic: str = setting("riskctl.decisions", **_TOPIC)
    alerts_topic: str = setting("riskctl.alerts", **_TOPIC)
    dead_letter_topic: str = setting("riskctl.dead-letter", **_TOPIC)
    rule_status_topic: str = setting("riskctl.rule-status", **_TOPIC)
    group_id: str = text("riskctl-job")
    #: committed falls back to earliest
    starting_offsets: str = one_of("committed", "committed", "earliest", "latest")
    rules_source: str = one_of("cdc", "cdc", "poll", "file")
    #: the SQL identifier rule of riskctl.store.migrations.check_identifier (which the store applies again)
    rules_table: str = setting(
        "rules",
        pattern=r"[A-Za-z_][A-Za-z0-9_]{0,63}",
        shape="a table name (1-64 letters, digits or '_', not starting with a digit)",
    )
    rules_dir: str = path(str(PROJECT_ROOT / "rules"))
    poll_interval_ms: int = ms(1000)
    #: one id per subtask of the CDC source, which runs at job.parallelism (loading.check_together)
    cdc_server_id: str = setting(
        "5401-5404",
        pattern=r"[0-9]+(-[0-9]+)?",
        test=lambda v: server_ids(v) is not None,
        shape="a MySQL server id (1 to 2^31-1) or a rising range such as 5401-5404",
    )
    #: how often the CDC binlog client checks its connection and reconnects after an outage (Debezium's
    #: connect.keep.alive.interval.ms, default 60 s: a rule edit took 66-71 s to arrive after an outage)
    cdc_keepalive_ms: int = ms(1000)
    #: after a failed write of a rule status to MySQL, wait this long before the next attempt (statuses queue)
    status_retry_ms: int = ms(1000, low=0)
    #: Kafka clients of the job: the longest wait between reconnection attempts to a broker that went away
    kafka_reconnect_backoff_max_ms: int = ms(1000, low=0)
    parallelism: int = setting(1, low=1, high=32768)  # Flink's largest max-parallelism
    checkpoint_interval_ms: int = ms(5000, low=0)  # 0: no checkpoints
    #: empty: <stack dir>/checkpoints; else a URL with its scheme, as Flink takes it (_checkpoint_dir_ok)
    checkpoint_dir: str = setting(
        "",
        test=lambda v: _checkpoint_dir_ok(v),
        shape="empty or a folder's URL with its scheme, such as file:///var/riskctl/checkpoints or "
        "s3://bucket/checkpoints",
    )
    state_ttl_ms: int = ms(24 * 3600 * 1000)
    #: Flink's state TTL (processing time) is state_ttl_ms plus this: a stall of the job or its source longer
    #: than this (a backlog read after an outage) can free a user's state the engine would still read
    state_ttl_margin_ms: int = ms(24 * 3600 * 1000, low=0)
    lateness_ms: int = ms(5000, low=0)
    #: the least action of a too-late event (more than lateness_ms behind its user's newest: counted by no
    #: feature and no sequence); REVIEW where clients may set their events' ts (docs/operations.md)
    too_late_action: str = one_of("PASS", "PASS", "REVIEW", "REJECT")
    #: an event decided again within this much event time (the same content, reply_to aside) is a duplicate:
    #: the first one's action, nothing counted (riskctl/core/dedup.py); "api": the events of riskctl serve
    dedup: str = one_of("api", "api", "all", "off")
    dedup_window_ms: int = ms(600_000, low=1)
    idleness_ms: int = ms(10000, low=0)
    delivery: str = one_of("at-least-once", "at-least-once", "exactly-once")
    rules_wait_ms: int = ms(10000, low=0)  # hold events this long at start-up until the first rules arrive
    buffer_timeout_ms: int = setting(5, low=0, high=LONG, special=(-1,))  # -1: flush only full buffers
    #: Kafka producer linger.ms of the job's sinks (0: a request a record); 5, the Java client's default since
    #: Kafka 4.0: against 2, fewer produce requests for the broker on a shared machine, the p99 at 5,000
    #: events/s 36-42 ms against 47-50 and 16,066-16,454 events/s sustained against 13,790-14,193, for about
    #: 2 ms more at the median at light load (bench/flink_profile/README.md, 2026-12-07)
    sink_linger_ms: int = ms(5, low=0)
    #: the events source's Kafka fetches: the broker answers once it has ``source_fetch_min_bytes`` or after
    #: ``source_fetch_wait_ms``, whichever comes first (1 byte: a fetch per record or two at light load)
    source_fetch_min_bytes: int = setting(1, low=1, high=INT)
    source_fetch_wait_ms: int = ms(20)
    #: users whose committed state (bytes) each decide subtask keeps in memory (an LRU), sparing them the
    #: RocksDB read; about 1.3 KB of Python memory per user with rules/ (docs/engine.md, "Performance")
    state_cache_keys: int = setting(80_000, low=0, high=1_000_000)
    #: events reach the decide function by riskctl.flink.fast_path (false: PyFlink's own path)
    fast_path: bool = setting(True)
    #: the niceness the decide operator gives RocksDB's compaction threads in its TaskManager (thread mode;
    #: 0: leaves them), so they take what the decide task leaves (riskctl.flink.risk_function)
    compaction_nice: int = setting(19, low=0, high=19)
    restore_from: str = path(
        "", required=False
    )  # a retained checkpoint (.../chk-N) or savepoint to start from
    # limits at the door (riskctl.core.door, docs/config.md "Limits at the door")
    max_event_bytes: int = positive(DEFAULT_LIMITS.max_event_bytes)
    max_depth: int = setting(DEFAULT_LIMITS.max_depth, low=1, high=MAX_EVENT_DEPTH)
    max_string_chars: int = positive(DEFAULT_LIMITS.max_string_chars)
    max_clock_skew_ms: int = setting(DEFAULT_LIMITS.max_clock_skew_ms, low=1, high=MAX_CLOCK_SKEW_MS)
    #: false: event time moves at most to the wall clock, however far ahead an accepted event is stamped: the
    #: watermark every user's timers fire by (riskctl.flink.job.event_time_column_sql), and the time the event
    #: is decided at for its own user (riskctl.core.engine.Engine.process's clock); true: to its ts
    event_time_past_clock: bool = setting(False)
    dead_letter_max_bytes: int = setting(
        DEFAULT_LIMITS.dead_letter_max_bytes, low=MIN_DEAD_LETTER_BYTES, high=MAX_DEAD_LETTER_BYTES
    )

    def limits(self) -> Limits:
        """The door's :class:`~riskctl.core.door_limits.Limits` from these settings; a bad value is a
        ConfigError (a refused setting)."""
        try:
            return Limits(**{f.name: getattr(self, f.name) for f in fields(Limits)})
        except ValueError as exc:
            msg = f"job.{exc}"
            raise refused(msg) from None

    #: Restarts after a failure (a lost TaskManager, a broker gone): Flink's exponential-delay strategy. The
    #: first restart waits ``restart_initial_backoff_ms``, each next one ``restart_backoff_multiplier`` times
    #: longer, at most ``restart_max_backoff_ms``; after ``restart_reset_backoff_threshold_ms`` without a
    #: failure the delay (and the attempt count) starts over. ``restart_max_attempts`` failures in a row
    #: without such a reset fail the job; 0: no cap (a job that fails forever restarts every max backoff,
    #: which ``numRestarts`` shows). See docs/operations.md.
    restart_initial_backoff_ms: int = ms(1000)
    restart_max_backoff_ms: int = ms(30000)
    restart_backoff_multiplier: float = setting(2.0, low=1.0, high=1e6)
    restart_reset_backoff_threshold_ms: int = ms(20000)
    restart_jitter_factor: float = setting(0.1, low=0.0, high=1.0)
    restart_max_attempts: int = setting(0, low=0, high=INT)  # 0: no cap


def engine_dedup(mode: str, window_ms: int) -> tuple[int, bool]:
    """``job.dedup`` and ``job.dedup_window_ms`` as the engine takes them (its ``dedup_window`` and
    ``dedup_all``): "off" is a window of 0, "all" checks every event, "api" only riskctl serve's. The job and
    its replays (``riskctl replay``, the console's backtests) map them here, so they dedup alike."""
    return (0 if mode == "off" else window_ms), mode == "all"


@dataclass
class AlertsSettings:
    """``riskctl alerts``: its routing/channels file and its Kafka side. It reads job.alerts_topic, and
    job.decisions_topic for REVIEW decisions when the file says ``review_decisions: true``.
    """

    config: str = path("alerts.yaml")  # routes, channels, templates, limits: see docs/alerts.md
    group_id: str = text("riskctl-alerts")
    dead_letter_topic: str = setting("riskctl.alerts.dead-letter", **_TOPIC)
    #: compacted topic of the delivered (channel, user and alert id) keys: deduplication across restarts and
    #: instances; empty: remembered in memory only
    delivered_topic: str = setting(
        "riskctl.alerts.delivered",
        pattern=r"([A-Za-z0-9._-]{1,249})?",
        shape="empty or a Kafka topic name (1-249 letters, digits, '.', '_', '-')",
    )


@dataclass
class ServeSettings:
    """``riskctl serve``, the synchronous decision API (docs/api.md). Its limits on events are the job's
    (``job.max_event_bytes`` ...), on purpose: the API refuses exactly what the job would dead-letter."""

    host: str = text("127.0.0.1")
    port: int = setting(8088, low=0, high=65535)  # 0: any free port
    #: this instance's name (reply keys, probe user); empty: <hostname>-<pid>
    instance: str = setting(
        "", pattern=r"[A-Za-z0-9._-]{0,40}", shape="empty or 1-40 letters, digits, '.', '_', '-'"
    )
    #: the topic where the job also writes the decision of an event that carries a ``reply_to`` key; empty:
    #: the job writes no replies (and ``riskctl serve`` refuses to start)
    replies_topic: str = setting(
        "riskctl.replies",
        pattern=r"([A-Za-z0-9._-]{1,249})?",
        shape="empty or a Kafka topic name (1-249 letters, digits, '.', '_', '-')",
    )
    #: partitions of the replies topic when it is created: the most instances that get a partition each
    replies_partitions: int = setting(16, low=1, high=10_000)
    #: the partition of the replies topic this instance reads; -1: derived from the instance name (crc32)
    reply_partition: int = setting(-1, low=0, high=9_999, special=(-1,))
    #: wait for the job's decision this long by default (fits a 200 ms budget with room for the network)
    timeout_ms: int = ms(150)
    #: bounds of the ``timeout_ms`` a request may ask for
    min_timeout_ms: int = ms(5)
    max_timeout_ms: int = setting(10_000, low=1, high=600_000)
    #: what to answer when the decision does not come in time: open (PASS), review (REVIEW), reject (REJECT)
    fallback: str = one_of("open", "open", "review", "reject")
    #: idempotency by event_id: how long and how many requests are remembered (per instance), and the bytes
    #: they may hold: a decision carries the event's fields its rules read, whose size the caller chooses
    idempotency_ttl_ms: int = ms(600_000)
    idempotency_max_entries: int = positive(100_000)
    idempotency_max_bytes: int = setting(256 << 20, low=2 << 20, high=LONG)
    #: requests waiting for a decision at once; beyond: 503
    max_in_flight: int = positive(20_000)
    #: the callers' API keys, ``name:key`` pairs separated by ',' (docs/api.md, "Callers"): a request must
    #: carry ``Authorization: Bearer <key>``; empty: no key is asked (allowed on a loopback host only, unless
    #: ``serve.anonymous``)
    api_keys: str = setting("", secret=True, test=_api_keys_ok, shape="name:key pairs separated by ','")
    #: serve without API keys on an address other machines reach (behind a gateway that authenticates)
    anonymous: bool = setting(False)
    #: requests of one caller waiting at once; beyond: 429 (0: half of max_in_flight with keys, all without)
    max_in_flight_per_client: int = setting(0, low=0, high=INT)
    #: requests per second of one caller; beyond: 429 with Retry-After (0: no bound)
    rate_per_client: int = setting(0, low=0, high=1_000_000)
    #: /readyz needs a decision round trip within this window; a probe event is sent when none happened
    #: for probe_interval_ms (0: no probes, readiness then depends on real traffic)
    ready_window_ms: int = ms(10_000)
    probe_interval_ms: int = ms(2_000, low=0)
    #: a request's body must arrive within this long once its headers have: a client that trickles it gets
    #: 408 instead of holding a connection, outside max_in_flight, for as long as it likes
    body_timeout_ms: int = setting(5_000, low=1, high=600_000)
    #: a connection that has not sent a whole request's headers within this long of connecting, or of its
    #: last answer, is closed (idle keep-alive connections too): a client sending its headers a byte at a
    #: time, or nothing at all, held a connection for aiohttp's default of an hour
    idle_timeout_ms: int = setting(15_000, low=100, high=3_600_000)
    #: connections open at once (kept-alive ones included); one more is answered 503 as it opens and closed.
    #: Lowered at start to the open-file limit less 256 (the Kafka clients' sockets and the logs need
    #: descriptors too). Without a bound, connections opened faster than idle_timeout_ms closes them took
    #: every descriptor (the Kafka clients' included), and each may hold about 2 MB of unfinished headers
    #: (128 lines of 8,190 bytes: 200 such connections took 396 MB): 1,024 of them about 2 GB at most
    max_connections: int = setting(1_024, low=1, high=1_000_000)
    #: on SIGTERM, in-flight requests get this long to finish before Kafka is closed
    shutdown_timeout_ms: int = ms(10_000, low=0)
    #: the producer gives up delivering an event after this long (the request has its fallback by then)
    produce_timeout_ms: int = setting(5_000, low=1, high=INT)
    #: the producer waits this long to put more events in one request (librdkafka ``linger.ms``): fewer
    #: requests for this process and the broker to handle, for up to this much more latency
    produce_linger_ms: int = setting(1, low=0, high=1_000)
    #: the bytes of events the producer holds while they wait to be delivered (librdkafka
    #: ``queue.buffering.max.kbytes``, in whole KiB); one more is refused at once, its request answered with
    #: the fallback. With the broker away each event waits up to produce_timeout_ms: librdkafka's own bound
    #: of 1 GiB let an instance grow by that much. At least job.max_event_bytes (a larger event would never
    #: fit); at most librdkafka's 2^31-1 KiB
    producer_queue_max_bytes: int = setting(64 << 20, low=1 << 20, high=INT << 10)


@dataclass
class ConsoleSettings:
    """``riskctl console``, the analysts' web console (docs/console.md)."""

    #: the reverse proxies whose X-Forwarded-For and X-Forwarded-Proto headers are believed, IP addresses or
    #: networks separated by ','; a request from any other peer is seen from its socket's address (the login
    #: limit's key, the audit log's "from"). Empty: no such header is believed
    trusted_proxies: str = setting(
        "",
        test=_trusted_proxies_ok,
        shape="IP addresses or networks separated by ',' (e.g. 10.0.0.5, 10.1.0.0/16)",
    )


@dataclass
class Settings:
    stack: StackSettings = field(default_factory=StackSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    mysql: MysqlSettings = field(default_factory=MysqlSettings)
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    job: JobSettings = field(default_factory=JobSettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)

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
        # not a refused setting: nothing is wrong with the settings, MySQL is not configured yet (exit 3)
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

    def derived(self) -> dict[str, Any]:
        """What clients connect to once the empty settings fall back to the local stack (no secrets)."""
        return {name: getattr(self, name) for name in _DERIVED}

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, for printing."""
        out = dataclasses.asdict(self)
        for section in fields(self):
            for f in fields(getattr(self, section.name)):
                allowed = f.metadata.get("allowed")
                value = out[section.name][f.name]
                if allowed is not None and allowed.secret and value:
                    out[section.name][f.name] = "***"
                elif allowed is not None and allowed.masked is not None and isinstance(value, str):
                    out[section.name][f.name] = allowed.masked(value)
        return out
