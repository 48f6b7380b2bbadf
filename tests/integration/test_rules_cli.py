"""``riskctl rules`` on the MySQL rules store: the real command in a subprocess, the stack's real MariaDB.

Each test gets its own uuid-named rules table (``RISKCTL_JOB_RULES_TABLE``), so the history and status tables
are its own too (``t_<uuid>_rule_history``, ``t_<uuid>_rule_status``); they are dropped at the end. The tests
stand in for the Flink job where one is needed: they write ``rule_status`` rows themselves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from riskctl.cli.common import ExitCode
from riskctl.config import PROJECT_ROOT, Settings
from riskctl.core.rules import load_rules
from riskctl.store import RuleStore, VersionConflictError, connect, table_names
from riskctl.store.migrations import drop_store, migrate
from tests.helpers import as_a_terminal_would, free_port
from tests.integration.support import connect_mysql

pytestmark = pytest.mark.integration

RULE_A = "id: r_amount\naction: REVIEW\nwhen: event.amount > 100\n"
RULE_B = "id: r_country\naction: REJECT\npriority: 5\nwhen: event.country in ['XX', 'YY']\n"
RULE_C = "id: r_device\naction: REVIEW\nwhen: event.device == null\n"


@dataclass
class Cli:
    """Runs ``riskctl rules ...`` as a subprocess against one uuid-named rules table."""

    table: str
    env: dict[str, str]
    conn: Any  # autocommit pymysql connection of the test

    @property
    def status_table(self) -> str:
        return table_names(self.table).status

    @property
    def history_table(self) -> str:
        return table_names(self.table).history

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "riskctl.cli.main", "rules", *args]

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
        proc = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=PROJECT_ROOT,
            timeout=timeout,
            check=False,
        )
        run = Run(proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in run.stdout + run.stderr, run.stderr
        return run

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=PROJECT_ROOT,
            preexec_fn=as_a_terminal_would,  # noqa: PLW1509 - only restores a signal's default (Ctrl-C tests)
        )

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(
                sql.format(rules=self.table, history=self.history_table, status=self.status_table), params
            )
            return list(cur.fetchall())

    def rows(self) -> dict[str, tuple[int, str, dict[str, Any], str | None]]:
        """rule_id -> (version, status, document, updated_by) of the current rules table (empty before the
        first command created it).
        """
        if not self.query("SHOW TABLES LIKE %s", self.table):
            return {}
        found = self.query("SELECT rule_id, version, status, document, updated_by FROM `{rules}`")
        return {r[0]: (r[1], r[2], json.loads(r[3]), r[4]) for r in found}

    def versions(self) -> dict[str, int]:
        return {rule_id: row[0] for rule_id, row in self.rows().items()}

    def history(self, rule_id: str) -> list[tuple[int, str, str]]:
        rows = self.query(
            "SELECT version, status, `change` FROM `{history}` WHERE rule_id = %s ORDER BY version", rule_id
        )
        return [(int(v), s, c) for v, s, c in rows]

    def migrate(self) -> None:
        """Create the tables, as the job does when it starts."""
        migrate(self.conn, self.table)

    def report(
        self, rule_id: str, version: int, state: str, reason: str | None = None, field: str | None = None
    ) -> None:
        """What the job does: record what it did with a rule version."""
        self.query(
            "INSERT INTO `{status}` (rule_id, version, state, reason, field) VALUES (%s, %s, %s, %s, %s)",
            rule_id,
            version,
            state,
            reason,
            field,
        )


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli(stack: Settings, mysql: Any) -> Iterator[Cli]:
    table = f"t_{uuid.uuid4().hex[:12]}_rules"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKCTL_MYSQL_")}
    env.update(
        RISKCTL_JOB_RULES_TABLE=table,
        RISKCTL_AUTHOR="tester",
        RISKCTL_STACK_MYSQL_PORT=str(stack.mysql_port),
        RISKCTL_STACK_DIR=stack.stack.dir,
        PYTHONPATH=str(PROJECT_ROOT),
    )
    yield Cli(table, env, mysql)
    mysql.cursor().execute(f"DROP TRIGGER IF EXISTS `{table}_fail`")
    drop_store(mysql, table)


def write_rules(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def assert_versions_consistent(cli: Cli) -> None:
    for rule_id, (version, status, document, _) in cli.rows().items():
        assert document["id"] == rule_id
        assert document["version"] == version
        assert document["status"] == status


# -- apply ---------------------------------------------------------------------------------------------------
def test_apply_prints_the_plan_and_writes_new_versions_only_for_changed_rules(
    cli: Cli, tmp_path: Path
) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B, c=RULE_C)
    first = cli("apply", str(folder), "--author", "alice", "--comment", "first import")
    assert first.code == 0, first.stderr
    assert first.stdout.count("create ") == 3 and "3 to create, 0 to update, 0 unchanged" in first.stdout
    assert "applied 3 change(s) in one transaction" in first.stdout
    assert cli.versions() == {"r_amount": 1, "r_country": 1, "r_device": 1}
    assert {row[3] for row in cli.rows().values()} == {"alice"}

    (folder / "b.yaml").write_text(RULE_B.replace("priority: 5", "priority: 6"))
    second = cli("apply", str(folder))
    assert second.code == 0, second.stderr
    lines = {line.split()[1]: line.split()[0] for line in second.stdout.splitlines() if line.startswith("  ")}
    assert lines == {"r_amount": "unchanged", "r_country": "update", "r_device": "unchanged"}
    assert "v1 -> v2" in second.stdout and "0 to create, 1 to update, 2 unchanged" in second.stdout
    assert cli.versions() == {"r_amount": 1, "r_country": 2, "r_device": 1}
    assert cli.history("r_country") == [(1, "active", "create"), (2, "active", "update")]
    assert cli.history("r_amount") == [(1, "active", "create")]
    assert cli.rows()["r_country"][2]["priority"] == 6
    assert_versions_consistent(cli)

    again = cli("apply", str(folder), "--json")
    assert again.code == 0
    out = again.json()
    assert out["summary"] == {"create": 0, "update": 0, "unchanged": 3, "delete": 0, "keep": 0}
    assert out["applied"] == []


def test_a_version_in_the_file_is_ignored_and_only_content_counts(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A)
    assert cli("apply", str(folder)).code == 0
    (folder / "a.yaml").write_text("version: 7\n" + RULE_A)
    run = cli("apply", str(folder), "--json")
    assert run.json()["summary"]["unchanged"] == 1
    assert cli.versions() == {"r_amount": 1}


def test_dry_run_prints_the_plan_and_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    run = cli("apply", str(folder), "--dry-run")
    assert run.code == 0, run.stderr
    assert "create" in run.stdout and "dry run: nothing written" in run.stdout
    assert cli.rows() == {}
    out = cli("apply", str(folder), "--dry-run", "--json").json()
    assert out["dry_run"] is True and out["summary"]["create"] == 2 and out["applied"] == []
    assert cli.rows() == {}


def test_rules_missing_from_the_folder_are_kept_unless_prune(cli: Cli, tmp_path: Path) -> None:
    assert cli("apply", str(write_rules(tmp_path / "all", a=RULE_A, b=RULE_B))).code == 0
    only_a = write_rules(tmp_path / "only_a", a=RULE_A)
    kept = cli("apply", str(only_a))
    assert kept.code == 0
    assert "keep" in kept.stdout and "left alone (--prune deletes it)" in kept.stdout
    assert set(cli.versions()) == {"r_amount", "r_country"}

    pruned = cli("apply", str(only_a), "--prune", "--json")
    assert pruned.code == 0, pruned.stdout
    assert pruned.json()["applied"] == [
        {"id": "r_country", "change": "delete", "from_version": 1, "version": 2, "status": "deleted"}
    ]
    assert cli.versions() == {"r_amount": 1}
    assert cli.history("r_country") == [(1, "active", "create"), (2, "deleted", "delete")]


def test_apply_is_one_transaction_a_failure_midway_leaves_nothing(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    assert cli("apply", str(folder)).code == 0
    before_rows, before_history = cli.rows(), cli.query("SELECT COUNT(*) FROM `{history}`")
    # The server refuses the third write of the transaction, after two have gone through.
    cli.query(
        f"CREATE TRIGGER `{cli.table}_fail` BEFORE INSERT ON `{{history}}` FOR EACH ROW "
        "BEGIN IF NEW.rule_id = 'r_zz_last' THEN "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test trigger'; END IF; END"
    )
    write_rules(
        folder,
        a=RULE_A.replace("100", "200"),
        b=RULE_B.replace("REJECT", "REVIEW"),
        z="id: r_zz_last\naction: PASS\nwhen: event.amount > 1\n",
    )
    run = cli("apply", str(folder))
    assert run.code == 1
    assert "refused by the test trigger" in run.stderr
    assert cli.rows() == before_rows
    assert cli.query("SELECT COUNT(*) FROM `{history}`") == before_history


@pytest.mark.parametrize("how", ["connection-killed", "ctrl-c"])
def test_apply_cut_short_says_why_and_leaves_nothing(cli: Cli, tmp_path: Path, how: str) -> None:
    # Found in review: both ended in "MySQL error: (0, '')" (exit 1), the failed rollback's error in place of
    # the one that said why; MySQL rolled the transaction back either way.
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    cli.migrate()
    marker = f"@slow_{uuid.uuid4().hex[:8]}"  # names this test's trigger statement in the process list
    cli.query(
        f"CREATE TRIGGER `{cli.table}_fail` BEFORE INSERT ON `{{history}}` FOR EACH ROW "
        f"SET {marker} = SLEEP(3)"
    )
    proc = cli.popen("apply", str(folder))
    deadline = time.monotonic() + 60
    running = "SELECT id FROM information_schema.processlist WHERE info LIKE %s AND id <> CONNECTION_ID()"
    while not (ids := cli.query(running, f"%{marker}%")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    if how == "ctrl-c":
        proc.send_signal(signal.SIGINT)
    else:
        cli.query(f"KILL CONNECTION {int(ids[0][0])}")
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "(0, '')" not in err, err
    if how == "ctrl-c":
        assert proc.returncode == 1 and err.strip().endswith("Aborted!"), err
    else:
        assert proc.returncode == ExitCode.UNAVAILABLE, err
        assert "lost in the middle of the command" in err and "'riskctl rules list'" in err, err
    assert cli.rows() == {}
    assert cli.query("SELECT COUNT(*) FROM `{history}`") == [(0,)]


def test_a_rule_at_the_largest_version_says_so_and_nothing_is_written(cli: Cli, tmp_path: Path) -> None:
    # Found in review: a version set to MySQL's largest INT by SQL; 'disable' was a rule error on a field
    # nobody wrote ("got 2147483648") and 'delete' "MySQL error: (1264, 'Out of range value ...')".
    folder = write_rules(tmp_path / "rules", a=RULE_A)
    assert cli("apply", str(folder)).code == 0
    cli.query(
        "UPDATE `{rules}` SET version = 2147483647, document = JSON_SET(document, '$.version', 2147483647)"
    )
    before, history = cli.rows(), cli.history("r_amount")
    for args in (["disable", "r_amount"], ["delete", "r_amount"]):
        run = cli(*args)
        assert run.code == 1, run.stderr
        assert "rule 'r_amount' has reached version 2147483647" in run.stderr, run.stderr
        assert "the largest a version can be" in run.stderr
    write_rules(folder, a=RULE_A.replace("100", "200"))
    run = cli("apply", str(folder))
    assert run.code == 1 and "has reached version 2147483647" in run.stderr, run.stderr
    assert cli.rows() == before and cli.history("r_amount") == history


def test_bad_rule_file_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(
        tmp_path / "rules",
        a=RULE_A,
        bad="id: r_bad\naction: REJEC\nwhen: event.amount >\n",
    )
    run = cli("apply", str(folder))
    assert run.code == 1
    assert "r_bad" in run.stderr and "'action'" in run.stderr and "did you mean 'REJECT'?" in run.stderr
    assert "nothing written to MySQL" in run.stderr
    # validation happens before any connection: not even the tables were created
    assert cli.query("SHOW TABLES LIKE %s", cli.table) == []
    out = cli("apply", str(folder), "--json")
    assert out.code == 1
    error = out.json()["error"]
    assert error["type"] == "invalid_rules" and {e["field"] for e in error["errors"]} >= {"action"}
    # with MySQL down the file errors are what the user sees: invalid rules never get that far
    down = cli("apply", str(folder), env={"RISKCTL_STACK_MYSQL_PORT": str(free_port())})
    assert down.code == 1 and "did you mean 'REJECT'?" in down.stderr


# -- reading -------------------------------------------------------------------------------------------------
def test_list_show_history_diff(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    assert cli("apply", str(folder), "--author", "alice").code == 0
    (folder / "a.yaml").write_text(RULE_A.replace("100", "250"))
    assert cli("apply", str(folder), "--author", "bob", "--comment", "raise the threshold").code == 0
    cli.report("r_amount", 2, "accepted")

    listed = cli("list")
    assert listed.code == 0
    header, *lines = listed.stdout.splitlines()
    assert header.split()[:5] == ["ID", "VERSION", "STATUS", "ACTION", "JOB"]
    assert lines[0].split()[:5] == ["r_amount", "2", "active", "REVIEW", "accepted"]
    assert lines[1].split()[:5] == ["r_country", "1", "active", "REJECT", "-"]
    as_json = cli("list", "--json").json()
    assert [(r["id"], r["version"], r["updated_by"]) for r in as_json["rules"]] == [
        ("r_amount", 2, "bob"),
        ("r_country", 1, "alice"),
    ]
    assert as_json["rules"][0]["job"]["state"] == "accepted"

    shown = cli("show", "r_amount")
    assert shown.code == 0
    assert shown.stdout.startswith("# rule r_amount, version 2 (active)")
    document = yaml.safe_load(shown.stdout)
    assert document["version"] == 2 and document["when"] == "event.amount > 250"
    old = yaml.safe_load(cli("show", "r_amount", "--version", "1").stdout)
    assert old["version"] == 1 and old["when"] == "event.amount > 100"
    old_json = cli("show", "r_amount", "--version", "1", "--json").json()
    assert old_json["current"] is False and old_json["author"] == "alice"

    # what `show` prints is a rule file: applying it back changes nothing
    back = write_rules(tmp_path / "back", a=shown.stdout, b=cli("show", "r_country").stdout)
    assert cli("apply", str(back), "--json").json()["summary"]["unchanged"] == 2

    hist = cli("history", "r_amount")
    assert hist.code == 0
    rows = [line.split() for line in hist.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "2*"]
    assert "raise the threshold" in hist.stdout and "bob" in hist.stdout
    versions = cli("history", "r_amount", "--json").json()["versions"]
    assert [(v["version"], v["change"], v["author"]) for v in versions] == [
        (1, "create", "alice"),
        (2, "update", "bob"),
    ]

    diff = cli("diff", "r_amount", "1", "2")
    assert diff.code == 0
    assert "--- r_amount v1" in diff.stdout and "+++ r_amount v2" in diff.stdout
    assert "-when: event.amount > 100" in diff.stdout and "+when: event.amount > 250" in diff.stdout
    assert "-version: 1" in diff.stdout and "+version: 2" in diff.stdout
    assert cli("diff", "r_amount", "1", "2", "--json").json()["identical"] is False


def test_history_shows_the_newest_versions_and_says_how_many_older_it_left_out(
    stack: Settings, cli: Cli, tmp_path: Path
) -> None:
    # Found in review: 'history' printed every version ever stored (read each with its document): a rule
    # written thousands of times by a script printed thousands of lines.
    assert cli("apply", str(write_rules(tmp_path / "rules", a=RULE_A))).code == 0
    conn = connect(stack)
    try:
        store = RuleStore(conn, cli.table)
        for i in range(24):  # versions 2..25
            store.set_status("r_amount", "disabled" if i % 2 == 0 else "active", author="script")
    finally:
        conn.close()

    default = cli("history", "r_amount")
    assert default.code == 0, default.stderr
    rows = [line.split()[0] for line in default.stdout.splitlines()[1:]]
    assert rows == [str(v) for v in range(6, 25)] + ["25*"]  # the newest 20, oldest first as before
    assert default.stderr.splitlines() == [
        "5 older versions not shown (the newest 20 are): --limit N shows more, --limit 0 every version",
        "* current version",
    ]
    three = cli("history", "r_amount", "--limit", "3")
    assert [line.split()[0] for line in three.stdout.splitlines()[1:]] == ["23", "24", "25*"]
    assert three.stderr.startswith("22 older versions not shown (the newest 3 are)")
    every = cli("history", "r_amount", "--limit", "0")
    assert len(every.stdout.splitlines()) == 1 + 25 and "not shown" not in every.stderr
    assert "not shown" not in cli("history", "r_amount", "-n", "25").stderr

    out = cli("history", "r_amount", "--limit", "2", "--json").json()
    assert (out["current_version"], out["limit"], out["older_not_shown"]) == (25, 2, 23)
    assert [(v["version"], v["document"]["version"]) for v in out["versions"]] == [(24, 24), (25, 25)]
    whole = cli("history", "r_amount", "--limit", "0", "--json").json()
    assert (whole["limit"], whole["older_not_shown"], len(whole["versions"])) == (None, 0, 25)
    bad = cli("history", "r_amount", "--limit", "-1")
    assert bad.code == ExitCode.USAGE


# -- single-rule changes -------------------------------------------------------------------------------------
def test_enable_disable_shadow_rollback_delete(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A)
    assert cli("apply", str(folder)).code == 0
    (folder / "a.yaml").write_text(RULE_A.replace("REVIEW", "REJECT"))
    assert cli("apply", str(folder)).code == 0  # v2: REJECT

    run = cli("disable", "r_amount", "-m", "too noisy")
    assert run.code == 0 and "r_amount: v2 -> v3 (disabled, disable)" in run.stdout
    assert cli.rows()["r_amount"][:2] == (3, "disabled")
    again = cli("disable", "r_amount")
    assert again.code == 0 and "already disabled: nothing written" in again.stdout
    assert cli.versions() == {"r_amount": 3}

    assert cli("shadow", "r_amount").code == 0
    assert cli.rows()["r_amount"][:2] == (4, "shadow")
    enabled = cli("enable", "r_amount", "--json").json()
    assert enabled["change"] == {
        "id": "r_amount",
        "change": "enable",
        "from_version": 4,
        "version": 5,
        "status": "active",
    }
    assert_versions_consistent(cli)

    rolled = cli("rollback", "r_amount", "--to", "1")
    assert rolled.code == 0 and "v5 -> v6" in rolled.stdout
    version, status, document, _ = cli.rows()["r_amount"]
    assert (version, status, document["action"]) == (6, "active", "REVIEW")
    v1 = cli("show", "r_amount", "--version", "1", "--json").json()["document"]
    assert {**v1, "version": 6} == document
    same = cli("rollback", "r_amount", "--to", "1")
    assert same.code == 0 and "nothing written" in same.stdout

    deleted = cli("delete", "r_amount", "--comment", "retired")
    assert deleted.code == 0 and "rollback r_amount --to 6" in deleted.stdout
    assert cli.rows() == {}
    assert cli.history("r_amount")[-1] == (7, "deleted", "delete")
    gone = cli("show", "r_amount")
    assert gone.code == 1 and "was deleted (version 7)" in gone.stderr and "--to 6" in gone.stderr
    deletion = cli("show", "r_amount", "--version", "7")
    assert deletion.code == 1 and "is a deletion" in deletion.stderr

    restored = cli("rollback", "r_amount", "--to", "2")
    assert restored.code == 0 and "deleted -> v8" in restored.stdout
    assert cli.rows()["r_amount"][2]["action"] == "REJECT"
    assert [h[0] for h in cli.history("r_amount")] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert_versions_consistent(cli)

    # a deleted rule that comes back through apply never reuses a version number
    assert cli("delete", "r_amount").code == 0
    assert cli("apply", str(folder)).code == 0
    assert cli.versions() == {"r_amount": 10}


# -- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("show", "r_amout"),
        ("show", "r_amout", "--version", "1"),
        ("history", "r_amout"),
        ("diff", "r_amout", "1", "2"),
        ("enable", "r_amout"),
        ("disable", "r_amout"),
        ("shadow", "r_amout"),
        ("rollback", "r_amout", "--to", "1"),
        ("delete", "r_amout"),
    ],
    ids=lambda a: a[0] + ("-version" if "--version" in a else ""),
)
def test_unknown_rule_id_says_did_you_mean(cli: Cli, tmp_path: Path, args: tuple[str, ...]) -> None:
    assert cli("apply", str(write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B))).code == 0
    run = cli(*args)
    assert run.code == 1
    assert f"no rule 'r_amout' in table '{cli.table}' (did you mean 'r_amount'?)" in run.stderr
    out = cli(*args, "--json")
    assert out.code == 1
    assert out.json()["error"] | {"message": None} == {
        "type": "unknown_rule",
        "message": None,
        "rule_id": "r_amout",
        "suggestion": "r_amount",
        "deleted_version": None,
    }
    assert cli.versions() == {"r_amount": 1, "r_country": 1}


def test_an_id_with_a_trailing_space_names_no_rule(cli: Cli, tmp_path: Path) -> None:
    # MariaDB compares 'r_amount ' = 'r_amount' (PAD SPACE collation): `delete "r_amount "` deleted r_amount
    # and wrote the deletion to the history under the id 'r_amount ', and `show "r_amount "` showed r_amount.
    assert cli("apply", str(write_rules(tmp_path / "rules", a=RULE_A))).code == 0
    for args in (
        ("show", "r_amount "),
        ("history", "r_amount "),
        ("disable", "r_amount "),
        ("rollback", "r_amount ", "--to", "1"),
        ("delete", "r_amount "),
    ):
        run = cli(*args)
        assert run.code == 1, (args, run.stdout)
        assert "no rule 'r_amount ' in table" in run.stderr and "(did you mean 'r_amount'?)" in run.stderr
    assert cli.versions() == {"r_amount": 1}
    ids = cli.query("SELECT CONCAT('<', rule_id, '>'), version FROM `{history}`")
    assert [tuple(row) for row in ids] == [("<r_amount>", 1)]


def test_a_rule_s_history_is_only_the_rows_of_its_exact_id(cli: Cli, tmp_path: Path) -> None:
    # Found in review: the history's queries padded with spaces ('r_amount ' = 'r_amount'). After a row
    # 'r_amount ' written by SQL was pruned, 'show r_amount' said "rule 'r_amount' was deleted (version 2)" of
    # a rule that never existed; once r_amount was created, 'history r_amount' listed the deletion of
    # 'r_amount ' as its version 2, and apply's plan said '-> v1' and wrote v3.
    folder = write_rules(tmp_path / "rules", b=RULE_B)
    assert cli("apply", str(folder)).code == 0
    doc = {"id": "r_amount ", "version": 1, "status": "active", "action": "PASS", "when": "true"}
    cli.query(
        "INSERT INTO `{rules}` (rule_id, version, status, document) VALUES ('r_amount ', 1, 'active', %s)",
        json.dumps(doc),
    )
    assert cli("apply", str(folder), "--prune").code == 0  # deletes 'r_amount ': its history row is v2
    for args in (("show", "r_amount"), ("history", "r_amount"), ("rollback", "r_amount", "--to", "1")):
        run = cli(*args)
        assert run.code == 1, (args, run.stdout)
        assert f"no rule 'r_amount' in table '{cli.table}'" in run.stderr, (args, run.stderr)

    write_rules(folder, a=RULE_A)
    applied = cli("apply", str(folder), "--json").json()
    planned = {r["id"]: r["to_version"] for r in applied["rules"]}
    written = {c["id"]: c["version"] for c in applied["applied"]}
    assert planned["r_amount"] == written["r_amount"] == 3  # versions go on after the padded id's
    hist = cli("history", "r_amount", "--json").json()["versions"]
    assert [(v["id"], v["version"], v["change"]) for v in hist] == [("r_amount", 3, "create")]
    assert [line.split()[0] for line in cli("history", "r_amount").stdout.splitlines()[1:]] == ["3*"]
    gone = cli("show", "r_amount", "--version", "2")
    assert gone.code == 1 and "has no version 2 (versions: 3)" in gone.stderr, gone.stderr
    # the text 'r_amount ' names its own rows only
    padded = cli("history", "r_amount ", "--json").json()["versions"]
    assert [(v["id"], v["version"], v["change"]) for v in padded] == [("r_amount ", 2, "delete")]
    assert cli("show", "r_amount ").code == 1


def test_unknown_version_lists_the_versions(cli: Cli, tmp_path: Path) -> None:
    assert cli("apply", str(write_rules(tmp_path / "rules", a=RULE_A))).code == 0
    for args in (
        ("show", "r_amount", "--version", "9"),
        ("diff", "r_amount", "1", "9"),
        ("rollback", "r_amount", "--to", "9"),
    ):
        run = cli(*args)
        assert run.code == 1 and "rule 'r_amount' has no version 9 (versions: 1)" in run.stderr


@pytest.mark.parametrize(
    "args",
    [("list",), ("show", "r_amount"), ("history", "r_amount"), ("disable", "r_amount"), ("apply", "RULES")],
    ids=lambda a: a[0],
)
def test_mysql_down_says_what_to_start(cli: Cli, tmp_path: Path, args: tuple[str, ...]) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A)
    args = tuple(str(folder) if a == "RULES" else a for a in args)
    port = free_port()
    run = cli(*args, env={"RISKCTL_STACK_MYSQL_PORT": str(port)})
    assert run.code == 3
    assert f"cannot connect to 127.0.0.1:{port}" in run.stderr
    assert "riskctl stack up" in run.stderr and "RISKCTL_MYSQL_HOST" in run.stderr
    assert run.stderr.count("\n") == 1  # one line, no traceback
    out = cli(*args, "--json", env={"RISKCTL_STACK_MYSQL_PORT": str(port)})
    assert out.code == 3 and out.json()["error"]["type"] == "unavailable"


def test_tables_being_migrated_by_a_stuck_process_is_one_line_naming_it(cli: Cli) -> None:
    # Found in review: the migration lock's TimeoutError was a traceback of every 'riskctl rules' command.
    lock = f"riskctl.migrate.{cli.table}"
    assert cli.query("SELECT GET_LOCK(%s, 1)", lock) == [(1,)]
    try:
        (holder,) = cli.query("SELECT CONNECTION_ID()")[0]
        code = (
            "import riskctl.store.migrations as m; m._LOCK_TIMEOUT_S = 1; "
            "from riskctl.cli.main import cli; cli(['rules', 'list'])"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=cli.env,
            timeout=120,
            check=False,
        )
    finally:
        cli.query("SELECT RELEASE_LOCK(%s)", lock)
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: MySQL: timed out after 1 s waiting for MySQL connection ")
    assert f"connection {holder} to finish migrating" in proc.stderr and lock in proc.stderr


def test_concurrent_edit_conflict_is_detected_never_lost(cli: Cli, tmp_path: Path) -> None:
    assert cli("apply", str(write_rules(tmp_path / "rules", a=RULE_A))).code == 0
    # two writers that both read version 1
    first = cli("disable", "r_amount", "--expect-version", "1")
    second = cli("shadow", "r_amount", "--expect-version", "1")
    assert first.code == 0
    assert second.code == 4
    assert "conflict on rule 'r_amount': expected version 1, but MySQL has version 2" in second.stderr
    assert cli.rows()["r_amount"][:2] == (2, "disabled")
    conflict = cli("enable", "r_amount", "--expect-version", "1", "--json")
    assert conflict.code == 4
    assert conflict.json()["error"] | {"message": None} == {
        "type": "conflict",
        "message": None,
        "rule_id": "r_amount",
        "expected": 1,
        "actual": 2,
    }
    assert cli.history("r_amount") == [(1, "active", "create"), (2, "disabled", "disable")]


def test_concurrent_writers_at_the_same_time_exactly_one_wins(cli: Cli, tmp_path: Path) -> None:
    assert cli("apply", str(write_rules(tmp_path / "rules", a=RULE_A))).code == 0
    procs = [
        cli.popen(command, "r_amount", "--expect-version", "1", "--author", f"w{i}")
        for i, command in enumerate(["disable", "shadow", "delete", "disable", "shadow", "delete"])
    ]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 4, 4, 4, 4, 4], results
    assert all("expected version 1" in err for code, err in results if code == 4)
    assert [h[0] for h in cli.history("r_amount")] == [1, 2]


def test_apply_conflict_between_plan_and_write_leaves_nothing(
    stack: Settings, cli: Cli, tmp_path: Path
) -> None:
    """A rule changed by someone else after ``apply`` read it: the whole apply is refused, nothing written."""
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    assert cli("apply", str(folder)).code == 0
    write_rules(folder, a=RULE_A.replace("100", "300"), b=RULE_B.replace("priority: 5", "priority: 9"))
    conn = connect(stack)
    try:
        store = RuleStore(conn, cli.table)
        plan = store.plan(load_rules(folder))
        assert [(i.rule_id, i.op) for i in plan.changes] == [("r_amount", "update"), ("r_country", "update")]
        assert cli("disable", "r_country").code == 0  # the other writer, between plan and write
        with pytest.raises(VersionConflictError) as caught:
            store.apply(plan, author="me")
        assert (caught.value.rule_id, caught.value.expected, caught.value.actual) == ("r_country", 1, 2)
    finally:
        conn.close()
    assert cli.versions() == {"r_amount": 1, "r_country": 2}  # r_amount's update was rolled back
    assert cli.history("r_amount") == [(1, "active", "create")]


# -- row locks: lock wait timeouts and deadlocks -------------------------------------------------------------
def _run_with_lock_wait(cli: Cli, seconds: int, *args: str) -> Run:
    """``riskctl rules ARGS`` whose session waits ``seconds`` for a row lock (LOCK_WAIT_S), not 20."""
    code = (
        f"import riskctl.cli.rules.mysql as m; m.LOCK_WAIT_S = {seconds}; "
        "from riskctl.cli.main import cli; cli()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "rules", *args],
        capture_output=True,
        text=True,
        env=cli.env,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("locked", "args", "what"),
    [
        ("rules", ("disable", "r_amount"), "the disable of rule 'r_amount'"),
        ("rules", ("delete", "r_amount"), "the deletion of rule 'r_amount'"),
        ("rules", ("rollback", "r_amount", "--to", "1"), "the rollback of rule 'r_amount' to version 1"),
        ("rules", ("apply", "RULES"), "apply's 1 change(s) (update 'r_amount')"),
        # the INSERT of the new version waits: this one was a conflict, "MySQL has version 3" (its own)
        ("history", ("disable", "r_amount"), "the disable of rule 'r_amount'"),
    ],
    ids=["disable", "delete", "rollback", "apply", "history-row"],
)
def test_a_write_kept_out_by_a_row_lock_says_what_was_not_written(
    stack: Settings, cli: Cli, tmp_path: Path, locked: str, args: tuple[str, ...], what: str
) -> None:
    # Found in review: a row lock held by another session (an SQL transaction left open) ended a write with
    # the driver's "MySQL error 1205: Lock wait timeout exceeded; try restarting transaction", exit 1, or,
    # waiting on the history, with a conflict claiming someone else had changed the rule.
    folder = write_rules(tmp_path / "rules", a=RULE_A)
    assert cli("apply", str(folder)).code == 0
    assert cli("shadow", "r_amount").code == 0  # v2
    (folder / "a.yaml").write_text(RULE_A.replace("100", "120"))
    args = tuple(str(folder) if a == "RULES" else a for a in args)
    holder = connect_mysql(stack)
    try:
        holder.begin()
        with holder.cursor() as cur:  # another session's open transaction holds the rule's rows
            table = cli.table if locked == "rules" else cli.history_table
            cur.execute(f"SELECT version FROM `{table}` WHERE rule_id = 'r_amount' FOR UPDATE")
        run = _run_with_lock_wait(cli, 1, *args)
        as_json = _run_with_lock_wait(cli, 1, *args, "--json")
    finally:
        holder.rollback()
        holder.close()
    assert run.code == ExitCode.UNAVAILABLE, run.stderr
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(
        f"error: MySQL: {what} was not written, nothing was: it waited 1 s for a row lock held by another "
        "MySQL session (error 1205, lock wait timeout"
    ), run.stderr
    assert as_json.code == ExitCode.UNAVAILABLE
    assert as_json.json()["error"] | {"message": None} == {
        "type": "busy",
        "message": None,
        "mysql_error": 1205,
        "rule_ids": ["r_amount"],
        "attempts": 1,
    }
    assert cli.versions() == {"r_amount": 2}
    assert [h[0] for h in cli.history("r_amount")] == [1, 2]
    assert cli(*args).code == 0  # once the lock is gone, the same command writes


def test_a_deadlocked_apply_is_retried_and_written_once(stack: Settings, cli: Cli, tmp_path: Path) -> None:
    # Found in review: MySQL's answer to a deadlock (it rolls the victim's transaction back) ended
    # 'apply' with the driver's "MySQL error 1213: Deadlock found when trying to get lock; try restarting
    # transaction".
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    assert cli("apply", str(folder)).code == 0
    write_rules(folder, a=RULE_A.replace("100", "120"), b=RULE_B.replace("priority: 5", "priority: 6"))
    other = connect_mysql(stack)
    try:
        other.begin()
        with other.cursor() as cur:
            # heavier than the apply (200 rows written), so that MySQL picks the apply as the victim
            cur.executemany(
                f"INSERT INTO `{cli.status_table}` (rule_id, version, state) VALUES ('x', %s, 'accepted')",
                [(v,) for v in range(1, 201)],
            )
            cur.execute(f"SELECT version FROM `{cli.table}` WHERE rule_id = 'r_country' FOR UPDATE")
        proc = cli.popen("apply", str(folder))  # writes r_amount, then waits for r_country's lock
        waiting = (
            "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT' "
            "AND trx_query LIKE %s"
        )
        _until(lambda: cli.query(waiting, f"%{cli.table}%") == [(1,)])
        with other.cursor() as cur:  # the deadlock: MySQL rolls the apply back, and this lock is granted
            cur.execute(f"SELECT version FROM `{cli.table}` WHERE rule_id = 'r_amount' FOR UPDATE")
            assert cur.fetchall() == ((1,),)
        time.sleep(0.3)  # the apply's next try waits for r_amount now
    finally:
        other.rollback()
        other.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    assert "applied 2 change(s) in one transaction" in out and "Traceback" not in err
    assert cli.versions() == {"r_amount": 2, "r_country": 2}
    assert cli.history("r_amount") == [(1, "active", "create"), (2, "active", "update")]
    assert cli.history("r_country") == [(1, "active", "create"), (2, "active", "update")]


def test_a_value_too_long_for_its_column_is_an_error_on_a_server_without_strict_mode(
    stack: Settings, cli: Cli, tmp_path: Path
) -> None:
    # Found in review: with sql_mode = '' (a server without a strict mode; played by this session) the store
    # cut an author of 200 characters to 128 and committed it into the history.
    import pymysql

    folder = write_rules(tmp_path / "rules", a=RULE_A)
    conn = connect(stack)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = ''")
        store = RuleStore(conn, cli.table)
        with pytest.raises(pymysql.err.DataError, match="Data too long for column 'updated_by'"):
            store.apply(store.plan(load_rules(folder)), author="a" * 200)
        with conn.cursor() as cur:
            cur.execute("SELECT @@SESSION.sql_mode")
            assert "STRICT_ALL_TABLES" in cur.fetchone()[0]
    finally:
        conn.close()
    assert cli.rows() == {} and cli.query("SELECT COUNT(*) FROM `{history}`") == [(0,)]


# -- waiting for the job -------------------------------------------------------------------------------------
def _until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_wait_reports_accepted_and_refused(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    proc = cli.popen("apply", str(folder), "--wait", "60")
    _until(lambda: len(cli.versions()) == 2)  # the apply committed; now play the job
    time.sleep(0.5)
    cli.report("r_amount", 1, "accepted")
    cli.report("r_country", 1, "refused", "unknown event field 'country' in this deployment", "when")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, (out, err)
    assert "waiting up to 60 s for the job to report 2 versions" in out
    assert "accepted  r_amount v1" in out
    assert "refused   r_country v1: unknown event field 'country' in this deployment (field 'when')" in out
    assert "the job refused 1 version(s)" in err and "Traceback" not in err


def test_wait_reads_the_report_kept_under_an_id_with_a_trailing_space(cli: Cli, tmp_path: Path) -> None:
    # Found in review: the job reports rows written by SQL under ids that are no rule id too, and the status
    # table's key pads with spaces: 'r_amount ' and 'r_amount' share its row, which keeps the id it was first
    # written with (the job's ON DUPLICATE KEY UPDATE). '--wait' for r_amount ended in a KeyError traceback.
    cli.migrate()
    cli.report("r_amount ", 1, "deleted")  # a row 'r_amount ' v1 written by SQL, then deleted by SQL
    folder = write_rules(tmp_path / "rules", a=RULE_A)
    proc = cli.popen("apply", str(folder), "--wait", "60")
    _until(lambda: len(cli.versions()) == 1)
    time.sleep(1)  # a few polls that see only the report on the deleted row
    assert proc.poll() is None
    cli.query(  # what the job does: its report on r_amount v1 lands in the row of 'r_amount '
        "INSERT INTO `{status}` (rule_id, version, state) VALUES ('r_amount', 1, 'accepted') "
        "ON DUPLICATE KEY UPDATE state = VALUES(state), reason = VALUES(reason), field = VALUES(field)"
    )
    assert cli.query("SELECT rule_id, state FROM `{status}`") == [("r_amount ", "accepted")]
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    assert "accepted  r_amount v1" in out and "Traceback" not in err
    listed = cli("list", "--json").json()["rules"]
    assert [(r["id"], r["job"]["state"]) for r in listed] == [("r_amount", "accepted")]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_while_waiting_says_the_changes_are_written(cli: Cli, tmp_path: Path, as_json: bool) -> None:
    # Found in review: Ctrl-C in '--wait' ended as click's "Aborted!", exit 1 (a failed command), after the
    # changes were committed.
    folder = write_rules(tmp_path / "rules", a=RULE_A)
    proc = cli.popen("apply", str(folder), "--wait", "60", *(["--json"] if as_json else []))
    _until(lambda: len(cli.versions()) == 1)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, (out, err)
    assert "Traceback" not in err and "Aborted" not in err
    if as_json:
        doc = json.loads(out)
        assert doc["ok"] is False and doc["applied"][0]["version"] == 1
        assert doc["wait"]["results"] == [{"id": "r_amount", "version": 1, "state": "interrupted"}]
    else:
        assert "applied 1 change(s)" in out
        assert "interrupted while waiting: the changes are written to MySQL" in err and "r_amount v1" in err
    assert cli.versions() == {"r_amount": 1}


def test_wait_all_accepted_exits_zero(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A)
    assert cli("apply", str(folder)).code == 0
    (folder / "a.yaml").write_text(RULE_A.replace("100", "150"))
    cli.report("r_amount", 2, "accepted")  # the job may be faster than the poll: a row already there counts
    run = cli("apply", str(folder), "--wait", "30", "--json")
    assert run.code == 0, run.stdout
    out = run.json()
    assert out["ok"] is True
    assert [(r["id"], r["version"], r["state"]) for r in out["wait"]["results"]] == [
        ("r_amount", 2, "accepted")
    ]
    cli.report("r_amount", 3, "accepted")
    assert cli("disable", "r_amount", "--wait", "30").code == 0
    proc = cli.popen("delete", "r_amount", "--wait", "30")
    _until(lambda: not cli.versions())
    # the job drops the rule and reports the version it dropped as deleted
    cli.query("UPDATE `{status}` SET state = 'deleted' WHERE rule_id = 'r_amount' AND version = 3")
    out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "deleted   r_amount v3" in out_text


def test_wait_times_out_naming_the_versions(cli: Cli, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    cli.migrate()
    cli.report("r_amount", 1, "accepted")
    t0 = time.monotonic()
    run = cli("apply", str(folder), "--wait", "1.5")
    assert run.code == 6
    assert time.monotonic() - t0 >= 1.5
    assert "accepted  r_amount v1" in run.stdout
    assert "timed out after 1.5 s: the job has not reported r_country v1" in run.stderr
    assert cli.versions() == {
        "r_amount": 1,
        "r_country": 1,
    }  # written all the same: only the report is missing
    out = cli("enable", "r_amount", "--wait", "0.5", "--json")
    assert out.code == 0 and out.json()["change"] is None  # already active: nothing to wait for
    timeout = cli("disable", "r_amount", "--wait", "0.5", "--json")
    assert timeout.code == 6
    assert timeout.json()["wait"]["results"] == [{"id": "r_amount", "version": 2, "state": "timeout"}]


# -- hostile rows written by SQL (found in review) ---------------------------------------------------------
EVIL = "\x1b]0;owned\x07\x1b[2J\nerror: forged\u202e"
ESCAPED = "\\x1b]0;owned\\x07\\x1b[2J\\nerror: forged\\u202e"


def _printable_output(run: Run) -> None:
    for text in (run.stdout, run.stderr):
        assert not any(ch in text for ch in ("\x1b", "\x07", "\u202e", "\x85")), repr(text)
        assert "\nerror: forged" not in text, text


def test_hostile_text_written_by_sql_reaches_the_terminal_escaped(cli: Cli, tmp_path: Path) -> None:
    # A rule id, author, comment, description or job reason written by SQL reached the terminal as it was:
    # 'rules list' printed the escape sequences (retitle the window, clear the screen) and a line of its own.
    assert cli("apply", str(write_rules(tmp_path / "rules", a=RULE_A))).code == 0
    insert = (
        "INSERT INTO `{rules}` (rule_id, version, status, document, updated_by) "
        " VALUES (%s, 1, 'active', %s, %s)"
    )
    for rule_id in (EVIL, "r_evil"):
        doc = {"id": rule_id, "version": 1, "status": "active", "action": "PASS", "when": "true"}
        cli.query(insert, rule_id, json.dumps({**doc, "description": EVIL}), EVIL)
    cli.query(
        "INSERT INTO `{history}` (rule_id, version, status, `change`, author, comment, document)"
        " VALUES ('r_evil', 1, 'active', 'create', %s, %s, %s)",
        EVIL,
        EVIL,
        json.dumps({"id": "r_evil", "description": EVIL}),
    )
    cli.report(EVIL, 1, "refused", f"unknown name {EVIL}", EVIL)
    cli.report("r_evil", 1, "refused", f"bad \x85 {EVIL}", EVIL)
    for args in (("list",), ("show", "r_evil"), ("show", "r_evil", "--version", "1"), ("history", "r_evil")):
        run = cli(*args)
        assert run.code == 0, (args, run.stderr)
        _printable_output(run)
        assert ESCAPED in run.stdout, (args, run.stdout)
    shown = cli("show", "r_evil").stdout
    assert yaml.safe_load(shown)["description"] == EVIL  # still a rule file with the same values
    assert "# job: refused   r_evil v1: bad \\x85 " in shown
    apply = cli("apply", str(tmp_path / "rules"), "--prune", "--wait", "0.5")
    assert apply.code == 6, apply.stderr  # the plan names the pruned id; the timeout names it too
    _printable_output(apply)
    assert f"delete     {ESCAPED}" in apply.stdout and ESCAPED in apply.stderr
    assert set(cli.versions()) == {"r_amount"}  # the row by SQL is gone too (its prune was a conflict)
    assert cli.history("r_evil")[-1] == (2, "deleted", "delete")


@pytest.mark.parametrize("kind", ["fifo", "broken-link", "link-to-fifo"])
def test_prune_with_a_rule_file_that_cannot_be_read_deletes_nothing(
    cli: Cli, tmp_path: Path, kind: str
) -> None:
    # A FIFO, a link to one or a broken link named b.yaml was skipped without a word ('is_file' is false),
    # so 'apply --prune' read the folder as without b.yaml and deleted r_country (found in review).
    rules = write_rules(tmp_path / "rules", a=RULE_A, b=RULE_B)
    assert cli("apply", str(rules)).code == 0
    (rules / "b.yaml").unlink()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = {"fifo": None, "broken-link": tmp_path / "gone.yaml", "link-to-fifo": fifo}[kind]
    if target is None:
        os.mkfifo(rules / "b.yaml")
    else:
        (rules / "b.yaml").symlink_to(target)
    run = cli("apply", str(rules), "--prune", timeout=30)  # a FIFO opened for reading blocked forever
    assert run.code == 1, run.stdout
    assert "b.yaml" in run.stderr and "nothing written to MySQL" in run.stderr, run.stderr
    assert cli.versions() == {"r_amount": 1, "r_country": 1}
