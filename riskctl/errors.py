"""All riskctl errors in one place.

The pure-core errors (rules, expressions, events) live in :mod:`riskctl.core.errors` so the core imports
nothing
outside itself; this module re-exports them and adds the errors of the outer layers (configuration, services).
"""

from __future__ import annotations

from riskctl.core.errors import (
    EventError,
    ExpressionError,
    RiskctlError,
    RuleError,
    RuleSetError,
)

__all__ = [
    "ConfigError",
    "EventError",
    "ExpressionError",
    "RiskctlError",
    "RuleError",
    "RuleSetError",
    "ServiceError",
]


class ConfigError(RiskctlError, ValueError):
    """A configuration value is missing or invalid; the message names the setting and how to set it."""


class ServiceError(RiskctlError):
    """A service (Kafka, MariaDB, Flink) is down, failed to start, or its port is taken.

    The message names the service, its address and its log file, and says what to start.
    """

    def __init__(self, service: str, message: str, *, log: str | None = None) -> None:
        self.service = service
        self.log = log
        text = f"{service}: {message}"
        if log:
            text += f" (log: {log})"
        super().__init__(text)
