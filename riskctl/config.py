"""Typed configuration in one place, validated when it is loaded.

Values come, last one winning, from the defaults below, a TOML file (``riskctl.toml`` in the working
directory, or the path in ``RISKCTL_CONFIG``), environment variables named ``RISKCTL_<SECTION>_<KEY>``
(for instance ``RISKCTL_KAFKA_BOOTSTRAP``, ``RISKCTL_MYSQL_PASSWORD``) and ``--set section.key=value`` on
the command line. Every value is checked when it arrives: its type (the annotation of its field) and what
the field's :class:`Allowed` says (a range, choices, a pattern, not empty). A bad value, an unknown key or
an unknown ``RISKCTL_<SECTION>_*`` variable is a :class:`~riskctl.errors.ConfigError` that names the key,
the value, where it came from and what is allowed, every problem of one load at once. So
``parallelism = "four"`` fails when the settings load, not later inside the job.

Secrets never live in code: the MySQL password comes from the environment, the file, or — for the local stack
only — the password file the stack generated on its first start (``.stack/mysql/password``).
``Settings.redacted()`` masks secrets for printing (``riskctl config show``).

Hand-written rather than pydantic: the checks are a type, a range, choices or a pattern per field, and the
messages must name the source of each value (file, variable, ``--set``), which pydantic would need custom
sources for as well; a dependency with a compiled core would buy little here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from riskctl.core.door import DEFAULT_LIMITS, MAX_DEAD_LETTER_BYTES, MIN_DEAD_LETTER_BYTES, Limits
from riskctl.core.errors import suggest
from riskctl.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_SECRET_KEYS = {"password"}
#: properties of Settings that ``riskctl config show`` prints after the settings (not mysql_password: secret)
_DERIVED = ("kafka_bootstrap", "mysql_host", "mysql_port", "flink_rest_url", "checkpoint_dir")

#: Flink and Kafka take durations and most counts as Java longs, parallelism and slots as Java ints
_LONG = 2**63 - 1
_INT = 2**31 - 1


@dataclass(frozen=True)
class Allowed:
    """What a setting accepts beyond the type of its field; checked for every source when settings load."""

    low: float | None = None
    high: float | None = None
    #: values accepted outside ``low``..``high`` (e.g. -1: "disabled")
    special: tuple[int, ...] = ()
    choices: tuple[str, ...] = ()
    #: a regular expression the whole string must match, and ``shape``: the same in words, for the message
    pattern: str = ""
    shape: str = ""
    #: a string that must not be empty
    required: bool = False
    #: a check the pattern cannot express (True: accepted), described by ``shape``
    test: Callable[[str], bool] | None = None


def _setting(default: Any, **allowed: Any) -> Any:
    """A dataclass field with a default and what it accepts (see :class:`Allowed`)."""
    return field(default=default, metadata={"allowed": Allowed(**allowed)})


def _port(default: int) -> Any:
    return _setting(default, low=1, high=65535)


def _ms(default: int, *, low: int = 1) -> Any:
    """A duration in milliseconds; ``low=0`` where 0 has a meaning (disabled, no wait)."""
    return _setting(default, low=low, high=_LONG)


def _positive(default: int) -> Any:
    return _setting(default, low=1, high=_INT)


def _text(default: str) -> Any:
    return _setting(default, required=True)


def _one_of(default: str, *choices: str) -> Any:
    return _setting(default, choices=choices)


def _flink_options_ok(text: str) -> bool:
    """What riskctl.flink.env.parse_options accepts: blank, or ``key=value`` pieces between ``;``."""
    pieces = [p.partition("=") for p in text.split(";") if p.strip()]
    return all(sep and key.strip() for key, sep, _ in pieces)


_TOPIC = {
    "pattern": r"[A-Za-z0-9._-]{1,249}",
    "shape": "a Kafka topic name (1-249 letters, digits, '.', '_', '-')",
}


@dataclass
class StackSettings:
    """The local stack that ``riskctl stack`` runs: where its data lives and which ports it takes."""

    dir: str = _text(str(PROJECT_ROOT / ".stack"))
    host: str = _text("127.0.0.1")
    kafka_port: int = _port(19092)
    kafka_controller_port: int = _port(19093)
    mysql_port: int = _port(13306)
    flink_rest_port: int = _port(18081)
    flink_rpc_port: int = _port(16123)
    flink_slots: int = _positive(2)
    #: TaskManager processes of the local cluster; in thread mode each runs one Python interpreter (one GIL)
    flink_taskmanagers: int = _positive(1)
    kafka_heap: str = _setting("512m", pattern=r"[0-9]+[kKmMgG]?", shape="a JVM heap size such as 512m or 2g")
    #: how the local cluster notices a dead TaskManager (or JobManager): heartbeats every interval; a target
    #: is dead after ``flink_heartbeat_rpc_failure_threshold`` heartbeat RPCs in a row failed (a killed
    #: process refuses the connection: noticed in interval x threshold, ~3 s), or after the timeout
    #: without an answer (a hung or cut-off machine). Flink's defaults (10 s, 50 s, 2) took 11-16 s, while
    #: the job kept deploying to the dead TaskManager. See docs/operations.md.
    flink_heartbeat_interval_ms: int = _ms(1000)
    flink_heartbeat_timeout_ms: int = _ms(10000)
    flink_heartbeat_rpc_failure_threshold: int = _setting(3, low=1, high=_INT, special=(-1,))  # -1: off


@dataclass
class KafkaSettings:
    #: empty: the local stack's broker
    bootstrap: str = _setting(
        "", pattern=r"([^\s,]+:[0-9]+(,[^\s,]+:[0-9]+)*)?", shape="empty or host:port[,host:port...]"
    )


@dataclass
class MysqlSettings:
    host: str = ""  # empty: the local stack's server
    port: int = _setting(0, low=0, high=65535)  # 0: the local stack's port
    user: str = _text("riskctl")
    password: str = ""
    database: str = _text("riskctl")


@dataclass
class FlinkSettings:
    jars_dir: str = _text(str(PROJECT_ROOT / ".cache" / "jars"))
    #: empty: the local stack's standalone cluster
    rest_url: str = _setting("", pattern=r"(https?://\S+)?", shape="empty or an http:// or https:// URL")
    #: extra Flink configuration for the job, "key=value" pairs separated by ";" (e.g. "rest.port=8082")
    options: str = _setting("", test=_flink_options_ok, shape="key=value pairs separated by ';'")


@dataclass
class JobSettings:
    """The risk job: topics, rules source, state, time and delivery."""

    events_topic: str = _setting("riskctl.events", **_TOPIC)
    decisions_topic: str = _setting("riskctl.decisions", **_TOPIC)
    alerts_topic: str = _setting("riskctl.alerts", **_TOPIC)
    dead_letter_topic: str = _setting("riskctl.dead-letter", **_TOPIC)
    rule_status_topic: str = _setting("riskctl.rule-status", **_TOPIC)
    group_id: str = _text("riskctl-job")
    #: committed falls back to earliest
    starting_offsets: str = _one_of("committed", "committed", "earliest", "latest")
    rules_source: str = _one_of("cdc", "cdc", "poll", "file")
    #: the SQL identifier rule of riskctl.store.migrations.check_identifier (which the store applies again)
    rules_table: str = _setting(
        "rules",
        pattern=r"[A-Za-z_][A-Za-z0-9_]{0,63}",
        shape="a table name (1-64 letters, digits or '_', not starting with a digit)",
    )
    rules_dir: str = _text(str(PROJECT_ROOT / "rules"))
    poll_interval_ms: int = _ms(1000)
    cdc_server_id: str = _setting(
        "5401-5404", pattern=r"[0-9]+(-[0-9]+)?", shape="a MySQL server id or a range such as 5401-5404"
    )
    #: how often the CDC binlog client checks its connection and reconnects after an outage (Debezium's
    #: connect.keep.alive.interval.ms, default 60 s: a rule edit took 66-71 s to arrive after an outage)
    cdc_keepalive_ms: int = _ms(1000)
    #: after a failed write of a rule status to MySQL, wait this long before the next attempt (statuses queue)
    status_retry_ms: int = _ms(1000, low=0)
    #: Kafka clients of the job: the longest wait between reconnection attempts to a broker that went away
    kafka_reconnect_backoff_max_ms: int = _ms(1000, low=0)
    parallelism: int = _setting(1, low=1, high=32768)  # Flink's largest max-parallelism
    checkpoint_interval_ms: int = _ms(5000, low=0)  # 0: no checkpoints
    checkpoint_dir: str = ""  # empty: <stack dir>/checkpoints
    state_ttl_ms: int = _ms(24 * 3600 * 1000)
    lateness_ms: int = _ms(5000, low=0)
    idleness_ms: int = _ms(10000, low=0)
    delivery: str = _one_of("at-least-once", "at-least-once", "exactly-once")
    rules_wait_ms: int = _ms(10000, low=0)  # hold events this long at start-up until the first rules arrive
    buffer_timeout_ms: int = _setting(5, low=0, high=_LONG, special=(-1,))  # -1: flush only full buffers
    sink_linger_ms: int = _ms(2, low=0)  # Kafka producer linger.ms of the job's sinks (0: a request a record)
    restore_from: str = ""  # a retained checkpoint (.../chk-N) or savepoint to start from
    # limits at the door (riskctl.core.door, docs/config.md "Limits at the door")
    max_event_bytes: int = _positive(DEFAULT_LIMITS.max_event_bytes)
    max_depth: int = _positive(DEFAULT_LIMITS.max_depth)
    max_string_chars: int = _positive(DEFAULT_LIMITS.max_string_chars)
    max_clock_skew_ms: int = _ms(DEFAULT_LIMITS.max_clock_skew_ms)
    dead_letter_max_bytes: int = _setting(
        DEFAULT_LIMITS.dead_letter_max_bytes, low=MIN_DEAD_LETTER_BYTES, high=MAX_DEAD_LETTER_BYTES
    )

    def limits(self) -> Limits:
        """The door's :class:`~riskctl.core.door.Limits` from these settings; a bad value is a ConfigError."""
        try:
            return Limits(**{f.name: getattr(self, f.name) for f in fields(Limits)})
        except ValueError as exc:
            msg = f"job.{exc}"
            raise ConfigError(msg) from None

    #: Restarts after a failure (a lost TaskManager, a broker gone): Flink's exponential-delay strategy. The
    #: first restart waits ``restart_initial_backoff_ms``, each next one ``restart_backoff_multiplier`` times
    #: longer, at most ``restart_max_backoff_ms``; after ``restart_reset_backoff_threshold_ms`` without a
    #: failure the delay (and the attempt count) starts over. ``restart_max_attempts`` failures in a row
    #: without such a reset fail the job; 0: no cap (a job that fails forever restarts every max backoff,
    #: which ``numRestarts`` shows). See docs/operations.md.
    restart_initial_backoff_ms: int = _ms(1000)
    restart_max_backoff_ms: int = _ms(30000)
    restart_backoff_multiplier: float = _setting(2.0, low=1.0, high=1e6)
    restart_reset_backoff_threshold_ms: int = _ms(20000)
    restart_jitter_factor: float = _setting(0.1, low=0.0, high=1.0)
    restart_max_attempts: int = _setting(0, low=0, high=_INT)  # 0: no cap


