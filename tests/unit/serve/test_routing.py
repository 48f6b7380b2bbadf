"""Reply routing: the key an instance puts in reply_to lands in its partition; hostile keys route nothing."""

from __future__ import annotations

import pytest
from kafka.partitioner.default import DefaultPartitioner

from riskctl.core.reply import MAX_REPLY_KEY, reply_key
from riskctl.errors import ConfigError
from riskctl.serve.kafka_bus import default_partition, instance_name, kafka_partition, reply_key_for


@pytest.mark.parametrize("partitions", [1, 2, 3, 16, 97])
def test_reply_key_lands_in_the_chosen_partition_by_kafkas_default_partitioner(partitions: int) -> None:
    all_partitions = list(range(partitions))
    for partition in all_partitions:
        key = reply_key_for("api-7", partition, partitions)
        assert key.startswith("api-7:") and len(key) <= MAX_REPLY_KEY
        # kafka-python's DefaultPartitioner is the Java client's (murmur2, positive, modulo)
        assert DefaultPartitioner()(key.encode(), all_partitions, all_partitions) == partition
        assert kafka_partition(key.encode(), partitions) == partition
        assert reply_key({"reply_to": key}) == key


def test_two_instances_get_different_keys_for_different_partitions() -> None:
    a, b = reply_key_for("a", 0, 16), reply_key_for("b", 1, 16)
    assert a != b and kafka_partition(a.encode(), 16) != kafka_partition(b.encode(), 16)


def test_partition_outside_the_topic_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reply_partition"):
        reply_key_for("a", 16, 16)
    assert 0 <= default_partition("host-123", 16) < 16


@pytest.mark.parametrize(
    "value",
    [None, 7, True, "", "x" * (MAX_REPLY_KEY + 1), "a/b", "../etc", "a b", "topic\n", "é", ["a"], {"t": "x"}],
)
def test_hostile_reply_to_routes_nothing(value: object) -> None:
    assert reply_key({"reply_to": value}) is None


def test_instance_names_are_made_safe() -> None:
    assert instance_name("host name/1") == "host-name-1"
    assert len(instance_name("x" * 100)) == 40
    with pytest.raises(ConfigError):
        instance_name("")
