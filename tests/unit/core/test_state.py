"""InMemoryStore: keys created on use, dropped when empty, and their pickled sizes."""

from __future__ import annotations

import pickle

from riskctl.core.state import InMemoryStore


def test_pickled_sizes_count_only_keys_with_state() -> None:
    store = InMemoryStore()
    store.for_key("a").put("count", [1, 2, 3])
    store.for_key("b")  # created, never written
    store.for_key("c").put("seen", {"dev-1": (1, 2)})
    assert sorted(store.pickled_sizes()) == sorted(
        len(pickle.dumps(d, protocol=5)) for d in ({"count": [1, 2, 3]}, {"seen": {"dev-1": (1, 2)}})
    )
    store.drop_if_empty("b")
    assert "b" not in store and len(store) == 2