@dataclass
class Settings:
    stack: StackSettings = field(default_factory=StackSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    mysql: MysqlSettings = field(default_factory=MysqlSettings)
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    job: JobSettings = field(default_factory=JobSettings)

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

    def derived(self) -> dict[str, Any]:
        """What clients connect to once the empty settings fall back to the local stack (no secrets)."""
        return {name: getattr(self, name) for name in _DERIVED}

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, for printing."""
        out = dataclasses.asdict(self)
        for section in out.values():
            for key in section:
                if key in _SECRET_KEYS and section[key]:
                    section[key] = "***"
        return out


# -- checking one value -------------------------------------------------------------------------------------

DEFAULT = "default"
SET = "--set"


@dataclass(frozen=True)
class _Spec:
    """A setting's type and what it accepts, from its dataclass field."""

    section: str
    key: str
    kind: type
    allowed: Allowed

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return f"RISKCTL_{self.section}_{self.key}".upper()

    def get(self, settings: Settings) -> Any:
        return getattr(getattr(settings, self.section), self.key)

    def describe(self) -> str:
        """What this setting accepts, in words: the end of "... must be <this>"."""
        a = self.allowed
        if a.choices:
            return "one of " + ", ".join(a.choices)
        if a.shape:
            return a.shape
        if self.kind is str:
            return "a non-empty string" if a.required else "a string"
        if self.kind is bool:
            return "true or false"
        text = "an integer" if self.kind is int else "a number"
        if a.low is not None and a.high is not None:
            text += f" from {_num(a.low)} to {_num(a.high)}"
        elif a.low is not None:
            text += f" >= {_num(a.low)}"
        for value in a.special:
            text += f", or {value}"
        return text

    def accept(self, raw: object, *, from_text: bool) -> object:
        """``raw`` as this setting's type if it is allowed; raises ValueError (the caller names the problem).

        ``from_text``: the value is a string to parse (environment, ``--set``); otherwise it is already typed
        (TOML), and a string where a number belongs is refused rather than guessed at.
        """
        value = _typed(raw, self.kind, from_text=from_text)
        a = self.allowed
        if isinstance(value, str):
            if a.required and not value.strip():
                raise ValueError
            if a.choices and value not in a.choices:
                raise ValueError
            if a.pattern and not re.fullmatch(a.pattern, value):
                raise ValueError
            if a.test and not a.test(value):
                raise ValueError
        elif isinstance(value, int | float) and not isinstance(value, bool) and value not in a.special:
            if not math.isfinite(value):
                raise ValueError
            if (a.low is not None and value < a.low) or (a.high is not None and value > a.high):
                raise ValueError
        return value


def _num(x: float) -> str:
    """A bound as a reader writes it: 1 rather than 1.0, 2^63-1 rather than its 19 digits."""
    names = {_LONG: "2^63-1", _INT: "2^31-1"}
    if x in names:
        return names[int(x)]
    return str(int(x)) if float(x).is_integer() else str(x)


def _typed(raw: object, kind: type, *, from_text: bool) -> object:
    if from_text and isinstance(raw, str) and kind is not str:
        text = raw.strip().lower()
        if kind is bool:
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError
        return kind(text)  # int("x") and float("x") raise ValueError
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind is str and isinstance(raw, str):
        return raw
    raise ValueError


@cache
def _specs() -> dict[str, _Spec]:
    """Every setting by ``section.key``, in the dataclasses' order."""
    out = {}
    sections = typing.get_type_hints(Settings)
    for section in fields(Settings):
        hints = typing.get_type_hints(sections[section.name])
        for f in fields(sections[section.name]):
            spec = _Spec(section.name, f.name, hints[f.name], f.metadata.get("allowed", Allowed()))
            out[spec.dotted] = spec
    return out


def _shown(value: object) -> str:
    """``repr(value)``, cut short: a hostile value of megabytes does not belong in an error message."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    found = suggest(word, choices)
    return f" (did you mean {found}?)" if found else ""


# -- loading -------------------------------------------------------------------------------------------------


@dataclass
class Resolved:
    """Settings and where each value came from: ``sources["job.parallelism"]`` is ``"default"``, the config
    file's path, the environment variable's name or ``"--set"``."""

    settings: Settings
    sources: dict[str, str]
    file: Path | None = None


class _Loader:
    """Applies values to settings, one source after the other, and collects every problem of the load."""

    def __init__(self, resolved: Resolved) -> None:
        self.resolved = resolved
        self.problems: list[str] = []

    def put(self, spec: _Spec, raw: object, source: str, *, from_text: bool) -> None:
        try:
            value = spec.accept(raw, from_text=from_text)
        except ValueError:
            subject, tail = _subject(spec, source)
            self.problems.append(f"{subject} must be {spec.describe()}, got {_shown(raw)}{tail}")
            return
        setattr(getattr(self.resolved.settings, spec.section), spec.key, value)
        self.resolved.sources[spec.dotted] = source

    def file(self, data: Mapping[str, Any], path: Path) -> None:
        specs = _specs()
        sections = {s.section for s in specs.values()}
        for name, table in data.items():
            if name not in sections:
                self.problems.append(
                    f"unknown section [{name}] in {path}{_did_you_mean(name, sections)}: "
                    f"sections are {', '.join(f'[{s}]' for s in sorted(sections))}"
                )
                continue
            if not isinstance(table, dict):
                self.problems.append(f"[{name}] in {path} must be a table of settings, got {_shown(table)}")
                continue
            unknown = []
            for key, raw in table.items():
                spec = specs.get(f"{name}.{key}")
                if spec is None:
                    keys = [s.key for s in specs.values() if s.section == name]
                    unknown.append(key + _did_you_mean(key, keys))
                else:
                    self.put(spec, raw, str(path), from_text=False)
            if unknown:
                self.problems.append(f"unknown key(s) in [{name}] of {path}: {', '.join(unknown)}")

    def environment(self, env: Mapping[str, str]) -> None:
        specs = _specs()
        for spec in specs.values():
            if spec.env in env:
                self.put(spec, env[spec.env], spec.env, from_text=True)
        known = {s.env for s in specs.values()}
        prefixes = {f"RISKCTL_{s.section.upper()}_" for s in specs.values()}
        for name in sorted(env):
            if name not in known and any(name.startswith(p) for p in prefixes):
                self.problems.append(
                    f"unknown environment variable {name}{_did_you_mean(name, known)}: no such setting"
                )

    def overrides(self, pairs: Iterable[str]) -> None:
        specs = _specs()
        for pair in pairs:
            name, sep, value = pair.partition("=")
            spec = specs.get(name.strip())
            if not sep or spec is None:
                self.problems.append(
                    f"--set takes section.key=value with a known setting, got {_shown(pair)}"
                    + _did_you_mean(name.strip(), specs)
                )
                continue
            self.put(spec, value, SET, from_text=True)

    def check_together(self) -> None:
        """Checks between settings: a wait that must not be below another."""
        s = self.resolved.settings
        specs, sources = _specs(), self.resolved.sources
        for name, floor_name in [
            ("job.restart_max_backoff_ms", "job.restart_initial_backoff_ms"),
            ("stack.flink_heartbeat_timeout_ms", "stack.flink_heartbeat_interval_ms"),
        ]:
            value, floor = specs[name].get(s), specs[floor_name].get(s)
            if value < floor:
                subject, tail = _subject(specs[name], sources[name])
                within = f"{floor_name} ({floor}, from {sources[floor_name]})"
                self.problems.append(f"{subject} must be >= {within}, got {value}{tail}")

    def done(self) -> Resolved:
        self.check_together()
        if len(self.problems) == 1:
            raise ConfigError(self.problems[0])
        if self.problems:
            msg = f"{len(self.problems)} invalid settings:\n" + "\n".join(f"- {p}" for p in self.problems)
            raise ConfigError(msg)
        return self.resolved


def _subject(spec: _Spec, source: str) -> tuple[str, str]:
    """How a message names a setting and where its value came from: "<subject> must be ..., got ...<tail>"."""
    if source == SET:
        return f"--set {spec.dotted}", ""
    if source == DEFAULT:
        return f"{spec.dotted} (default)", ""
    if source == spec.env:
        return source, f" (the environment variable of {spec.dotted})"
    return f"{spec.dotted} in {source}", ""


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        msg = f"config file {file} is not valid TOML: {exc}"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"config file {file} cannot be read: {exc}"
        raise ConfigError(msg) from None


def resolve(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Resolved:
    """Settings from defaults, the TOML file, ``RISKCTL_*`` variables and ``--set`` pairs, with the source of
    each value; every problem of the load in one :class:`ConfigError`."""
    env = os.environ if env is None else env
    explicit = path or env.get("RISKCTL_CONFIG")
    file = Path(explicit or "riskctl.toml")
    resolved = Resolved(Settings(), dict.fromkeys(_specs(), DEFAULT))
    loader = _Loader(resolved)
    if file.exists():
        loader.file(_read_toml(file), file)
        resolved.file = file
    elif explicit:
        msg = f"config file {file} does not exist"
        raise ConfigError(msg)
    loader.environment(env)
    loader.overrides(overrides)
    return loader.done()


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Settings:
    """Build :class:`Settings` from defaults, the TOML file, ``RISKCTL_*`` environment variables and
    ``--set`` pairs (see :func:`resolve`)."""
    return resolve(path, env, overrides).settings


def apply_overrides(settings: Settings, pairs: Iterable[str]) -> Settings:
    """Apply ``section.key=value`` pairs (``--set``) to loaded settings, checked like every other source."""
    loader = _Loader(Resolved(settings, dict.fromkeys(_specs(), "the loaded settings")))
    loader.overrides(pairs)
    return loader.done().settings
