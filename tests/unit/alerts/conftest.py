from __future__ import annotations

from typing import Any

import orjson
import pytest


def alert_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "alert",
        "alert_id": "transfer_velocity:3:rule_alert:e1",
        "user_id": "u1",
        "reason": "rule_alert",
        "ts": 1_700_000_000_000,
        "rule": {
            "id": "transfer_velocity",
            "version": 3,
            "action": "REVIEW",
            "evidence": {"features": {"sum_5m": 61000}, "fields": {"amount": 9000}},
        },
        "shadow": False,
        "event_id": "e1",
        "trigger_event_id": "e1",
        "ruleset_version": "rs-1",
    }
    doc.update(over)
    return doc


def raw(doc: Any) -> bytes:
    return orjson.dumps(doc)


@pytest.fixture
def env() -> dict[str, str]:
    return {
        "RISKCTL_DINGTALK_URL": "https://oapi.dingtalk.com/robot/send?access_token=tok",
        "RISKCTL_DINGTALK_SECRET": "SECtest",
        "RISKCTL_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
        "RISKCTL_CASES_TOKEN": "case-token",
        "RISKCTL_SMTP_PASSWORD": "smtp-pw",
    }
