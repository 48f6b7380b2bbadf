"""Alert ids: within MAX_ALERT_ID_CHARS for any match, the same for the same match (engine or replay),
different for different matches, and unchanged for the ids that were within the bound before it existed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from riskctl.alerts.model import MAX_KEY_CHARS, id_key
from riskctl.cli.main import cli
from riskctl.core.decisions import MAX_ALERT_ID_CHARS, Alert, alert_id
from riskctl.core.door import decode
from riskctl.core.engine import Engine
from riskctl.core.events import MAX_ID_LENGTH, parse_event
from riskctl.core.pattern_spec import MAX_STEPS, MAX_TIMES
from riskctl.core.rule_document import MAX_VERSION
from riskctl.core.rules import load_rules_text
from riskctl.core.runner import LocalRunner

LOGINS = 40
#: 40 logins then no 2FA within 5 minutes: a timer alert whose match holds 40 event ids
QUIET = (
    "id: quiet_after_logins\naction: REVIEW\nsequence:\n  within: 5m\n  steps:\n"
    f'    - name: logins\n      when: event.type == "login"\n      times: {LOGINS}\n'
    '    - name: second_factor\n      when: event.type == "2fa"\n      absent: true\n'
)
VPN = 'id: vpn_login\naction: REVIEW\nalert: true\nwhen: contains(event.tags, "vpn")\n'


def _login(event_id: str, ts: int) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": "u", "type": "login", "ts": ts, "tags": ["vpn"]}


def _long_ids(tail: str) -> list[str]:
    """``LOGINS`` event ids at the door's limit; the first is the same whatever ``tail``."""
    return ["first".ljust(MAX_ID_LENGTH, "x")] + [
        f"{tail}{i}".ljust(MAX_ID_LENGTH, "x") for i in range(1, LOGINS)
    ]


def _alerts(rule: str, event_ids: list[str]) -> list[Alert]:
    """The alerts of a fresh engine for one login per id (each accepted at the job's door first)."""
    runner = LocalRunner(Engine(load_rules_text(rule), lateness=0))
    out: list[Any] = []
    for ts, event_id in enumerate(event_ids, 1):
        out += runner.feed(parse_event(orjson.dumps(decode(orjson.dumps(_login(event_id, ts))))))
    out += runner.finish()
    return [r for r in out if isinstance(r, Alert)]


def _replayed_alert_ids(tmp_path: Path, rule: str, event_ids: list[str]) -> list[str]:
    (tmp_path / "r.yaml").write_text(rule)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(_login(e, ts)) + "\n" for ts, e in enumerate(event_ids, 1)))
    args = ["replay", "--rules", str(tmp_path / "r.yaml"), str(events), "--lateness", "0", "--now", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [r["alert_id"] for r in records if r["kind"] == "alert"]


def test_a_sequence_alert_over_many_long_event_ids_is_short_and_names_its_match() -> None:
    ids = _long_ids("a")
    (a,) = _alerts(QUIET, ids)
    whole = "quiet_after_logins:1:timer:" + ":".join(ids)  # the id before the bound: 10,307 characters
    digest = hashlib.sha256(whole.encode()).hexdigest()[:32]
    assert a.alert_id == f"quiet_after_logins:1:timer:{ids[0][:64]}:{LOGINS}:{digest}"
    assert len(a.alert_id) <= MAX_ALERT_ID_CHARS
    assert a.event_id == ids[0]  # the record still names the whole first event id
    # the dispatcher keys it by itself and its user, not by a hash
    assert id_key(a.user_id, a.alert_id) == f"{len(a.user_id)}:{a.user_id}:{a.alert_id}"


def test_the_same_match_gets_the_same_id_from_two_engines_and_a_replay(tmp_path: Path) -> None:
    ids = _long_ids("a")
    (one,) = _alerts(QUIET, ids)
    (two,) = _alerts(QUIET, ids)
    assert one.alert_id == two.alert_id == _replayed_alert_ids(tmp_path, QUIET, ids)[0]
    assert len(one.alert_id) <= MAX_ALERT_ID_CHARS


def test_two_matches_that_share_their_first_event_get_different_ids() -> None:
    first, second = _long_ids("a"), _long_ids("b")
    assert first[0] == second[0] and first[1:] != second[1:]
    (a,) = _alerts(QUIET, first)
    (b,) = _alerts(QUIET, second)
    assert a.alert_id != b.alert_id
    assert len(a.alert_id) <= MAX_ALERT_ID_CHARS and len(b.alert_id) <= MAX_ALERT_ID_CHARS


def test_ids_within_the_bound_keep_their_former_form(tmp_path: Path) -> None:
    ids = [f"e{i}" for i in range(1, LOGINS + 1)]
    (a,) = _alerts(QUIET, ids)
    assert a.alert_id == "quiet_after_logins:1:timer:" + ":".join(ids)
    assert _replayed_alert_ids(tmp_path, QUIET, ids) == [a.alert_id]
    # one event at the door's limit: a rule_alert id of 284 characters, as before
    long_id = "e" * MAX_ID_LENGTH
    (b,) = _alerts(VPN, [long_id])
    assert b.alert_id == f"vpn_login:1:rule_alert:{long_id}"


def test_the_longest_ids_are_within_the_bound() -> None:
    rule_id, event_id = "r" * 64, "e" * MAX_ID_LENGTH
    # the longest id of one event keeps its form: no late_threshold or rule_alert id changed
    one = alert_id(rule_id, MAX_VERSION, "late_threshold", [event_id])
    assert one == f"{rule_id}:{MAX_VERSION}:late_threshold:{event_id}"
    assert len(one) <= MAX_ALERT_ID_CHARS
    # the most events a match can hold
    many = alert_id(rule_id, MAX_VERSION, "late_threshold", [event_id] * (MAX_STEPS * MAX_TIMES))
    assert len(many) <= MAX_ALERT_ID_CHARS
    # every id the engine writes is the dispatcher's deduplication key as it is
    assert MAX_ALERT_ID_CHARS <= MAX_KEY_CHARS
