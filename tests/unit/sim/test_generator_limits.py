"""The generator on configurations at its edges (found in review).

Before: a user attacked by account takeover from every attacker city (one user, attacks only, a long run)
ended the run with IndexError ('Cannot choose from an empty sequence'); an infinite rate drew gaps of 0, so
event time never moved and the heap of pending events grew without end; an infinite duration failed with
OverflowError when the window's end was rounded.
"""

from __future__ import annotations

import math

import pytest

from riskctl.sim.generator import ATTACKER_CITIES, SimConfig, Simulator, generate


def test_a_victim_taken_over_from_every_attacker_city_ends_the_run_normally() -> None:
    config = SimConfig(
        users=1, rate=0.1, duration_s=20_000, attack_fraction=1.0, attacks=("account_takeover",), seed=3
    )
    events, attacks = generate(config)
    takeovers_of_first = [a for a in attacks.values() if a["user_id"] == "u3-000000"]
    assert len(takeovers_of_first) == len(ATTACKER_CITIES)  # then the user is not taken over again
    assert events and all(e["ts"] >= config.start_ts for e in events)
    # every labelled attack has its events, and their ids are numbered without a gap
    assert sorted(attacks) == [f"a3-{n:05d}" for n in range(1, len(attacks) + 1)]


@pytest.mark.parametrize(
    "bad", [{"rate": math.inf}, {"duration_s": math.inf}, {"rate": math.nan}, {"duration_s": -1.0}]
)
def test_an_infinite_or_nan_rate_or_duration_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        Simulator(SimConfig(**bad))  # type: ignore[arg-type]
