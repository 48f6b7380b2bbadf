"""The closures of the operators and scalar functions, built from already compiled operands.

These functions do not resolve names or walk the tree (that is :mod:`riskctl.core.expr.compiler`): they take
:class:`~riskctl.core.expr.closures.Compiled` operands and return the closure of one operator, folding it to
a constant when its operands are constant and checking the bounds of :mod:`riskctl.core.expr.limits`. The
closures are specialised by hand (a constant right side, a top-level field, two or three items) because they
run for every event; the general forms are the fallback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from riskctl.core.expr.closures import Compiled, as_bool, constant, fold
from riskctl.core.expr.functions import (
    ARITY,
    BOOL_FUNCS,
    FMAX,
    NUMBERS,
    PY_COMPARE,
    SAFE_ARITH,
    SCALAR_IMPL,
    compare_values,
    member,
    ordered,
    same,
)
from riskctl.core.expr.lexer import expr_error
from riskctl.core.expr.limits import MAX_DEGREE, MAX_EXPONENT, MAX_RESULT_BITS, MAX_STRING


def unary(op: str, x: Compiled) -> Compiled:
    """``not x`` (truthiness), ``+x`` or ``-x`` (null unless ``x`` is a number)."""
    f = x.fn
    if op == "not":
        if x.is_const:
            return constant(not x.const)

        def not_(e: Any, c: Any) -> Any:
            return not f(e, c)

        return Compiled(not_, is_bool=True)
    if op == "+":

        def pos(e: Any, c: Any) -> Any:
            v = f(e, c)
            return v if type(v) in NUMBERS else None

        return fold(Compiled(pos), x)

    def neg(e: Any, c: Any) -> Any:
        v = f(e, c)
        return -v if type(v) in NUMBERS else None

    return fold(Compiled(neg), x)


def bool_chain(items: list[Compiled], is_and: bool) -> Compiled:
    """``items[0] and items[1] ...`` (or ``or``), none of them constant; returns a bool.

    What the chain can be true for is derived from its items: an ``and`` only for the types all its typed
    items allow, an ``or`` only when every item is typed. Two and three items get their own closure, because a
    loop per event costs more than the chain it evaluates.
    """
    c = _bool_closure(items, is_and)
    if is_and:
        known = [i.types for i in items if i.types is not None]
        c.types = frozenset.intersection(*known) if known else None
    elif all(i.types is not None for i in items):
        c.types = frozenset().union(*(i.types for i in items if i.types is not None))
    return c


def _bool_closure(items: list[Compiled], is_and: bool) -> Compiled:
    fns = [i.fn if i.is_bool else as_bool(i.fn) for i in items]
    if len(fns) == 1:
        return Compiled(fns[0], is_bool=True, types=items[0].types)
    if len(fns) == 2:
        a, b = fns
        if is_and:

            def and2(e: Any, c: Any) -> Any:
                return a(e, c) and b(e, c)

            return Compiled(and2, is_bool=True)

        def or2(e: Any, c: Any) -> Any:
            return a(e, c) or b(e, c)

        return Compiled(or2, is_bool=True)
    if len(fns) == 3:
        a, b, d = fns
        if is_and:

            def and3(e: Any, c: Any) -> Any:
                return a(e, c) and b(e, c) and d(e, c)

            return Compiled(and3, is_bool=True)

        def or3(e: Any, c: Any) -> Any:
            return a(e, c) or b(e, c) or d(e, c)

        return Compiled(or3, is_bool=True)
    all_fns = tuple(fns)
    if is_and:

        def and_n(e: Any, c: Any) -> Any:
            for f in all_fns:
                if not f(e, c):
                    return False
            return True

        return Compiled(and_n, is_bool=True)

    def or_n(e: Any, c: Any) -> Any:
        for f in all_fns:
            if f(e, c):
                return True
        return False

    return Compiled(or_n, is_bool=True)


def compare(op: str, a: Compiled, b: Compiled) -> Compiled:
    """``a op b`` for ``== != < <= > >=``: false when either side is null or the types differ (``!=`` true).

    ``x == null`` and ``x != null`` test for null; a boolean is never a number (:func:`compare_values`, the
    reference); a comparison with a constant reads a top-level field directly, and ``event.type == "..."``
    tells the engine which events the condition can match.
    """
    # Explicit null tests: x == null, x != null.
    if op in ("==", "!=") and ((a.is_const and a.const is None) or (b.is_const and b.const is None)):
        other = b if a.is_const and a.const is None else a
        if other.is_const:
            return constant((other.const is None) == (op == "=="))
        g = other.fn
        if op == "==":

            def is_null(e: Any, c: Any) -> Any:
                return g(e, c) is None

            return Compiled(is_null, is_bool=True)

        def not_null(e: Any, c: Any) -> Any:
            return g(e, c) is not None

        return Compiled(not_null, is_bool=True)
    if a.is_const and b.is_const:
        return constant(compare_values(op, a.const, b.const))
    if a.is_const:  # 3 < event.x is event.x > 3
        op, a, b = _MIRROR[op], b, a
    if b.is_const:
        if op in ("==", "!="):
            return _equal_const(op == "==", a, b.const)
        return _order_const(PY_COMPARE[op], a, b.const)
    fa, fb = a.fn, b.fn
    if op == "==":

        def eq(e: Any, c: Any) -> Any:
            x = fa(e, c)
            if x is None:
                return False
            y = fb(e, c)
            return y is not None and same(x, y)

        return Compiled(eq, is_bool=True)
    if op == "!=":

        def ne(e: Any, c: Any) -> Any:
            x = fa(e, c)
            if x is None:
                return False
            y = fb(e, c)
            return y is not None and not same(x, y)

        return Compiled(ne, is_bool=True)
    py_op = PY_COMPARE[op]

    def cmp(e: Any, c: Any) -> Any:
        x = fa(e, c)
        if x is None:
            return False
        y = fb(e, c)
        if y is None:
            return False
        try:
            r = py_op(x, y)
        except TypeError:
            return False
        if r and (type(x) in _CHECKED or type(y) is bool):
            return ordered(py_op, x, y)  # a boolean, or lists (which may hold one)
        return r

    return Compiled(cmp, is_bool=True)


_MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
#: the types whose ordering a closure hands to :func:`ordered` when Python says true
_CHECKED = frozenset({bool, list, tuple})


def _equal_const(eq: bool, a: Compiled, k: Any) -> Compiled:
    """``a == k`` / ``a != k`` for a constant ``k`` other than null.

    The closure depends on ``k``: a boolean is compared by identity (``x is True``: ``1 == True`` in Python);
    a string, or a number other than 0 and 1, as Python does (no boolean equals it); 0 and 1 also check that
    the value is not a boolean; a list by :func:`same`.
    """
    key = a.field
    fa = a.fn
    if type(k) is bool:
        if key is not None:
            if eq:

                def field_is(e: Any, c: Any) -> Any:
                    return e.get(key) is k

                return Compiled(field_is, is_bool=True)

            def field_is_not(e: Any, c: Any) -> Any:
                v = e.get(key)
                return v is not None and v is not k

            return Compiled(field_is_not, is_bool=True)
        if eq:

            def is_const(e: Any, c: Any) -> Any:
                return fa(e, c) is k

            return Compiled(is_const, is_bool=True)

        def is_not_const(e: Any, c: Any) -> Any:
            v = fa(e, c)
            return v is not None and v is not k

        return Compiled(is_not_const, is_bool=True)
    if type(k) is str or (type(k) in NUMBERS and k != 0 and k != 1):
        if key is not None:
            if eq:

                def field_eq(e: Any, c: Any) -> Any:
                    return e.get(key) == k

                types = frozenset([k]) if key == "type" and isinstance(k, str) else None
                return Compiled(field_eq, is_bool=True, types=types)

            def field_ne(e: Any, c: Any) -> Any:
                v = e.get(key)
                return v is not None and v != k

            return Compiled(field_ne, is_bool=True)
        if eq:

            def eq_const(e: Any, c: Any) -> Any:
                return fa(e, c) == k

            return Compiled(eq_const, is_bool=True)

        def ne_const(e: Any, c: Any) -> Any:
            v = fa(e, c)
            return v is not None and v != k

        return Compiled(ne_const, is_bool=True)
    if type(k) in NUMBERS:  # 0 or 1: equal to false or true in Python
        if key is not None:
            if eq:

                def field_eq_num(e: Any, c: Any) -> Any:
                    v = e.get(key)
                    return v == k and v is not True and v is not False

                return Compiled(field_eq_num, is_bool=True)

            def field_ne_num(e: Any, c: Any) -> Any:
                v = e.get(key)
                return v is not None and (v != k or v is True or v is False)

            return Compiled(field_ne_num, is_bool=True)
        if eq:

            def eq_num(e: Any, c: Any) -> Any:
                v = fa(e, c)
                return v == k and v is not True and v is not False

            return Compiled(eq_num, is_bool=True)

        def ne_num(e: Any, c: Any) -> Any:
            v = fa(e, c)
            return v is not None and (v != k or v is True or v is False)

        return Compiled(ne_num, is_bool=True)
    if eq:  # a list

        def eq_list(e: Any, c: Any) -> Any:
            v = fa(e, c)
            return v is not None and same(v, k)

        return Compiled(eq_list, is_bool=True)

    def ne_list(e: Any, c: Any) -> Any:
        v = fa(e, c)
        return v is not None and not same(v, k)

    return Compiled(ne_list, is_bool=True)


def _order_const(py_op: Any, a: Compiled, k: Any) -> Compiled:
    """``a < k`` (``<= > >=``) for a constant ``k`` other than null: a boolean on either side is false."""
    if type(k) is bool:
        return constant(False)  # booleans are not ordered, and a number is not a boolean
    key = a.field
    fa = a.fn
    if type(k) in _CHECKED:  # a list

        def order_list(e: Any, c: Any) -> Any:
            return ordered(py_op, fa(e, c), k)

        return Compiled(order_list, is_bool=True)
    if key is not None:

        def field_cmp(e: Any, c: Any) -> Any:
            v = e.get(key)
            if v is None:
                return False
            try:
                return py_op(v, k) and v is not True and v is not False
            except TypeError:
                return False

        return Compiled(field_cmp, is_bool=True)

    def cmp_const(e: Any, c: Any) -> Any:
        v = fa(e, c)
        if v is None:
            return False
        try:
            return py_op(v, k) and v is not True and v is not False
        except TypeError:
            return False

    return Compiled(cmp_const, is_bool=True)


def contains(op: str, a: Compiled, b: Compiled, b_pos: int) -> Compiled:
    """``a in b`` / ``a not in b``: false when ``a`` is null; items are compared as by ``==`` (a boolean is
    never a number).

    A constant list becomes a frozenset (unless it holds lists, which are not hashable: then it is searched
    in order by :func:`member`). In a set ``True`` is found as ``1`` (and ``False`` as ``0``), so when the
    list holds a boolean, or a 0 or 1, the booleans are looked up apart from the rest.
    """
    negate = op == "not in"
    if b.is_const and not isinstance(b.const, list | str):
        msg = f"the right side of {op!r} must be a list or a string"
        raise expr_error(msg, b_pos)
    fa = a.fn
    if b.is_const and isinstance(b.const, list):
        items: list[Any] = b.const
        types = None
        if a.field == "type" and not negate and all(isinstance(m, str) for m in items):
            types = frozenset(items)
        try:
            bools = frozenset(m for m in items if type(m) is bool)
            others = frozenset(m for m in items if type(m) is not bool)
        except TypeError:  # a list among the items

            def in_list(e: Any, c: Any) -> Any:
                v = fa(e, c)
                if v is None:
                    return False
                return member(v, items) != negate

            return fold(Compiled(in_list, is_bool=True, types=types), a)
        if not bools and not any(type(m) in NUMBERS and (m == 0 or m == 1) for m in others):
            members = others  # no boolean can be found in it, nor a boolean find a number

            def in_const(e: Any, c: Any) -> Any:
                v = fa(e, c)
                if v is None:
                    return False
                try:
                    return (v in members) != negate
                except TypeError:
                    return False

            return fold(Compiled(in_const, is_bool=True, types=types), a)

        def in_split(e: Any, c: Any) -> Any:
            v = fa(e, c)
            if v is None:
                return False
            if v is True or v is False:
                return (v in bools) != negate
            try:
                return (v in others) != negate
            except TypeError:
                return False

        return fold(Compiled(in_split, is_bool=True, types=types), a)
    fb = b.fn

    def in_dyn(e: Any, c: Any) -> Any:
        v = fa(e, c)
        if v is None:
            return False
        container = fb(e, c)
        if container is None or not isinstance(container, tuple | list | str | Mapping):
            return False
        try:
            if isinstance(container, list | tuple):
                return member(v, container) != negate
            return (v in container) != negate
        except TypeError:
            return False

    return fold(Compiled(in_dyn, is_bool=True), a, b)


def arith(op: str, a: Compiled, b: Compiled, pos: int, b_pos: int) -> Compiled:
    """``a op b`` for ``+ - * / % **``: null unless both sides are numbers (or, for ``+``, strings).

    Refused at load time: a non-constant or too large exponent, an expression whose degree (the power it
    raises its inputs to) exceeds :data:`MAX_DEGREE`, and a constant part that overflows.
    """
    if op == "**":
        if not b.is_const or type(b.const) not in NUMBERS:
            msg = "the exponent of '**' must be a constant number"
            raise expr_error(msg, b_pos)
        if abs(b.const) > MAX_EXPONENT:
            msg = f"exponent {b.const} is too large (limit {MAX_EXPONENT})"
            raise expr_error(msg, b_pos)
    # The cost bound across nesting: exponents and factors multiply.
    if op == "**":
        degree = a.degree * max(1, math.ceil(abs(b.const)))
    elif op == "*":
        degree = a.degree + b.degree
    else:
        degree = max(a.degree, b.degree)
    if degree > MAX_DEGREE:
        msg = (
            f"the expression raises its inputs to the power {degree} (nested exponents and chained "
            f"multiplications multiply; limit {MAX_DEGREE})"
        )
        raise expr_error(msg, pos)
    fa, fb = a.fn, b.fn
    if op == "+":

        def add(e: Any, c: Any) -> Any:
            x = fa(e, c)
            y = fb(e, c)
            tx, ty = type(x), type(y)
            if tx in NUMBERS and ty in NUMBERS:
                r = x + y
                return r if -FMAX <= r <= FMAX else None
            if tx is str and ty is str:
                return x + y if len(x) + len(y) <= MAX_STRING else None
            return None

        return _arith_fold(Compiled(add, degree=degree), a, b, pos)
    py_op = SAFE_ARITH[op]

    def arith(e: Any, c: Any) -> Any:
        x = fa(e, c)
        y = fb(e, c)
        if type(x) in NUMBERS and type(y) in NUMBERS:
            try:
                r = py_op(x, y)
            except (ZeroDivisionError, OverflowError, ValueError):
                return None
            return r if -FMAX <= r <= FMAX else None  # one test: ints in range, finite floats
        return None

    return _arith_fold(Compiled(arith, degree=degree), a, b, pos)


def _arith_fold(c: Compiled, a: Compiled, b: Compiled, pos: int) -> Compiled:
    folded = fold(c, a, b)
    if folded.is_const and folded.const is None and type(a.const) in NUMBERS and type(b.const) in NUMBERS:
        msg = f"constant expression overflows (beyond +-2**{MAX_RESULT_BITS}, or not a finite number)"
        raise expr_error(msg, pos)
    return folded


def scalar_call(name: str, args: list[Compiled], pos: int) -> Compiled:
    """``name(args...)`` for a scalar function (:data:`SCALAR_FUNCTIONS`), after checking its arity."""
    lo, hi = ARITY[name]
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}" if hi < 99 else f"at least {lo}"
        msg = f"{name}() takes {want} argument{'s' if hi != 1 else ''}, got {len(args)}"
        raise expr_error(msg, pos)
    impl = SCALAR_IMPL[name]
    fns = tuple(a.fn for a in args)
    if len(fns) == 1:
        (f,) = fns

        def call1(e: Any, c: Any) -> Any:
            return impl(f(e, c))

        return fold(Compiled(call1, is_bool=name in BOOL_FUNCS), *args)
    if len(fns) == 2:
        f, g = fns

        def call2(e: Any, c: Any) -> Any:
            return impl(f(e, c), g(e, c))

        return fold(Compiled(call2, is_bool=name in BOOL_FUNCS), *args)

    def call_n(e: Any, c: Any) -> Any:
        return impl(*[f(e, c) for f in fns])

    return fold(Compiled(call_n, is_bool=name in BOOL_FUNCS), *args)
