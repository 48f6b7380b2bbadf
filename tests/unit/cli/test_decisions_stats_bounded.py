"""``riskctl decisions stats`` keeps bounded memory whatever the window holds (found in review).

Before: summarize kept every latency in a list (about 36 bytes each: 100 million decisions in a window,
3.6 GB) and counted every action and rule id the records named (anyone who can write the decisions topic
can name millions). Now at most MAX_LATENCIES latencies are kept (8 bytes each; past it a uniform sample
gives the percentiles, count and max stay exact) and MAX_NAMES names per count, later ones under (other).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from riskctl.cli import decisions


def _records(n: int, *, rule_ids: int = 1) -> Iterator[tuple[dict[str, Any], int]]:
    for i in range(n):
        rules = [{"id": f"r{i % rule_ids}"}]
        yield {"kind": "decision", "action": "PASS", "ts": 1_000_000, "rules": rules}, 1_000_000 + 1000 + i


def test_latencies_kept_are_bounded_and_the_percentiles_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decisions, "MAX_LATENCIES", 1_000, raising=False)
    tracemalloc.start()
    try:
        result = decisions.summarize(_records(200_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"summarize held {peak:,} bytes for 200,000 decisions"  # old: ~7.6 MB
    lat = result["latency_ms"]
    assert lat["count"] == 200_000 and lat["max"] == 1000 + 199_999 and lat.get("sampled") is True
    assert 90_000 < lat["p50"] - 1000 < 110_000  # a uniform sample's median: near the middle


def test_distinct_names_counted_are_bounded() -> None:
    result = decisions.summarize(_records(12_000, rule_ids=12_000))
    assert len(result["rules"]) == decisions.MAX_NAMES + 1
    assert result["rules"][decisions.OTHER] == 12_000 - decisions.MAX_NAMES
    assert sum(result["rules"].values()) == 12_000


def test_a_window_within_the_bound_is_exact_and_a_ts_beyond_64_bits_is_no_latency() -> None:
    records = [({"action": "REJECT", "ts": 10}, 15), ({"action": "PASS", "ts": 2**70}, 15)]
    lat = decisions.summarize(iter(records))["latency_ms"]
    assert lat == {"count": 1, "p50": 5, "p90": 5, "p99": 5, "max": 5}
