"""Typed configuration in one place, validated when it is loaded.

Values come, last one winning, from the defaults (:mod:`riskctl.config.settings`), a TOML file
(``riskctl.toml`` in the working directory, or the path in ``RISKCTL_CONFIG``), environment variables named
``RISKCTL_<SECTION>_<KEY>`` (for instance ``RISKCTL_KAFKA_BOOTSTRAP``, ``RISKCTL_MYSQL_PASSWORD``) and
``--set section.key=value`` on the command line (:mod:`riskctl.config.loading`). Every value is checked when
it arrives: its type (the annotation of its field) and what the field accepts (a range, choices, a pattern,
not empty: :mod:`riskctl.config.checks`). A bad value, an unknown key or an unknown ``RISKCTL_<SECTION>_*``
variable is a :class:`~riskctl.errors.ConfigError` that names the key, the value, where it came from and
what is allowed, every problem of one load at once. So ``parallelism = "four"`` fails when the settings
load, not later inside the job. That error is marked as a refused setting
(:func:`riskctl.config.checks.refused`): every command ends on it with exit code 2, bad usage, as on a bad
option; a ConfigError for something not configured (no MySQL password) is not marked, and ends a command with
exit code 3, like a service that does not answer.

Secrets never live in code: the MySQL password comes from the environment, the file, or — for the local stack
only — the password file the stack generated on its first start (``.stack/mysql/password``).
``Settings.redacted()`` masks secrets for printing (``riskctl config show``).

Hand-written rather than pydantic: the checks are a type, a range, choices or a pattern per field, and the
messages must name the source of each value (file, variable, ``--set``), which pydantic would need custom
sources for as well; a dependency with a compiled core would buy little here.
"""

from __future__ import annotations

from riskctl.config.loading import Resolved, apply_overrides, load_settings, resolve
from riskctl.config.settings import (
    PROJECT_ROOT,
    AlertsSettings,
    ConsoleSettings,
    FlinkSettings,
    JobSettings,
    KafkaSettings,
    MysqlSettings,
    ServeSettings,
    Settings,
    StackSettings,
)

__all__ = [
    "PROJECT_ROOT",
    "AlertsSettings",
    "ConsoleSettings",
    "FlinkSettings",
    "JobSettings",
    "KafkaSettings",
    "MysqlSettings",
    "Resolved",
    "ServeSettings",
    "Settings",
    "StackSettings",
    "apply_overrides",
    "load_settings",
    "resolve",
]
