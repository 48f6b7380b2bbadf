"""Summary statistics shared by the CLI (``decisions stats``, the demo's summary) and the benchmarks.

One definition of a percentile for the whole project, so that a p99 printed by ``riskctl decisions stats``
and a p99 in ``bench/results`` mean the same thing. Standard library only: the core imports no framework.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import TypeVar

N = TypeVar("N", int, float)


def percentile(values: Iterable[N], q: float) -> N | None:
    """The nearest-rank ``q``-th percentile of ``values`` (in any order): the smallest value with at least
    ``q`` percent of the values at or below it, or None when there are no values.

    Nearest rank returns one of the values, never an interpolation, so a latency percentile is a latency
    that was measured. The rank is ``ceil(q / 100 * n)``, at least 1: p99 of 1..100 is 99 (not the
    maximum), p50 of 1..10 is 5, p0 is the minimum and p100 the maximum. ``q`` is read as the decimal the
    caller wrote (99.9 is 999/1000, not the nearest binary float), so that ``q * n`` lands exactly on a whole
    rank when it should.
    """
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 100:
        msg = f"percentile q: {q!r} is not a number from 0 to 100"
        raise ValueError(msg)
    ordered = sorted(values)
    if not ordered:
        return None
    rank = math.ceil(Fraction(str(q)) * len(ordered) / 100)
    return ordered[max(1, rank) - 1]
