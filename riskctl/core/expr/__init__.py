"""A small, safe expression language for rule conditions, compiled once into nested Python closures.

The language itself is documented, not here: docs/engine.md ("Conditions": syntax and semantics) and
docs/rules.md ("Conditions" with runnable examples, "Limits").

Why not ``eval`` or a CEL library: conditions come from users (rule files, a MySQL table); Python ``eval`` of
them would be remote code execution, and closures evaluate faster than an interpreter walking a tree, which
matters because every condition runs for every event. The text is tokenized (:mod:`.lexer`), parsed by
recursive descent into a tiny syntax tree (:mod:`.parser`, :mod:`.nodes`), names are resolved against the rule
(features, pattern steps), constants are folded, and every node becomes a closure ``fn(event, ctx)``
(:mod:`.compiler`, :mod:`.operators`, :mod:`.functions`). Nothing is ever looked up with ``getattr``: field
access is ``Mapping.get``.
"""

from __future__ import annotations

from riskctl.core.expr.compiler import (
    FEATURES_FIELD,
    CompiledExpression,
    compile_condition,
    compile_filter,
    compile_step_condition,
)
from riskctl.core.expr.compiler import (
    _rebuild as _rebuild,  # pickles made before the package split refer to riskctl.core.expr._rebuild
)
from riskctl.core.expr.functions import AGGREGATE_FUNCTIONS, FUNCTIONS, SCALAR_FUNCTIONS
from riskctl.core.expr.lexer import DURATION_UNITS, KEYWORDS, duration_ms
from riskctl.core.expr.limits import (
    MAX_DEGREE,
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_HEIGHT,
    MAX_LENGTH,
    MAX_NODES,
    MAX_NUMBER,
    MAX_RESULT_BITS,
    MAX_STRING,
)
from riskctl.core.expr.parser import expression_cost, parse

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "DURATION_UNITS",
    "FEATURES_FIELD",
    "FUNCTIONS",
    "KEYWORDS",
    "MAX_DEGREE",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_HEIGHT",
    "MAX_LENGTH",
    "MAX_NODES",
    "MAX_NUMBER",
    "MAX_RESULT_BITS",
    "MAX_STRING",
    "SCALAR_FUNCTIONS",
    "CompiledExpression",
    "compile_condition",
    "compile_filter",
    "compile_step_condition",
    "duration_ms",
    "expression_cost",
    "parse",
]
