"""Loading the settings from their sources, one after the other, with the source of every value.

Defaults, then the TOML file, then ``RISKCTL_*`` variables, then ``--set`` pairs; each value is checked as it
arrives (:class:`riskctl.config.checks.Spec`) and every problem of one load is collected into one
:class:`~riskctl.errors.ConfigError`, marked as a refused setting (:func:`riskctl.config.checks.refused`:
exit code 2, bad usage, whichever command loads the settings).
"""

from __future__ import annotations

import os
import stat
import tomllib
import typing
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from riskctl.config.checks import Allowed, Refusal, Spec, key_of, refused, shown, shown_secret
from riskctl.config.settings import Settings, server_ids
from riskctl.core.errors import suggest
from riskctl.errors import printable

DEFAULT = "default"
SET = "--set"
#: variables that begin like a section's settings and are none: read by what needs them, not refused as
#: unknown (``riskctl console user add``'s password, the console's browser test's screenshot switch)
NOT_SETTINGS = frozenset({"RISKCTL_CONSOLE_PASSWORD", "RISKCTL_CONSOLE_SCREENSHOT"})


@cache
def all_specs() -> dict[str, Spec]:
    """Every setting by ``section.key``, in the dataclasses' order."""
    out = {}
    sections = typing.get_type_hints(Settings)
    for section in fields(Settings):
        hints = typing.get_type_hints(sections[section.name])
        for f in fields(sections[section.name]):
            spec = Spec(section.name, f.name, hints[f.name], f.metadata.get("allowed", Allowed()))
            out[spec.dotted] = spec
    return out


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    found = suggest(word, choices)
    return f" (did you mean {found}?)" if found else ""


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

    def put(self, spec: Spec, raw: object, source: str, *, from_text: bool) -> None:
        try:
            value = spec.accept(raw, from_text=from_text)
        except Refusal as exc:  # "serve.api_keys in <file>, pair 2: ...": its own reason, never the value
            subject, tail = _subject(spec, source)
            self.problems.append(f"{subject}{tail}, {exc}")
            return
        except ValueError:
            subject, tail = _subject(spec, source)
            masked = spec.allowed.masked
            if spec.allowed.secret:
                got = shown_secret(raw)
            else:
                got = shown(masked(raw) if masked is not None and isinstance(raw, str) else raw)
            self.problems.append(f"{subject} must be {spec.describe()}, got {got}{tail}")
            return
        setattr(getattr(self.resolved.settings, spec.section), spec.key, value)
        self.resolved.sources[spec.dotted] = source

    def file(self, data: Mapping[str, Any], path: Path) -> None:
        specs = all_specs()
        _warn_if_others_read(path, _secrets_in(data, specs))
        sections = {s.section for s in specs.values()}
        where = printable(path)  # the message's own lines: a line break in the name is written as \n
        for name, table in data.items():
            if name not in sections:
                self.problems.append(
                    f"unknown section [{printable(name)}] in {where}{_did_you_mean(name, sections)}: "
                    f"sections are {', '.join(f'[{s}]' for s in sorted(sections))}"
                )
                continue
            if not isinstance(table, dict):
                # mysql = "..." may be the password written in the wrong place: a section holding a secret
                # does not repeat what it got
                secret = any(s.allowed.secret for s in specs.values() if s.section == name)
                got = shown_secret(table) if secret else shown(table)
                self.problems.append(f"[{printable(name)}] in {where} must be a table of settings, got {got}")
                continue
            unknown = []
            for key, raw in table.items():
                spec = specs.get(f"{name}.{key}")
                if spec is None:
                    keys = [s.key for s in specs.values() if s.section == name]
                    unknown.append(printable(key) + _did_you_mean(key, keys))
                else:
                    self.put(spec, raw, str(path), from_text=False)
            if unknown:
                self.problems.append(
                    f"unknown key(s) in [{printable(name)}] of {where}: {', '.join(unknown)}"
                )

    def environment(self, env: Mapping[str, str]) -> None:
        specs = all_specs()
        for spec in specs.values():
            if spec.env in env:
                _warn_if_empty_replaces_file(spec, env[spec.env], self.resolved)
                self.put(spec, env[spec.env], spec.env, from_text=True)
        known = {s.env for s in specs.values()} | NOT_SETTINGS
        prefixes = {f"RISKCTL_{s.section.upper()}_" for s in specs.values()}
        for name in sorted(env):
            if name not in known and any(name.startswith(p) for p in prefixes):
                self.problems.append(
                    f"unknown environment variable {printable(name)}{_did_you_mean(name, known)}: "
                    "no such setting"
                )

    def overrides(self, pairs: Iterable[str]) -> None:
        specs = all_specs()
        for pair in pairs:
            name, sep, value = pair.partition("=")
            spec = specs.get(name.strip())
            if not sep or spec is None:
                # the pair is not repeated whole: what follows the key may be a secret (a misspelt
                # mysql.pasword=..., or a space instead of '=')
                key = key_of(pair)
                rest = len(pair.strip()) - len(key)
                got = shown(key) + (f" and {rest} more character(s), not shown" if rest > 0 else "")
                self.problems.append(
                    f"--set takes section.key=value with a known setting, got {got}"
                    + _did_you_mean(key, specs)
                )
                continue
            self.put(spec, value, SET, from_text=True)

    def check_together(self) -> None:
        """Checks between settings: a wait (or a bound) that must not be below another. The serve ones were
        checked only when ``riskctl serve`` started (exit 3), while every other setting is refused when the
        settings load (exit 2, ``riskctl config show`` included); serve keeps its own check for settings built
        in code."""
        s = self.resolved.settings
        specs, sources = all_specs(), self.resolved.sources
        for name, floor_name in [
            ("job.restart_max_backoff_ms", "job.restart_initial_backoff_ms"),
            ("stack.flink_heartbeat_timeout_ms", "stack.flink_heartbeat_interval_ms"),
            ("serve.timeout_ms", "serve.min_timeout_ms"),
            ("serve.max_timeout_ms", "serve.timeout_ms"),
            # each request waiting for a decision holds an entry of the idempotency memory
            ("serve.idempotency_max_entries", "serve.max_in_flight"),
            # the producer refuses an event larger than its whole queue, every time
            ("serve.producer_queue_max_bytes", "job.max_event_bytes"),
        ]:
            value, floor = specs[name].get(s), specs[floor_name].get(s)
            if value < floor:
                subject, tail = _subject(specs[name], sources[name])
                within = f"{floor_name} ({floor}, from {printable(sources[floor_name])})"
                self.problems.append(f"{subject} must be >= {within}, got {value}{tail}")
        # the CDC source runs at the job's parallelism, one server id per subtask: with fewer ids, every
        # attempt of the job failed inside Flink ("Subtask ID 4 is out of server id range 5401-5404")
        ids = server_ids(s.job.cdc_server_id)
        if s.job.rules_source == "cdc" and ids is not None and len(ids) < s.job.parallelism:
            subject, tail = _subject(specs["job.cdc_server_id"], sources["job.cdc_server_id"])
            self.problems.append(
                f"{subject} must hold at least job.parallelism ({s.job.parallelism}, from "
                f"{printable(sources['job.parallelism'])}) server ids, one per subtask of the CDC source, "
                "got "
                f"{s.job.cdc_server_id!r} ({len(ids)}){tail}: give a range such as "
                f"{ids.start}-{ids.start + s.job.parallelism - 1}"
            )

    def done(self) -> Resolved:
        self.check_together()
        if len(self.problems) == 1:
            raise refused(self.problems[0])
        if self.problems:
            msg = f"{len(self.problems)} invalid settings:\n" + "\n".join(f"- {p}" for p in self.problems)
            raise refused(msg)
        return self.resolved


