"""What the compiler makes of a node: a closure ``fn(event, ctx)`` and the facts known about it.

Every node of a condition becomes a plain Python function of ``(event, ctx)``; calling the root once per event
is the whole evaluation (no tree walk, no dispatch). Beside the closure, :class:`Compiled` records what the
compiler can prove (a constant value, a bool result, the event types it can be true for, the field it reads,
the power it raises its inputs to), which is how constants fold and how the engine skips work for an event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from riskctl.core.expr.lexer import expr_error
from riskctl.core.expr.limits import MAX_NUMBER

Fn = Callable[[Any, Any], Any]

_NOT_CONST = object()


@dataclass(slots=True)
class Compiled:
    """A compiled node: its closure, and what the compiler knows about it."""

    fn: Fn
    const: Any = _NOT_CONST  # the value, when the node is a constant
    is_bool: bool = False  # fn always returns a bool
    step: str | None = None  # for a step reference: the step name
    path: tuple[str, ...] = ()  # ...and the field path after it (empty: the step itself)
    field: str | None = None  # for event.<field> (one level): the field name
    types: frozenset[str] | None = None  # the node is true only for events of these types (None: unknown)
    degree: int = 1  # the power of the inputs this value can reach (constants 0); bounded by MAX_DEGREE

    @property
    def is_const(self) -> bool:
        return self.const is not _NOT_CONST


def constant(value: Any) -> Compiled:
    """The compiled form of a constant: a closure returning ``value``, known to be that value."""

    def fn(e: Any, c: Any) -> Any:
        return value

    return Compiled(fn, const=value, is_bool=isinstance(value, bool), degree=0)


def get_path(value: Any, path: tuple[str, ...]) -> Any:
    """``value[p0][p1]...`` through mappings only; None where a step is missing or not a mapping."""
    for name in path:
        if isinstance(value, Mapping):
            value = value.get(name)
        else:
            return None
    return value


def fold(c: Compiled, *parts: Compiled) -> Compiled:
    """Replace ``c`` by its value when every part is constant; else ``c`` takes its parts' degree."""
    if parts and all(p.is_const for p in parts):
        value = c.fn(None, None)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER**2:
            msg = "constant expression is too large"
            raise expr_error(msg, None)
        return constant(value)
    if parts and c.degree == 1:
        c.degree = max(p.degree for p in parts)
    return c


def as_bool(f: Fn) -> Fn:
    """``f`` with its result turned into a bool (truthiness; null is false)."""

    def to_bool(e: Any, c: Any) -> Any:
        return bool(f(e, c))

    return to_bool
