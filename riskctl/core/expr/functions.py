"""The functions of the expression language and the null-safe arithmetic they share with the operators.

Every function returns ``null`` (None) rather than raising on a wrong type: a condition over events with a
missing or odd field is false for that event, never an error in the job. Arithmetic results beyond the float
range are ``null`` too, and ``*`` and ``**`` refuse to build such integers before computing them
(:data:`~riskctl.core.expr.limits.MAX_RESULT_BITS`).
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Mapping
from typing import Any

from riskctl.core.expr.limits import MAX_RESULT_BITS
from riskctl.core.stored import BOOL_KEYS

NUMBERS = frozenset({int, float})

SCALAR_FUNCTIONS = (
    "lower",
    "upper",
    "len",
    "startswith",
    "endswith",
    "contains",
    "abs",
    "coalesce",
    "min",
    "max",
)
AGGREGATE_FUNCTIONS = ("count", "sum", "avg", "min", "max", "distinct", "first", "last")
FUNCTIONS = tuple(sorted(set(SCALAR_FUNCTIONS) | set(AGGREGATE_FUNCTIONS)))

#: the aggregates that read every event of a step (count, first and last read one)
LINEAR_AGGREGATES = frozenset({"sum", "avg", "min", "max", "distinct"})


PY_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

# A boolean is never a number. Python says ``True == 1``, ``False == 0.0``, ``True > 0``, ``hash(True) ==
# hash(1)`` (so ``True in frozenset({1})``) and ``[True] == [1]``; the language says a comparison between
# different types is false (``!=`` true), as for a string and a number. The helpers below are the reference
# (constant folding, the general closures); the operators specialise the common cases so that a comparison
# with a string, or a number other than 0 and 1, costs what it did.


def same(x: Any, y: Any) -> bool:
    """``x == y`` in the language: a boolean equals only the same boolean, at any depth of lists and maps."""
    return x == y and _same_types(x, y)


def _same_types(x: Any, y: Any) -> bool:
    """For ``x == y`` (Python's): whether no boolean met a number on the way."""
    tx = type(x)
    ty = type(y)
    if tx is bool or ty is bool:
        return tx is ty
    if tx is list or tx is tuple:  # the other is a list or tuple of equal items
        for a, b in zip(x, y, strict=False):
            if not _same_types(a, b):
                return False
        return True
    if isinstance(x, Mapping) and isinstance(y, Mapping):  # same keys, equal values
        for k, v in x.items():
            if not _same_types(v, y[k]):
                return False
    return True


def ordered(op: Callable[[Any, Any], Any], x: Any, y: Any) -> bool:
    """``op(x, y)`` for ``< <= > >=``: false when a boolean is compared (booleans are not ordered, and are
    not numbers), also where lists are compared item by item, or when the types do not compare."""
    if x is None or y is None or type(x) is bool or type(y) is bool:
        return False
    if type(x) in _SEQUENCES and type(y) in _SEQUENCES:
        # Python's order of lists: the first items that differ decide, else the lengths
        for a, b in zip(x, y, strict=False):
            if not same(a, b):
                return False if a == b else ordered(op, a, b)  # a boolean beside a number: no order
        return bool(op(len(x), len(y)))
    try:
        return bool(op(x, y))
    except TypeError:
        return False


def member(x: Any, items: Any) -> bool:
    """``x in items`` for a list or tuple, by :func:`same` (Python's ``in`` finds ``True`` in ``[1]``)."""
    if x not in items:
        return False
    if type(x) is str:  # a string equals only a string: Python's answer is the language's
        return True
    for item in items:
        if same(x, item):
            return True
    return False


def compare_values(op: str, x: Any, y: Any) -> bool:
    """``x op y`` as the language defines it (null on either side: false); the reference for the closures."""
    if x is None or y is None:
        return False
    if op == "==":
        return same(x, y)
    if op == "!=":
        return not same(x, y)
    return ordered(PY_COMPARE[op], x, y)


_SEQUENCES = frozenset({list, tuple})


FMAX = sys.float_info.max  # < 2**1024; ints beyond it and inf/NaN fail -FMAX <= r <= FMAX


def bounded(r: Any) -> Any:
    """``r`` if it is a finite number within +-2**MAX_RESULT_BITS, else None (overflow is null)."""
    if type(r) in NUMBERS and -FMAX <= r <= FMAX:
        return r
    return None  # too large, inf, NaN, or complex (a negative base and a fractional exponent)


def _checked_mul(x: Any, y: Any) -> Any:
    if type(x) is int and type(y) is int and x.bit_length() + y.bit_length() > MAX_RESULT_BITS + 1:
        raise OverflowError  # |x*y| >= 2**(bits-2) > 2**1024: do not build it
    return x * y


def _checked_pow(x: Any, y: Any) -> Any:
    if type(x) is int and type(y) is int and y > 1 and (x.bit_length() - 1) * y > MAX_RESULT_BITS:
        raise OverflowError  # |x**y| >= 2**((bits-1)*y) > 2**1024: do not build it
    if type(x) is int and x.bit_length() > MAX_RESULT_BITS:
        raise OverflowError  # a huge base (not from an event within the door's limits)
    r = x**y
    if type(r) is complex:
        raise OverflowError  # (-8) ** 0.5: not a real number
    return r


#: the operators as evaluated; every result is then checked against +-FMAX (beyond: null), and ``*`` and
#: ``**`` refuse (OverflowError, so null) before building an integer beyond 2**MAX_RESULT_BITS
SAFE_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "-": operator.sub,
    "*": _checked_mul,
    "/": operator.truediv,
    "%": operator.mod,
    "**": _checked_pow,
}


