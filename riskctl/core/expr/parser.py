"""The recursive-descent parser: tokens in, a syntax tree (:mod:`riskctl.core.expr.nodes`) out.

Precedence, lowest first: ``or``, ``and``, ``not``, one comparison (``==`` ... ``>=``, ``in``, ``not in``;
chains like ``a < b < c`` are refused), ``+ -``, ``* / %``, unary ``- +``, ``**`` (right-associative), then
``.field`` and calls. The parser counts nodes and nesting as it goes, so a hostile text is refused at the
column where it crosses :data:`~riskctl.core.expr.limits.MAX_NODES` or ``MAX_DEPTH``, before the tree grows.
"""

from __future__ import annotations

from collections.abc import Callable

from riskctl.core.errors import ExpressionError, suggest
from riskctl.core.expr.functions import LINEAR_AGGREGATES
from riskctl.core.expr.lexer import KEYWORDS, Token, expr_error, tokenize
from riskctl.core.expr.limits import MAX_DEPTH, MAX_LENGTH, MAX_NODES
from riskctl.core.expr.nodes import (
    COMPARE_OPS,
    Binary,
    BoolOp,
    Call,
    Const,
    ListNode,
    Member,
    Name,
    Node,
    Unary,
)


class Parser:
    """One parse of one token list: a method per precedence level, each returning a node."""

    def __init__(self, tokens: list[Token]) -> None:
        self.toks = tokens
        self.i = 0
        self.depth = 0
        self.nodes = 0

    # helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at_op(self, *ops: str) -> bool:
        tok = self.toks[self.i]
        return tok.kind == "op" and tok.text in ops

    def at_kw(self, kw: str) -> bool:
        tok = self.toks[self.i]
        return tok.kind == "name" and tok.text == kw

    def expect_op(self, op: str, what: str) -> Token:
        """Consume the operator ``op`` or fail with what it was expected for and what was found."""
        tok = self.toks[self.i]
        if tok.kind != "op" or tok.text != op:
            found = "the end of the expression" if tok.kind == "eof" else repr(tok.text)
            msg = f"expected {op!r} {what}, found {found}"
            raise expr_error(msg, tok.pos)
        self.i += 1
        return tok

    def count(self, node: Node) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            msg = f"expression is too long (more than {MAX_NODES} elements)"
            raise expr_error(msg, node.pos)
        return node

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            msg = f"expression is nested too deeply (more than {MAX_DEPTH} levels)"
            raise expr_error(msg, pos)

    # grammar
    def parse(self) -> Node:
        """The whole expression; anything left after it is an error (often a missing ``and``/``or``)."""
        node = self.or_()
        tok = self.peek()
        if tok.kind != "eof":
            msg = f"unexpected {tok.text!r} after a complete expression"
            hint = None
            if tok.kind == "name":
                hint = suggest(tok.text, KEYWORDS)
                msg += " (missing 'and'/'or'?)"
            raise expr_error(msg, tok.pos, hint)
        return node

    def or_(self) -> Node:
        return self._bool_chain("or", self.and_)

    def and_(self) -> Node:
        return self._bool_chain("and", self.not_)

    def _bool_chain(self, keyword: str, operand: Callable[[], Node]) -> Node:
        """``operand (keyword operand)*`` as one flat :class:`BoolOp` (a long chain is not a deep tree)."""
        first = operand()
        items = [first]
        while self.at_kw(keyword):
            self.next()
            items.append(operand())
        return first if len(items) == 1 else self.count(BoolOp(first.pos, keyword, items))

    def not_(self) -> Node:
        if self.at_kw("not"):
            tok = self.next()
            self.enter(tok.pos)
            node = self.count(Unary(tok.pos, "not", self.not_()))
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        """At most one comparison: ``a < b < c`` is refused rather than read as Python or C would."""
        left = self.additive()
        op = self._compare_op()
        if op is None:
            return left
        right = self.additive()
        node = self.count(Binary(left.pos, op, left, right))
        if self._compare_op() is not None:
            msg = "chained comparisons are not allowed: combine them with 'and'"
            raise expr_error(msg, self.toks[self.i - 1].pos)
        return node

    def _compare_op(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in COMPARE_OPS:
            self.next()
            return tok.text
        if tok.kind == "name" and tok.text == "in":
            self.next()
            return "in"
        if (
            tok.kind == "name"
            and tok.text == "not"
            and self.peek(1).kind == "name"
            and self.peek(1).text == "in"
        ):
            self.next()
            self.next()
            return "not in"
        return None

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.at_op("+", "-"):
            tok = self.next()
            node = self.count(Binary(tok.pos, tok.text, node, self.multiplicative()))
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.at_op("*", "/", "%"):
            tok = self.next()
            node = self.count(Binary(tok.pos, tok.text, node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.at_op("-", "+"):
            tok = self.next()
            self.enter(tok.pos)
            node = self.count(Unary(tok.pos, tok.text, self.unary()))
            self.depth -= 1
            return node
        return self.power()

    def power(self) -> Node:
        base = self.postfix()
        if self.at_op("**"):
            tok = self.next()
            self.enter(tok.pos)
            exponent = self.unary()
            self.depth -= 1
            return self.count(Binary(tok.pos, "**", base, exponent))
        return base

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            if self.at_op("."):
                self.next()
                tok = self.next()
                if tok.kind != "name":
                    msg = "expected a field name after '.'"
                    raise expr_error(msg, tok.pos)
                _check_name(tok)
                node = self.count(Member(tok.pos, node, tok.text))
            elif self.at_op("("):
                if not isinstance(node, Name):
                    msg = "only named functions can be called"
                    raise expr_error(msg, self.peek().pos)
                open_tok = self.next()
                self.enter(open_tok.pos)
                args = self._items(")", "to close the function call")
                self.depth -= 1
                node = self.count(Call(node.pos, node.name, args))
            elif self.at_op("["):
                msg = "indexing with [...] is not supported; use first(...) / last(...) or a field"
                raise expr_error(msg, self.peek().pos)
            else:
                return node

    def _items(self, close: str, what: str) -> list[Node]:
        items: list[Node] = []
        if self.at_op(close):
            self.next()
            return items
        while True:
            items.append(self.or_())
            if self.at_op(","):
                self.next()
                if self.at_op(close):  # trailing comma
                    self.next()
                    return items
                continue
            self.expect_op(close, what)
            return items

    def primary(self) -> Node:
        """A literal, a name, ``( expression )`` or ``[ list ]``."""
        tok = self.next()
        if tok.kind in ("num", "str"):
            return self.count(Const(tok.pos, tok.value))
        if tok.kind == "name":
            if tok.text == "true":
                return self.count(Const(tok.pos, True))
            if tok.text == "false":
                return self.count(Const(tok.pos, False))
            if tok.text == "null":
                return self.count(Const(tok.pos, None))
            if tok.text in KEYWORDS:
                msg = f"unexpected keyword {tok.text!r}"
                raise expr_error(msg, tok.pos)
            _check_name(tok)
            return self.count(Name(tok.pos, tok.text))
        if tok.kind == "op" and tok.text == "(":
            self.enter(tok.pos)
            node = self.or_()
            self.expect_op(")", "to close '('")
            self.depth -= 1
            return node
        if tok.kind == "op" and tok.text == "[":
            self.enter(tok.pos)
            items = self._items("]", "to close the list")
            self.depth -= 1
            return self.count(ListNode(tok.pos, items))
        if tok.kind == "eof":
            msg = "unexpected end of the expression"
            raise expr_error(msg, tok.pos)
        msg = f"unexpected {tok.text!r}"
        raise expr_error(msg, tok.pos)


def _check_name(tok: Token) -> None:
    if tok.text.startswith("_"):
        msg = f"names starting with '_' are not allowed: {tok.text!r}"
        raise expr_error(msg, tok.pos)


def parse(text: str) -> Node:
    """Parse ``text`` into the (private) syntax tree; raises :class:`ExpressionError`. For tools and tests."""
    if not isinstance(text, str):
        msg = f"an expression must be a string, got {type(text).__name__}"
        raise ExpressionError(msg)
    if len(text) > MAX_LENGTH:
        msg = f"expression is too long ({len(text)} characters, limit {MAX_LENGTH})"
        raise ExpressionError(msg)
    if not text.strip():
        msg = "expression is empty"
        raise ExpressionError(msg)
    return Parser(tokenize(text)).parse()


def expression_cost(text: str) -> tuple[int, int]:
    """``(nodes, step scans)`` of an expression: its syntax-tree nodes (each evaluated at most once per
    evaluation), and how many aggregates read every event of a pattern step (``sum(s.f)``, ``avg``, ``min``,
    ``max``, ``distinct`` of one argument). Raises :class:`ExpressionError` as :func:`parse` does.
    Used to bound a sequence rule's work per event (``riskctl.core.rules``). Iterative.
    """
    todo: list[Node] = [parse(text)]
    nodes = scans = 0
    while todo:
        node = todo.pop()
        nodes += 1
        if isinstance(node, Call) and node.name in LINEAR_AGGREGATES and len(node.args) == 1:
            scans += 1
        todo.extend(node.children())
    return nodes, scans
