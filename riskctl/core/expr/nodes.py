"""The syntax tree of an expression: what the parser builds and the compiler turns into closures.

Every node knows its offset in the text (for error columns) and its height; a tree higher than
:data:`~riskctl.core.expr.limits.MAX_HEIGHT` is refused while it is built, so neither the compiler nor any
walk over the tree can recurse without bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from riskctl.core.expr.lexer import expr_error
from riskctl.core.expr.limits import MAX_HEIGHT

COMPARE_OPS = ("==", "!=", "<", "<=", ">", ">=")


@dataclass(slots=True, eq=False)
class Node:
    """A node at offset ``pos``; ``height`` is 1 for a leaf, else 1 + the height of its highest child."""

    pos: int
    height: int = field(init=False)

    def __post_init__(self) -> None:
        self.height = 1 + max((c.height for c in self.children()), default=0)
        if self.height > MAX_HEIGHT:
            msg = (
                f"expression is nested too deeply (more than {MAX_HEIGHT} levels: each operator of a chain "
                "such as a + b + c nests one more; 'and'/'or' chains do not)"
            )
            raise expr_error(msg, self.pos)

    def children(self) -> tuple[Node, ...]:
        """The direct sub-expressions, evaluated by this node."""
        return ()


@dataclass(slots=True, eq=False)
class Const(Node):
    """A literal: number (durations are numbers of ms), string, ``true``, ``false`` or ``null``."""

    value: Any


@dataclass(slots=True, eq=False)
class Name(Node):
    """A bare name: ``event``, a feature, a pattern step or (before ``(``) a function."""

    name: str


@dataclass(slots=True, eq=False)
class Member(Node):
    """``obj.name``: a field of the event, of a step's last event, or of ``first(...)``/``last(...)``."""

    obj: Node
    name: str

    def children(self) -> tuple[Node, ...]:
        return (self.obj,)


@dataclass(slots=True, eq=False)
class Call(Node):
    """``name(args...)``: a scalar function or an aggregate over a pattern step."""

    name: str
    args: list[Node]

    def children(self) -> tuple[Node, ...]:
        return tuple(self.args)


@dataclass(slots=True, eq=False)
class ListNode(Node):
    """``[items...]``, the right side of ``in``."""

    items: list[Node]

    def children(self) -> tuple[Node, ...]:
        return tuple(self.items)


@dataclass(slots=True, eq=False)
class Unary(Node):
    """``not x``, ``-x`` or ``+x``."""

    op: str
    x: Node

    def children(self) -> tuple[Node, ...]:
        return (self.x,)


@dataclass(slots=True, eq=False)
class Binary(Node):
    """``a op b``: a comparison (:data:`COMPARE_OPS`), ``in``/``not in``, or arithmetic."""

    op: str
    a: Node
    b: Node

    def children(self) -> tuple[Node, ...]:
        return (self.a, self.b)


@dataclass(slots=True, eq=False)
class BoolOp(Node):
    """``and``/``or`` over two or more items (a chain is one node, so it is not a deep tree)."""

    op: str
    items: list[Node]

    def children(self) -> tuple[Node, ...]:
        return tuple(self.items)
