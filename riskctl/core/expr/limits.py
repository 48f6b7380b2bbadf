"""The limits of the expression language: what a rule condition may cost, checked when it is compiled.

Each limit is refused at load time with the column (see :mod:`riskctl.core.expr.lexer` and
:mod:`riskctl.core.expr.parser`), or, for the result limits, makes a computed value ``null`` at evaluation,
so that no user-written condition can make the engine build huge numbers or strings.
"""

from __future__ import annotations

MAX_LENGTH = 4000  # characters of one expression
MAX_DEPTH = 32  # nesting of parentheses / brackets / calls / unary operators
MAX_HEIGHT = 64  # height of the syntax tree (long operator chains)
MAX_NODES = 400  # elements (names, constants, operators, calls) of one expression
MAX_NUMBER = 10**15  # the largest number literal or duration (ms); sums and averages stay exact below it
MAX_EXPONENT = 16  # the largest constant exponent of ``**``
#: the highest power of its inputs an expression may compute: nested exponents and multiplied factors
#: multiply (``(x ** 4) ** 4`` is 16, ``x * x * y`` is 3); ``((x ** 16) ** 16) ** 16`` would build numbers of
#: billions of digits
MAX_DEGREE = 32
#: an arithmetic result beyond the float range (+-1.8e308, just under 2**1024), infinite or NaN is ``null``;
#: ``*`` and ``**`` check *before* they compute, so no evaluation builds an integer larger than this
MAX_RESULT_BITS = 1024
#: the longest text ``+`` builds (characters); a longer result is ``null``
MAX_STRING = 65_536
