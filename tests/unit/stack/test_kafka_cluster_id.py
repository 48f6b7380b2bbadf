"""The local Kafka's KRaft cluster id never starts with "-" (the storage tool would take it for an option)."""

from __future__ import annotations

import base64
import uuid

from riskctl.stack.services import kafka_cluster_id


def test_an_id_starting_with_a_dash_is_drawn_again() -> None:
    dash = uuid.UUID(bytes=b"\xf8" + bytes(15))  # 0xf8 >> 2 = 62: "-" in URL-safe base64
    assert base64.urlsafe_b64encode(dash.bytes).decode().startswith("-")
    drawn = iter([dash, dash, uuid.UUID(int=7)])
    cluster_id = kafka_cluster_id(lambda: next(drawn))
    assert cluster_id == base64.urlsafe_b64encode(uuid.UUID(int=7).bytes).decode().rstrip("=")
    assert next(drawn, None) is None  # the third draw was the one kept


def test_ids_are_22_url_safe_characters() -> None:
    for _ in range(2_000):
        cluster_id = kafka_cluster_id()
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
