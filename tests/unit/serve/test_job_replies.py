"""The job's side of reply routing: the decide operator adds a REPLY row only for a valid reply_to.

``RiskFunction._decide`` runs with stand-in state and context; tests/integration/test_serve.py runs the real
job, whose replies sink writes these rows keyed (so partitioned) by the reply key.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from riskctl.core.engine import Engine
from riskctl.core.rules import RuleSet
from riskctl.flink.risk_function import DECISION, REPLY, FlinkKeyedState, RiskFunction


class FakeValue:
    def __init__(self) -> None:
        self.v: Any = None

    def value(self) -> Any:
        return self.v

    def update(self, v: Any) -> None:
        self.v = v

    def clear(self) -> None:
        self.v = None


class FakeTimers:
    def register_event_time_timer(self, ts: int) -> None:
        pass


class FakeCtx:
    def get_current_key(self) -> str:
        return "u1"

    def timer_service(self) -> FakeTimers:
        return FakeTimers()


def decide(event: dict[str, Any], replies: bool = True) -> list[Any]:
    fn = RiskFunction(lateness_ms=0, state_ttl_ms=60_000, rules_wait_ms=0, replies=replies)
    fn.engine = Engine(RuleSet(), lateness=0, state_ttl=60_000)
    fn.state = FlinkKeyedState(FakeValue())
    return list(fn._decide(event, (b"", "t", 0, 0), FakeCtx(), "u1", 2_000))


def ev(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e1", "user_id": "u1", "type": "login", "ts": 1000, **fields}


def test_valid_reply_to_adds_a_reply_row_keyed_by_it_with_the_same_decision() -> None:
    rows = decide(ev(reply_to="api-a:17"))
    assert [r[0] for r in rows] == [DECISION, REPLY]
    assert rows[0][1] == "e1" and rows[1][1] == "api-a:17"
    assert rows[0][2] == rows[1][2] and json.loads(rows[1][2])["event_id"] == "e1"


@pytest.mark.parametrize("value", [None, 5, "", "x" * 65, "riskctl.events/../x", "a b", "\u00e9", ["k"]])
def test_hostile_or_missing_reply_to_only_decides(value: Any) -> None:
    rows = decide(ev(reply_to=value))
    assert [r[0] for r in rows] == [DECISION]


def test_no_reply_rows_when_the_job_has_no_replies_topic() -> None:
    assert [r[0] for r in decide(ev(reply_to="api-a:17"), replies=False)] == [DECISION]