class ConfigWarning(UserWarning):
    """A setting taken as given, with a word about it. Its message is one line that begins as a config error
    on the same thing does (the variable's name, or ``config file <path>``) and names the settings file, the
    settings (``section.key``) and the reason; ``file`` and ``fields`` hold the first two for a program. The
    commands print it as ``warning: <message>``, one line as an error is ``error: <message>``
    (:func:`riskctl.cli.common.show_config_warnings`)."""

    def __init__(self, message: str, *, file: Path | str, fields: Iterable[str]) -> None:
        super().__init__(message)
        #: the settings file, as it was given
        self.file = str(file)
        #: the settings concerned, ``section.key``
        self.fields = tuple(fields)


class SecretFileWarning(ConfigWarning):
    """A settings file holding a secret can be read by other users of the machine."""


def _secrets_in(data: Mapping[str, Any], specs: Mapping[str, Spec]) -> list[str]:
    """The settings of ``data`` (a parsed settings file) that hold a secret: a secret setting with a value,
    or a value its mask changes (a Flink option ``s3.secret-key=...`` in ``flink.options``)."""
    found = []
    for name, table in data.items():
        if not isinstance(table, dict):
            continue
        for key, raw in table.items():
            spec = specs.get(f"{name}.{key}")
            if spec is None or not raw:
                continue
            masked = spec.allowed.masked
            if spec.allowed.secret or (masked is not None and isinstance(raw, str) and masked(raw) != raw):
                found.append(spec.dotted)
    return found