def _agg_sum(xs: list[Any]) -> Any:
    try:
        return bounded(sum(xs))
    except OverflowError:  # an integer beyond the float range plus a float
        return None


def _agg_avg(xs: list[Any]) -> Any:
    if not xs:
        return None
    try:
        return bounded(sum(xs) / len(xs))
    except OverflowError:  # an integer sum beyond the float range
        return None


def _agg_min(xs: list[Any]) -> Any:
    return min(xs) if xs else None


def _agg_max(xs: list[Any]) -> Any:
    return max(xs) if xs else None


AGGREGATES: dict[str, Callable[[list[Any]], Any]] = {
    "sum": _agg_sum,
    "avg": _agg_avg,
    "min": _agg_min,
    "max": _agg_max,
}


# Step aggregates kept incrementally (see riskctl.core.patterns): a partial match keeps, per aggregate, the
# fold of its step's values so far, and one more event is one ``step`` call instead of a pass over the step.
# Each is ``(initial, step(acc, value) -> acc, read(acc) -> result)``, and ``read`` of the fold over a list's
# values equals the aggregate of the list above, to the last bit:
# - sum/avg: ``acc`` is ``(total, count)``, ``total`` folded by ``total + v`` from the int 0. On CPython 3.11
#   (this project's interpreter: pyproject.toml) the builtin ``sum`` of ints and floats *is* that left fold
#   (exact int arithmetic, then float ``+=``, an int added to a float rounded as ``float(int)``; 3.12 added a
#   compensation, which is why the fold does not call ``sum``). An OverflowError (an int beyond the float
#   range meeting a float) makes the total ``None`` for good, as every longer list raises it too.
# - min/max: the first value not beaten by a later one (``v < acc``), as ``min``/``max`` keep the first of
#   equal values (1 and 1.0).
# - distinct: the frozenset of the hashable values other than null; its size does not depend on the order.


def _sum_step(acc: Any, v: Any) -> Any:
    if type(v) not in NUMBERS:
        return acc
    total, n = acc
    if total is not None:
        try:
            total = total + v
        except OverflowError:  # an integer beyond the float range plus a float
            total = None
    return total, n + 1


def _sum_read(acc: Any) -> Any:
    total = acc[0]
    return None if total is None else bounded(total)


def _avg_read(acc: Any) -> Any:
    total, n = acc
    if not n or total is None:
        return None
    try:
        return bounded(total / n)
    except OverflowError:  # an integer sum beyond the float range
        return None


def _min_step(acc: Any, v: Any) -> Any:
    return v if type(v) in NUMBERS and (acc is None or v < acc) else acc


def _max_step(acc: Any, v: Any) -> Any:
    return v if type(v) in NUMBERS and (acc is None or v > acc) else acc


def _identity(acc: Any) -> Any:
    return acc


def _distinct_step(acc: Any, v: Any) -> Any:
    if v is None:
        return acc
    if v is True or v is False:
        v = BOOL_KEYS[v]  # true is not 1
    try:
        if v in acc:
            return acc
    except TypeError:  # not hashable (a list, a mapping): not counted
        return acc
    return acc | {v}


#: name -> (the kind of its kept fold, shared by sum and avg; initial; step; read)
FOLDS: dict[str, tuple[str, Any, Callable[[Any, Any], Any], Callable[[Any], Any]]] = {
    "sum": ("sum", (0, 0), _sum_step, _sum_read),
    "avg": ("sum", (0, 0), _sum_step, _avg_read),
    "min": ("min", None, _min_step, _identity),
    "max": ("max", None, _max_step, _identity),
    "distinct": ("distinct", frozenset(), _distinct_step, len),
}


def _f_lower(s: Any) -> Any:
    return s.lower() if isinstance(s, str) else None


def _f_upper(s: Any) -> Any:
    return s.upper() if isinstance(s, str) else None


def _f_len(s: Any) -> Any:
    return len(s) if isinstance(s, str | list | tuple | Mapping) else None


def _f_startswith(s: Any, p: Any) -> Any:
    return isinstance(s, str) and isinstance(p, str) and s.startswith(p)


def _f_endswith(s: Any, p: Any) -> Any:
    return isinstance(s, str) and isinstance(p, str) and s.endswith(p)


def _f_contains(s: Any, x: Any) -> Any:
    if isinstance(s, str):
        return isinstance(x, str) and x in s
    if isinstance(s, list | tuple) and x is not None:
        try:
            return member(x, s)
        except TypeError:
            return False
    return False


def _f_abs(x: Any) -> Any:
    return abs(x) if type(x) in NUMBERS else None


def _f_coalesce(*xs: Any) -> Any:
    for x in xs:
        if x is not None:
            return x
    return None


def _f_min(*xs: Any) -> Any:
    nums = [x for x in xs if type(x) in NUMBERS]
    return min(nums) if nums else None


def _f_max(*xs: Any) -> Any:
    nums = [x for x in xs if type(x) in NUMBERS]
    return max(nums) if nums else None


SCALAR_IMPL: dict[str, Callable[..., Any]] = {
    "lower": _f_lower,
    "upper": _f_upper,
    "len": _f_len,
    "startswith": _f_startswith,
    "endswith": _f_endswith,
    "contains": _f_contains,
    "abs": _f_abs,
    "coalesce": _f_coalesce,
    "min": _f_min,
    "max": _f_max,
}
ARITY: dict[str, tuple[int, int]] = {
    "lower": (1, 1),
    "upper": (1, 1),
    "len": (1, 1),
    "startswith": (2, 2),
    "endswith": (2, 2),
    "contains": (2, 2),
    "abs": (1, 1),
    "coalesce": (1, 99),
    "min": (2, 99),
    "max": (2, 99),
}
BOOL_FUNCS = frozenset({"startswith", "endswith", "contains"})
