"""The job's rule paths never fail on a hostile rule: the broadcast side refuses it with a status, the
MySQL-side helpers pass it on, the rules-folder poller skips it.

``RiskFunction.process_broadcast_element`` runs here with a stand-in broadcast context (a dict); the job's
integration tests run the real one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyflink.common import Row

from riskctl.core.engine import Engine
from riskctl.core.rules import RuleSet
from riskctl.flink.job import PollFolder, _with_status
from riskctl.flink.risk_function import RiskFunction
from tests.helpers import HOSTILE_RULES, PatchedEngine, within

DEEP = "[" * 100_000 + "]" * 100_000


class FakeBroadcastState(dict[str, str]):
    def put(self, key: str, value: str) -> None:
        self[key] = value

    def remove(self, key: str) -> None:
        self.pop(key, None)


class FakeCtx:
    def __init__(self, state: FakeBroadcastState | None = None) -> None:
        self.state = FakeBroadcastState() if state is None else state

    def get_broadcast_state(self, descriptor: Any) -> FakeBroadcastState:
        return self.state


def function() -> RiskFunction:
    fn = RiskFunction(lateness_ms=0, state_ttl_ms=60_000, rules_wait_ms=0)
    fn.engine = Engine(RuleSet(), lateness=0, state_ttl=60_000)
    return fn


def apply(fn: RiskFunction, ctx: FakeCtx, rule_id: str, document: Any, op: str = "upsert") -> dict[str, Any]:
    (status,) = within(lambda: list(fn.process_broadcast_element(Row(op, rule_id, 1, document), ctx)))
    doc: dict[str, Any] = json.loads(status[2])
    return doc


GOOD = json.dumps({"id": "good", "action": "REVIEW", "when": "event.amount > 10"})


def test_a_rule_document_nested_100k_deep_is_refused_and_the_job_goes_on() -> None:
    fn, ctx = function(), FakeCtx()
    status = apply(fn, ctx, "deep", '{"id": "deep", "action": "PASS", "when": "true", "tags": ' + DEEP + "}")
    assert status["state"] == "refused" and status["rule_id"] == "deep"
    assert status["field"] == "document" and "nested deeper than 32 levels" in status["reason"]
    assert "deep" not in ctx.state
    assert apply(fn, ctx, "good", GOOD)["state"] == "accepted"  # the next rule still applies
    assert fn.engine is not None and [r.id for r in fn.engine.ruleset] == ["good"]


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (DEEP, "document", "nested deeper"),
        ("{" * 50_000, "document", "nested deeper"),
        ('{"id": "x", "action": "PASS", "when": "true", "action": "REJECT"}', "action", "duplicate key"),
        (
            json.dumps(
                {"action": "REJECT", "when": "((((((event.x ** 16) ** 16) ** 16) ** 16) ** 16) ** 16) > 0"}
            ),
            "when",
            "power 256",
        ),
        ('{"action": "PASS", "when": "true", "priority": NaN}', "document", "NaN"),
        (b'{"action": "PASS", "when": "\xff"}', "document", "UTF-8"),
        ("[1, 2]", "document", "must be a JSON object"),
        (None, "document", "empty"),
    ],
)
def test_hostile_documents_become_refused_statuses(document: Any, field: str, words: str) -> None:
    fn, ctx = function(), FakeCtx()
    status = apply(fn, ctx, "x", document)
    assert status["state"] == "refused" and status["field"] == field and words in status["reason"], status


def test_a_refusal_fits_the_status_table() -> None:
    fn, ctx = function(), FakeCtx()
    doc = {"action": "PASS", "when": "true", **{f"k{i}" + "x" * 10_000: 1 for i in range(50)}}
    status = apply(fn, ctx, "long", json.dumps(doc))
    assert status["state"] == "refused" and status["field"].startswith("k0xxx")
    assert len(status["field"]) <= 255 and len(status["reason"]) <= 2000  # VARCHAR(255), and a bounded TEXT


def test_any_exception_while_applying_a_rule_is_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    fn, ctx = function(), FakeCtx()
    assert fn.engine is not None

    def broken(doc: Any) -> Any:
        msg = "a bug in a check"
        raise RuntimeError(msg)

    engine = fn.engine
    monkeypatch.setattr(fn, "engine", PatchedEngine(engine, upsert_rule=broken))
    status = apply(fn, ctx, "good", GOOD)
    assert status["state"] == "refused" and status["reason"] == "RuntimeError: a bug in a check"
    monkeypatch.setattr(fn, "engine", PatchedEngine(engine, delete_rule=broken))
    status = apply(fn, ctx, "good", None, op="delete")
    assert status["state"] == "refused" and "RuntimeError" in status["reason"]


def test_a_bad_document_in_broadcast_state_is_skipped_on_restore() -> None:
    state = FakeBroadcastState(deep='{"a": ' + DEEP + "}", good=GOOD, dup='{"id": "dup", "id": "dup"}')
    fn = function()
    within(lambda: fn._restore_rules(FakeCtx(state)))
    assert fn.engine is not None and [r.id for r in fn.engine.ruleset] == ["good"] and fn.have_rules


def test_with_status_passes_a_hostile_document_on_unchanged() -> None:
    deep = '{"tags": ' + DEEP + "}"
    assert within(lambda: _with_status(deep, "active", 3)) == deep
    assert json.loads(_with_status(GOOD, "shadow", 3)) == {
        **json.loads(GOOD),
        "status": "shadow",
        "version": 3,
    }


def test_the_folder_poller_skips_hostile_files(tmp_path: Path) -> None:
    for name in ("billion_laughs_id.yaml", "nested_500.yaml", "deep_json_100k.json", "duplicate_status.yaml"):
        (tmp_path / name).write_bytes((HOSTILE_RULES / name).read_bytes())
    (tmp_path / "good.yaml").write_text("id: good\naction: REVIEW\nwhen: event.amount > 10\n")
    out, complete = within(lambda: PollFolder._read(sorted(tmp_path.iterdir())))
    assert list(out) == ["good"] and not complete


def test_a_file_that_turns_hostile_keeps_its_previous_rules(tmp_path: Path) -> None:
    good = tmp_path / "velocity.yaml"
    good.write_text("id: velocity\naction: REVIEW\nwhen: event.amount > 10\n")
    other = tmp_path / "other.yaml"
    other.write_text("id: other\naction: PASS\nwhen: event.amount > 1\n")
    poller = PollFolder(str(tmp_path))
    first = poller.current()
    assert set(first) == {"velocity", "other"}
    good.write_bytes((HOSTILE_RULES / "billion_laughs_id.yaml").read_bytes())  # the edit is hostile
    assert within(poller.current) == first  # the job keeps running velocity v1; no delete is emitted
    other.unlink()
    assert set(within(poller.current)) == {"velocity"}  # a removed file's rules do go
    good.write_text("id: velocity\nversion: 2\naction: REVIEW\nwhen: event.amount > 20\n")
    assert within(poller.current)["velocity"][0] == 2


def _feed(poller: PollFolder, fn: RiskFunction, ctx: FakeCtx, ticks: int = 1) -> list[dict[str, Any]]:
    statuses = []
    for _ in range(ticks):
        for row in poller.flat_map(None):
            statuses += [json.loads(s[2]) for s in fn.process_broadcast_element(row, ctx)]
    return statuses


def test_a_rule_removed_while_the_job_was_down_is_deleted_after_the_restore(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: a\naction: REVIEW\nwhen: event.amount > 10\n")
    (tmp_path / "b.yaml").write_text("id: b\nversion: 3\naction: REJECT\nwhen: event.amount > 1\n")
    fn, ctx = function(), FakeCtx()
    _feed(PollFolder(str(tmp_path)), fn, ctx)
    assert sorted(ctx.state) == ["a", "b"]
    checkpoint = FakeBroadcastState(ctx.state)
    (tmp_path / "b.yaml").unlink()  # then the job restores from the checkpoint, its poller starts anew
    restored, rctx = function(), FakeCtx(FakeBroadcastState(checkpoint))
    restored._restore_rules(rctx)
    assert sorted(r.id for r in restored.engine.ruleset) == ["a", "b"]  # type: ignore[union-attr]
    statuses = _feed(PollFolder(str(tmp_path)), restored, rctx, ticks=3)
    assert sorted(r.id for r in restored.engine.ruleset) == ["a"]  # type: ignore[union-attr]
    assert sorted(rctx.state) == ["a"]
    assert [(s["rule_id"], s["version"], s["state"]) for s in statuses if s["state"] == "deleted"] == [
        ("b", 3, "deleted")
    ]


def test_no_rule_is_deleted_after_a_restore_while_a_file_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: a\naction: REVIEW\nwhen: event.amount > 10\n")
    (tmp_path / "b.yaml").write_text("id: b\naction: REJECT\nwhen: event.amount > 1\n")
    fn, ctx = function(), FakeCtx()
    _feed(PollFolder(str(tmp_path)), fn, ctx)
    checkpoint = FakeBroadcastState(ctx.state)
    (tmp_path / "b.yaml").write_bytes((HOSTILE_RULES / "billion_laughs_id.yaml").read_bytes())  # being edited
    restored, rctx = function(), FakeCtx(FakeBroadcastState(checkpoint))
    restored._restore_rules(rctx)
    poller = PollFolder(str(tmp_path))
    within(lambda: _feed(poller, restored, rctx, ticks=2))
    assert sorted(rctx.state) == ["a", "b"]  # b keeps running, as it would have without the restart
    (tmp_path / "b.yaml").unlink()
    _feed(poller, restored, rctx)  # the first complete read: b is not in the folder any more
    assert sorted(rctx.state) == ["a"]


def test_a_sync_row_that_lists_no_ids_is_refused_and_deletes_nothing() -> None:
    fn, ctx = function(), FakeCtx()
    apply(fn, ctx, "good", GOOD)
    status = apply(fn, ctx, "", json.dumps({"not": "a list"}), op="sync")
    assert status["state"] == "refused" and sorted(ctx.state) == ["good"]


def test_a_document_whose_id_is_not_its_rows_is_refused() -> None:
    """Reachable by editing the rules table by hand (the store writes the same id in both): accepted, the rule
    would run as "b" while a delete of row "a" would miss it."""
    fn, ctx = function(), FakeCtx()
    status = apply(fn, ctx, "a", json.dumps({"id": "b", "action": "REVIEW", "when": "event.amount > 10"}))
    assert (status["state"], status["field"]) == ("refused", "id") and "rule_id 'a'" in status["reason"]
    assert list(fn.engine.ruleset) == [] and dict(ctx.state) == {}  # type: ignore[union-attr]
