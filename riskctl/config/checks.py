"""What a setting accepts and how a value is checked: the machinery behind :mod:`riskctl.config`.

A field of the settings dataclasses declares what it accepts with :func:`setting` (or a shorthand such as
:func:`port`); :class:`Spec` reads the field back, parses and checks a value from any source and says in words
what is allowed, for the error message. Nothing here knows a particular setting.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from riskctl.errors import ConfigError

#: Flink and Kafka take durations and most counts as Java longs, parallelism and slots as Java ints
LONG = 2**63 - 1
INT = 2**31 - 1


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
    #: a check the pattern cannot express (True: accepted), described by ``shape``; it may raise
    #: :class:`Refusal` saying what is wrong, which the message then says instead of ``shape``
    test: Callable[[str], bool] | None = None
    #: a secret (a password): its value is masked when settings are printed and never shown in a message
    secret: bool = False
    #: how a value that may hold secrets in parts is shown when printed or in a message (e.g. Flink options,
    #: where ``s3.secret-key=...`` is one pair of many)
    masked: Callable[[str], str] | None = None
    #: a file or folder: a leading ``~`` (``~user``) is expanded as a shell would; a ``$VARIABLE`` is refused
    #: (:func:`path`)
    path: bool = False


class Refusal(ValueError):
    """A value a setting's ``test`` refuses with its own reason: a part of the value (say which pair of a list
    is wrong) that "must be <shape>" cannot point at. The reason names no secret."""


def setting(default: Any, **allowed: Any) -> Any:
    """A dataclass field with a default and what it accepts (see :class:`Allowed`)."""
    return field(default=default, metadata={"allowed": Allowed(**allowed)})


def port(default: int) -> Any:
    return setting(default, low=1, high=65535)


def ms(default: int, *, low: int = 1) -> Any:
    """A duration in milliseconds; ``low=0`` where 0 has a meaning (disabled, no wait)."""
    return setting(default, low=low, high=LONG)


def positive(default: int) -> Any:
    return setting(default, low=1, high=INT)


def text(default: str) -> Any:
    return setting(default, required=True)


#: ``$NAME`` or ``${NAME}``: an environment variable a shell would have expanded, riskctl does not
_VARIABLE = re.compile(r"\$\{?[A-Za-z_]")


def path(default: str, *, required: bool = True) -> Any:
    """A file or folder. A leading ``~`` is expanded (``os.path.expanduser``): written in riskctl.toml or an
    environment file no shell reads, ``dir = "~/riskctl"`` was taken as a folder named ``~`` in the working
    directory, created there without a word. A ``$VARIABLE`` is refused rather than taken as a folder named
    so (found in review)."""
    what = "a non-empty path" if required else "a path or empty"
    return setting(
        default,
        required=required,
        path=True,
        test=lambda v: not _VARIABLE.search(v),
        shape=f"{what} (~ is expanded, $VARIABLES are not: write the path itself)",
    )


def one_of(default: str, *choices: str) -> Any:
    return setting(default, choices=choices)


@dataclass(frozen=True)
class Spec:
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

    def get(self, settings: object) -> Any:
        """This setting's value in ``settings`` (a :class:`riskctl.config.Settings`)."""
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
        if a.path and isinstance(value, str):
            value = os.path.expanduser(value.strip()) if value.strip().startswith("~") else value
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
    names = {LONG: "2^63-1", INT: "2^31-1"}
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


def shown(value: object) -> str:
    """``repr(value)``, cut short: a hostile value of megabytes does not belong in an error message."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def shown_secret(value: object) -> str:
    """What a message says of a secret's value: its type, never the value."""
    return f"a value of type {type(value).__name__} (not shown: a secret)"


def key_of(pair: str) -> str:
    """The ``section.key`` part that begins a ``--set`` pair (letters, digits, '_', '.'), for a message that
    must not repeat the rest: ``mysql.pasword=...`` or ``mysql.password hunter2`` may end with a secret."""
    return re.match(r"\s*[A-Za-z0-9_.]*", pair).group().strip()  # type: ignore[union-attr]


# -- a refused setting ---------------------------------------------------------------------------------------
#: the attribute that marks a ConfigError as a refused setting (:func:`refused`)
_REFUSED = "refused_setting"


def refused(message: str) -> ConfigError:
    """The :class:`~riskctl.errors.ConfigError` of a setting riskctl refuses: a value it does not accept, a
    name it does not know (a key of the file, a ``RISKCTL_<SECTION>_*`` variable, a ``--set``), a settings
    file it cannot read. It is marked (:func:`is_refused`): every command ends on it as on a bad option, exit
    2 (:func:`riskctl.cli.common.error_exit`). A ConfigError without the mark says that something a command
    needs is not configured (no MySQL password), exit 3 like a service that does not answer."""
    error = ConfigError(message)
    setattr(error, _REFUSED, True)
    return error


def is_refused(error: BaseException) -> bool:
    """Whether ``error`` is a ConfigError made by :func:`refused`."""
    return isinstance(error, ConfigError) and getattr(error, _REFUSED, False) is True
