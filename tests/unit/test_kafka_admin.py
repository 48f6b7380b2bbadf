"""ensure_topics returns once the broker lists what it created (a client asking at once was told the topic
did not exist: `riskctl demo` on a broker just started failed with exit 3)."""

from __future__ import annotations

from typing import Any

import pytest

from riskctl import kafka_admin


class LaggingAdmin:
    """A KafkaAdminClient whose broker lists a created topic only from the third listing after it."""

    def __init__(self, **_: Any) -> None:
        self.topics: set[str] = {"old"}
        self.created: list[str] = []
        self.listings_after_create = 0
        self.closed = False

    def list_topics(self) -> list[str]:
        if self.created:
            self.listings_after_create += 1
            if self.listings_after_create >= 3:
                self.topics.update(self.created)
        return sorted(self.topics)

    def create_topics(self, new: list[Any]) -> None:
        self.created = [t.name for t in new]

    def close(self) -> None:
        self.closed = True


def test_created_topics_are_listed_when_ensure_topics_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = LaggingAdmin()
    monkeypatch.setattr("kafka.KafkaAdminClient", lambda **kw: admin)
    created = kafka_admin.ensure_topics("127.0.0.1:1", ["old", "new-a", "new-b"])
    assert created == ["new-a", "new-b"]
    assert {"new-a", "new-b"} <= admin.topics, "returned before the broker listed them"
    assert admin.closed


def test_a_broker_that_never_lists_them_costs_a_bounded_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = LaggingAdmin()
    admin.list_topics = lambda: ["old"]  # type: ignore[method-assign]
    monkeypatch.setattr("kafka.KafkaAdminClient", lambda **kw: admin)
    monkeypatch.setattr(kafka_admin, "VISIBLE_WAIT_S", 0.3)
    assert kafka_admin.ensure_topics("127.0.0.1:1", ["new"]) == ["new"]
