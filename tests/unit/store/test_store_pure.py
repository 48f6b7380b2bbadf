"""The pure pieces of the rules store and its CLI: table names, identifiers, digests, messages, wait targets.

The MySQL behaviour is tested against a real server in tests/integration/test_rules_cli.py.
"""

from __future__ import annotations

import ast
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from riskctl.cli.rules.read import to_yaml
from riskctl.cli.rules.wait import WaitTarget, wait_targets
from riskctl.config import Settings
from riskctl.errors import ConfigError, RuleNotFoundError, ServiceError, VersionNotFoundError
from riskctl.store import Change, Plan, PlanItem, VersionConflictError, content_digest, table_names
from riskctl.store.connection import describe_operational_error
from riskctl.store.migrations import MIGRATIONS, check_identifier, quote

STORE = Path(str(files("riskctl.store")))  # the source of the package this run imports


def test_default_table_names_match_the_job_contract() -> None:
    names = table_names("rules")
    assert (names.rules, names.history, names.status) == ("rules", "rule_history", "rule_status")


def test_table_names_follow_the_rules_table() -> None:
    assert table_names("t_1a2b_rules").status == "t_1a2b_rule_status"
    assert table_names("t_1a2b_rules").history == "t_1a2b_rule_history"
    assert table_names("policies").status == "policies_status"


@pytest.mark.parametrize("bad", ["", "1rules", "rules; DROP TABLE x", "ru`les", "a-b", "x" * 65, "rules "])
def test_unsafe_table_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid table name"):
        table_names(bad)


def test_derived_names_must_fit_too() -> None:
    with pytest.raises(ConfigError):
        table_names("x" * 60)  # fits, but x..._history does not


def test_quote() -> None:
    assert quote("rule_status") == "`rule_status`"
    assert check_identifier("_x9") == "_x9"


def test_migrations_are_numbered_in_order() -> None:
    versions = [m[0] for m in MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))


def test_content_digest_ignores_only_the_version() -> None:
    doc = {"id": "a", "version": 1, "status": "active", "action": "REVIEW", "when": "event.amount > 1"}
    assert content_digest(doc) == content_digest({**doc, "version": 7})
    assert content_digest(doc) != content_digest({**doc, "status": "disabled"})
    assert content_digest(doc) == content_digest(dict(reversed(list(doc.items()))))


def test_conflict_message_names_rule_and_versions() -> None:
    text = str(VersionConflictError("bf", 3, 4))
    assert "'bf'" in text and "expected version 3" in text and "MySQL has version 4" in text
    assert "Nothing was written" in text
    assert "no rule (deleted)" in str(VersionConflictError("bf", 3, None))
    assert "no rule (a new one)" in str(VersionConflictError("bf", None, 2))


def test_not_found_messages() -> None:
    assert "did you mean 'brute_force'?" in str(
        RuleNotFoundError("brute_forc", table="rules", suggestion="brute_force")
    )
    deleted = str(RuleNotFoundError("bf", table="rules", deleted_version=5, last_version=4))
    assert "deleted (version 5)" in deleted and "rollback bf --to 4" in deleted
    assert "versions: 1, 2" in str(VersionNotFoundError("bf", 9, [1, 2]))


def test_connection_errors_say_what_to_start() -> None:
    settings = Settings()
    settings.mysql.password = "x"  # noqa: S105
    exc = OSError(2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)")
    err = describe_operational_error(settings, exc)
    assert isinstance(err, ServiceError)
    text = str(err)
    assert "127.0.0.1:13306" in text and "[Errno 111] Connection refused" in text
    assert "riskctl stack up" in text and "RISKCTL_MYSQL_HOST" in text
    denied = str(describe_operational_error(settings, OSError(1045, "Access denied for user 'riskctl'")))
    assert "access denied" in denied and "RISKCTL_MYSQL_PASSWORD" in denied
    assert "RISKCTL_MYSQL_DATABASE" in str(
        describe_operational_error(settings, OSError(1049, "Unknown database"))
    )


def test_plan_counts() -> None:
    plan = Plan(
        (
            PlanItem("a", "create", None, 1, {}),
            PlanItem("b", "unchanged", 2, 2),
            PlanItem("c", "keep", 1, 1),
            PlanItem("d", "update", 1, 3, {}),
        )
    )
    assert [i.rule_id for i in plan.changes] == ["a", "d"]
    assert plan.to_dict()["summary"] == {"create": 1, "update": 1, "unchanged": 1, "delete": 0, "keep": 1}


def test_wait_targets() -> None:
    changes = [
        Change("a", "create", None, 1, "active"),
        Change("b", "disable", 2, 3, "disabled"),
        Change("c", "delete", 4, 5, "deleted"),
    ]
    assert wait_targets(changes) == [
        WaitTarget("a", 1, ("accepted", "refused")),
        WaitTarget("b", 3, ("accepted", "refused")),
        WaitTarget("c", 4, ("deleted",)),
    ]


def test_yaml_puts_id_version_status_first_and_round_trips() -> None:
    doc = {
        "action": "REVIEW",
        "when": "event.amount > 1",
        "priority": 0,
        "status": "shadow",
        "version": 2,
        "id": "a",
    }
    text = to_yaml(doc)
    assert text.splitlines()[:3] == ["id: a", "version: 2", "status: shadow"]
    assert yaml.safe_load(text) == doc


def test_store_imports_no_flink() -> None:
    paths = sorted(STORE.glob("*.py"))
    assert paths, f"no modules under {STORE}"
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("pyflink") for a in node.names), path
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("pyflink"), path


class _NoCursor:
    def cursor(self) -> _NoCursor:
        return self

    def __enter__(self) -> _NoCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, *args: object) -> None:
        return None


def test_a_hostile_stored_document_reads_as_unreadable_instead_of_failing() -> None:
    from riskctl.store.rules_store import UNREADABLE, RuleStore

    store = RuleStore(_NoCursor(), "rules", auto_migrate=False)
    deep = "[" * 100_000 + "]" * 100_000
    stored = store._stored(("r1", 3, "active", deep, None, "me"))
    assert stored.version == 3 and "nested deeper than 32 levels" in stored.document[UNREADABLE]
    dup = store._stored(("r2", 1, "active", '{"id": "r2", "id": "x"}', None, None))
    assert "duplicate key 'id'" in dup.document[UNREADABLE] and dup.action is None
    entry = store._entry(("r1", 2, "active", "update", "me", None, "{" * 50_000, None, None))
    assert entry.document is not None and UNREADABLE in entry.document
    ok = store._stored(("r3", 1, "active", '{"id": "r3", "action": "PASS"}', None, None))
    assert ok.document == {"id": "r3", "action": "PASS"}


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', "null", "42", "true"])
def test_a_stored_document_that_is_json_but_not_an_object_reads_as_unreadable(text: str) -> None:
    # Was: the list/str/None went through as the document, and every reader (list, show, history, disable,
    # apply's plan) then failed with an AttributeError traceback on .get/.items.
    from riskctl.store.rules_store import UNREADABLE, RuleStore

    store = RuleStore(_NoCursor(), "rules", auto_migrate=False)
    stored = store._stored(("r1", 1, "active", text, None, None))
    assert "not an object" in stored.document[UNREADABLE]
    assert stored.action is None and stored.to_dict()["document"] == stored.document
    assert content_digest(stored.document)
    entry = store._entry(("r1", 1, "active", "create", None, None, text, None, None))
    assert entry.document is not None and "not an object" in entry.document[UNREADABLE]
