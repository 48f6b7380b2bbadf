"""The one percentile of the project (riskctl.core.stats): nearest rank, the definition every figure uses.

Two of the three functions it replaced returned the maximum for p99 of 100 values and the 6th value for p50
of 10 values (rounding ``q / 100 * n + 0.5`` instead of taking its ceiling): the first two tests are named
for that.
"""

from __future__ import annotations

import random

import pytest

from riskctl.core.stats import percentile


def test_p99_of_100_values_is_not_the_maximum() -> None:
    assert percentile(list(range(1, 101)), 99) == 99


def test_p50_of_10_values_is_the_5th() -> None:
    assert percentile(list(range(1, 11)), 50) == 5


def test_empty_input_has_no_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile(iter([]), 99) is None


@pytest.mark.parametrize("q", [0, 0.1, 50, 99, 99.9, 100])
def test_one_value_is_every_percentile(q: float) -> None:
    assert percentile([7], q) == 7


def test_p0_is_the_minimum_and_p100_the_maximum() -> None:
    values = [4, 9, 1, 7]
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 9


def test_unsorted_input_is_sorted_and_left_as_it_was() -> None:
    values = [30, 10, 50, 20, 40]
    assert percentile(values, 40) == 20
    assert percentile(values, 41) == 30
    assert values == [30, 10, 50, 20, 40]
    assert percentile((v for v in values), 60) == 30  # any iterable


def test_floats_and_fractional_q_land_on_whole_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99.9) == 100.0
    thousand = [v / 10 for v in range(1, 1001)]
    assert percentile(thousand, 99.9) == 99.9  # 99.9 * 1000 / 100 is rank 999 exactly, not 1000
    assert percentile([0.5, 0.25, 0.125], 50) == 0.25


def test_the_result_is_one_of_the_values_never_an_interpolation() -> None:
    assert percentile([10, 20], 50) == 10
    assert percentile([10, 20], 51) == 20


@pytest.mark.parametrize("q", [-1, 100.5, float("nan"), "99", True])
def test_q_outside_0_to_100_is_refused_with_the_value(q: object) -> None:
    with pytest.raises(ValueError, match=r"percentile q: .* is not a number from 0 to 100"):
        percentile([1, 2, 3], q)  # type: ignore[arg-type]


def test_matches_the_definition_on_random_samples() -> None:
    """Brute force: the smallest value v with at least q% of the values <= v."""
    rng = random.Random(12)
    for _ in range(300):
        values = [rng.randint(0, 50) for _ in range(rng.randint(1, 40))]
        q = rng.choice([0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100, rng.uniform(0, 100)])
        expected = min(v for v in values if sum(1 for w in values if w <= v) * 100 >= q * len(values))
        assert percentile(values, q) == expected, (values, q)