def _warn_if_others_read(file: Path, secrets: list[str]) -> None:
    """A :class:`SecretFileWarning` when ``file`` holds ``secrets`` and its group or other users may read it
    (a riskctl.toml written with the usual umask is 0644: the MySQL password and the API keys in it were
    readable by every account of the machine, without a word). A warning, not a refusal: the file may sit
    in a container or a folder nobody else can enter."""
    if not secrets:
        return
    try:
        mode = file.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) and mode & 0o044:
        msg = (
            f"config file {file} holds secrets ({', '.join(secrets)}) and is readable by other users "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 it, or set them in the environment "
            f"(RISKCTL_<SECTION>_<KEY>)"
        )
        warnings.warn(SecretFileWarning(msg, file=file, fields=secrets), stacklevel=5)


class EmptyVariableWarning(ConfigWarning):
    """A ``RISKCTL_*`` variable set to nothing replaces a value the settings file gives."""


def _warn_if_empty_replaces_file(spec: Spec, raw: str, resolved: Resolved) -> None:
    """An :class:`EmptyVariableWarning` when ``raw``, the value of ``spec``'s variable, is empty and the file
    gave the setting a value. An environment variable wins over the file, an empty one too, and for most
    strings empty means "the local stack's": ``RISKCTL_KAFKA_BOOTSTRAP=`` (a template's unset placeholder)
    replaced ``bootstrap = "kafka-1:9092"`` with 127.0.0.1:19092 without a word, and an empty
    ``RISKCTL_SERVE_API_KEYS`` the file's keys (found in review). The value stays the variable's: that is the
    documented order, and ``--set`` or the variable may empty a setting on purpose."""
    source = resolved.sources.get(spec.dotted)
    if (
        raw.strip()
        or resolved.file is None
        or source != str(resolved.file)
        or not spec.get(resolved.settings)
    ):
        return
    msg = (
        f"{spec.env} is set but empty: it replaces {spec.dotted} from {source}; unset the variable to keep "
        "the file's value"
    )
    warnings.warn(EmptyVariableWarning(msg, file=source, fields=[spec.dotted]), stacklevel=5)


def _subject(spec: Spec, source: str) -> tuple[str, str]:
    """How a message names a setting and where its value came from: "<subject> must be ..., got ...<tail>"."""
    if source == SET:
        return f"--set {spec.dotted}", ""
    if source == DEFAULT:
        return f"{spec.dotted} (default)", ""
    if source == spec.env:
        return source, f" (the environment variable of {spec.dotted})"
    return f"{spec.dotted} in {printable(source)}", ""


#: the largest settings file read: the settings take a few kilobytes; beyond, reading /dev/zero or a huge file
#: by mistake would fill memory (a MemoryError after minutes) instead of failing at once
MAX_CONFIG_BYTES = 1_048_576


def _read_toml(file: Path) -> dict[str, Any]:
    shown_file = printable(file)  # the message's own lines: a line break in the name is written as \n
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)  # a pipe (--config <(...)) is read like a file
        if len(data) > MAX_CONFIG_BYTES:
            msg = (
                f"config file {shown_file} is larger than {MAX_CONFIG_BYTES} bytes: is it the settings file?"
            )
            raise refused(msg)
        return tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        msg = f"config file {shown_file} is not valid TOML: {exc}"
        raise refused(msg) from None
    except RecursionError:
        # tomllib parses arrays and inline tables recursively: "x = [[[[..." (thousands of levels, far within
        # the size limit) ended every command in a RecursionError traceback
        msg = f"config file {shown_file} nests arrays or inline tables too deeply: is it the settings file?"
        raise refused(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"config file {shown_file} cannot be read: {printable(exc)}"
        raise refused(msg) from None


def _present(file: Path) -> bool:
    """Whether ``file`` is there to be read, or to be refused with the reason it cannot be: a symbolic link
    to a file that is gone (a riskctl.toml linked to a deployment's settings) or a folder that may not be
    searched is not the same as no file. ``exists()`` said False for the first, so the defaults (the local
    stack's Kafka and MySQL) were used without a word, and raised PermissionError (a traceback) for the
    second (found in review)."""
    try:
        return file.exists() or file.is_symlink()
    except OSError:
        return True


def resolve(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Resolved:
    """Settings from defaults, the TOML file, ``RISKCTL_*`` variables and ``--set`` pairs, with the source of
    each value; every problem of the load in one :class:`ConfigError`."""
    env = os.environ if env is None else env
    explicit = path or env.get("RISKCTL_CONFIG")
    file = Path(explicit or "riskctl.toml").expanduser()  # RISKCTL_CONFIG=~/... from a file no shell read
    resolved = Resolved(Settings(), dict.fromkeys(all_specs(), DEFAULT))
    loader = _Loader(resolved)
    if _present(file):
        loader.file(_read_toml(file), file)
        resolved.file = file
    elif explicit:
        msg = f"config file {printable(file)} does not exist"
        raise refused(msg)
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
    loader = _Loader(Resolved(settings, dict.fromkeys(all_specs(), "the loaded settings")))
    loader.overrides(pairs)
    return loader.done().settings
