"""tests.helpers.free_port: the ports it hands out are free, distinct, and out of the ephemeral range."""

from __future__ import annotations

import socket

import pytest

from tests import helpers
from tests.helpers import _ephemeral_low, free_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(20_000 <= p < _ephemeral_low() for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken, taken, 0])  # the listener's port twice, then any (0: the OS picks)
        monkeypatch.setattr(helpers.random, "randrange", lambda lo, hi: next(picks))
        port = helpers.free_port()
        assert port != taken and port != 0
