"""Reply routing: how the decision of an event sent by ``riskctl serve`` finds its way back to that instance.

An API instance adds ``reply_to`` to the events it produces: a short key chosen so that Kafka's default
partitioner (murmur2 of the key, as the job's replies sink uses it) puts a record with that key into the
partition of the replies topic that the instance reads. The job writes each decision as usual, and the
decision of an event with a valid ``reply_to`` also to the replies topic, keyed by that value.

Events come from anyone who can write the events topic, so the field is hostile until checked: only a
string of at most :data:`MAX_REPLY_KEY` characters from ``[A-Za-z0-9._:-]`` routes a reply; anything else is
ignored (the event is decided and written as every other). The key only chooses a partition of the one
configured replies topic: it can never name a topic, so it cannot make the job write anywhere else or create
topics. At worst a hostile event doubles its own decision's writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: the event field that carries the reply key
REPLY_FIELD = "reply_to"
MAX_REPLY_KEY = 64
_KEY = re.compile(r"[A-Za-z0-9._:-]{1,%d}" % MAX_REPLY_KEY)


def reply_key(event: Mapping[str, Any]) -> str | None:
    """The event's reply key when it is a valid one, else None (no reply is written)."""
    value = event.get(REPLY_FIELD)
    if type(value) is str and _KEY.fullmatch(value):
        return value
    return None


def valid_reply_key(value: str) -> bool:
    """True when ``value`` would route a reply (see :func:`reply_key`)."""
    return bool(_KEY.fullmatch(value))
