"""Delivered ids (bounded) and the offsets that may be committed."""

from __future__ import annotations

import pytest

from riskctl.alerts.ledger import DeliveredIds, OffsetLedger


def test_delivered_ids_forget_the_oldest_beyond_their_size() -> None:
    ids = DeliveredIds(3)
    for k in ("a", "b", "c", "d"):
        ids.add(("hook", k))
    assert ("hook", "a") not in ids and ("hook", "d") in ids and len(ids) == 3
    ids.add(("hook", "b"))  # seen again: becomes the newest
    ids.add(("hook", "e"))
    assert ("hook", "b") in ids and ("hook", "c") not in ids
    with pytest.raises(ValueError, match="at least 1"):
        DeliveredIds(0)


def test_only_the_finished_prefix_of_a_partition_is_committable() -> None:
    ledger = OffsetLedger()
    for off in (10, 11, 12):
        ledger.take("p0", off)
    ledger.take("p1", 5)
    ledger.finish("p0", 11)
    ledger.finish("p1", 5)
    assert ledger.committable() == {"p1": 6}  # p0: offset 10 is still in flight
    assert ledger.in_flight() == 2
    ledger.finish("p0", 10)
    assert ledger.committable() == {"p0": 12}
    assert ledger.committable() == {}  # nothing moved
    ledger.finish("p0", 12)
    assert ledger.committable() == {"p0": 13}
    assert ledger.in_flight() == 0


def test_a_revoked_partition_is_forgotten_and_late_finishes_are_ignored() -> None:
    ledger = OffsetLedger()
    ledger.take("p", 1)
    ledger.take("p", 2)
    assert ledger.finish("p", 1)
    ledger.forget("p")
    assert ledger.in_flight() == 0 and ledger.committable() == {}
    assert not ledger.finish("p", 2)  # a worker finishing after the revocation: nothing to commit
    assert ledger.committable() == {}
    ledger.take("p", 2)  # assigned again: read again from the committed offset
    assert ledger.finish("p", 2) and ledger.committable() == {"p": 3}
