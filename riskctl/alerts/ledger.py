"""Bookkeeping for at-least-once delivery without duplicates.

- :class:`DeliveredIds`: the (channel, deduplication key) pairs already delivered or dead-lettered, at most
  ``size`` of them (the oldest forgotten first); the key is the user id and the item id
  (:func:`riskctl.alerts.model.id_key`: an id is unique only within its user). An alert the job wrote twice
  (its sink is at-least-once) or that Kafka redelivers after a rebalance is sent once per channel while its
  key is remembered.
- :class:`OffsetLedger`: per partition, the offsets taken and the ones finished (every channel delivered or
  dead-lettered); :meth:`committable` gives, per partition, the offset after the longest finished prefix,
  which is what may be committed. An offset is never committed while an earlier one is still in flight, so
  a crash replays (and the ids above deduplicate) instead of losing an alert.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class DeliveredIds:
    """A bounded set of delivered keys (insertion order: the oldest is forgotten first)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"size must be at least 1, got {size}"
            raise ValueError(msg)
        self.size = size
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)


class OffsetLedger:
    """Offsets in flight per partition key (e.g. ``(topic, partition)``)."""

    def __init__(self) -> None:
        self._pending: dict[Hashable, OrderedDict[int, bool]] = {}
        self._committed: dict[Hashable, int] = {}

    def take(self, partition: Hashable, offset: int) -> None:
        """An offset was read; it is in flight until :meth:`finish`."""
        self._pending.setdefault(partition, OrderedDict())[offset] = False

    def finish(self, partition: Hashable, offset: int) -> bool:
        """Every channel of this record is done (delivered, deduplicated, skipped or dead-lettered). False
        when the offset is not in flight: its partition was revoked meanwhile (the new owner reads it again).
        """
        pending = self._pending.get(partition)
        if pending is None or offset not in pending:
            return False
        pending[offset] = True
        return True

    def in_flight(self) -> int:
        return sum(1 for p in self._pending.values() for done in p.values() if not done)

    def committable(self) -> dict[Hashable, int]:
        """Per partition, the next offset to commit (last finished offset of the finished prefix + 1), only
        for partitions where it moved since the last call.
        """
        out: dict[Hashable, int] = {}
        for partition, pending in self._pending.items():
            last = None
            while pending:
                offset, done = next(iter(pending.items()))
                if not done:
                    break
                pending.popitem(last=False)
                last = offset
            if last is not None and self._committed.get(partition) != last + 1:
                self._committed[partition] = last + 1
                out[partition] = last + 1
        return out

    def forget(self, partition: Hashable) -> None:
        """A partition was revoked: its offsets will be read again by whoever gets it."""
        self._pending.pop(partition, None)
        self._committed.pop(partition, None)
