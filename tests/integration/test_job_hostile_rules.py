"""Hostile rule documents written straight into MySQL (bypassing ``riskctl rules apply``, which refuses them)
reach the running job by CDC: each is refused with a status naming the field and the reason, the rules in
force keep deciding, and the job never restarts (issue 11, item 5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import Settings
from tests.integration.support import S, ev, new_job, start_job, wait_rules, wait_status

pytestmark = pytest.mark.integration

DEEP = "[" * 100_000 + "]" * 100_000


def _write_version(mysql: Any, table: str, rule_id: str, document: str) -> int:
    """Replace a rule's document with ``document`` as the next version; return that version."""
    with mysql.cursor() as cur:
        cur.execute(f"SELECT version FROM `{table}` WHERE rule_id=%s", (rule_id,))  # noqa: S608
        (version,) = cur.fetchone()
        cur.execute(
            f"UPDATE `{table}` SET version=%s, document=%s WHERE rule_id=%s",  # noqa: S608
            (version + 1, document, rule_id),
        )
    return int(version) + 1


def test_hostile_rule_documents_in_mysql_are_refused_and_the_job_goes_on(
    stack: Settings, tmp_path: Path, mysql: Any
) -> None:
    job = new_job(stack, tmp_path)
    start_job(job, tmp_path / "job.log", {"RISKCTL_JOB_PARALLELISM": "1"})
    try:
        wait_rules(job)
        deep = '{"id": "transfer_velocity", "action": "REVIEW", "when": "true", "tags": ' + DEEP + "}"
        v_deep = _write_version(mysql, job.rules_table, "transfer_velocity", deep)
        status = wait_status(job, "transfer_velocity", v_deep)
        assert status["state"] == "refused" and status["field"] == "document", status
        assert "nested deeper than 32 levels" in status["reason"]

        tower = json.dumps(
            {
                "id": "large_transfer_reject",
                "action": "REJECT",
                "when": "((((((event.amount ** 16) ** 16) ** 16) ** 16) ** 16) ** 16) > 0",
            }
        )
        v_tower = _write_version(mysql, job.rules_table, "large_transfer_reject", tower)
        status = wait_status(job, "large_transfer_reject", v_tower)
        assert status["state"] == "refused" and status["field"] == "when" and "power 256" in status["reason"]

        dup = '{"action": "PASS", "status": "active", "when": "true", "status": "disabled"}'
        v_dup = _write_version(mysql, job.rules_table, "login_failures_hourly", dup)
        status = wait_status(job, "login_failures_hourly", v_dup)
        assert status["state"] == "refused" and "duplicate key 'status'" in status["reason"]

        # the previous version of transfer_velocity keeps deciding, and the job never restarted
        u = job.user("v")
        events = [ev(f"{u}-{i}", u, "transfer", i * S, amount=a) for i, a in enumerate((30_000, 25_000))]
        job.send(events)
        d = job.decisions_for([e["event_id"] for e in events])
        assert d[f"{u}-1"]["action"] == "REVIEW"
        (fired,) = [r for r in d[f"{u}-1"]["rules"] if r["id"] == "transfer_velocity"]
        assert fired["version"] == v_deep - 1
        assert job.proc is not None
        job.proc.check_alive()
        log = (tmp_path / "job.log").read_text(errors="replace")
        assert "RecursionError" not in log
    finally:
        assert job.proc is not None
        job.proc.stop()


def test_null_columns_and_a_renamed_document_column_are_refused_naming_the_column(
    stack: Settings, tmp_path: Path, mysql: Any
) -> None:
    """ALTER TABLE on the rules table while the job runs (found in review): a NULL version was refused as
    "version must be an integer >= 1 ..., got 0"; the document column renamed reached the job as NULL and was
    refused as "not valid JSON: Expecting value ... (char 0)": neither said what happened. Both are refused
    naming the NULL column; the rules in force keep deciding and the job goes on."""
    job = new_job(stack, tmp_path)
    start_job(job, tmp_path / "job.log", {"RISKCTL_JOB_PARALLELISM": "1"})
    t = job.rules_table
    try:
        wait_rules(job)
        with mysql.cursor() as cur:
            cur.execute(f"ALTER TABLE `{t}` MODIFY version INT NULL")
            cur.execute(f"UPDATE `{t}` SET version = NULL WHERE rule_id = 'bot_cadence'")  # noqa: S608
        status = wait_status(job, "bot_cadence", 0)
        assert status["state"] == "refused" and status["field"] == "version", status
        assert "the row's version is NULL" in status["reason"]

        with mysql.cursor() as cur:
            cur.execute(f"ALTER TABLE `{t}` RENAME COLUMN document TO doc2")
            cur.execute(f"UPDATE `{t}` SET version = 2 WHERE rule_id = 'transfer_velocity'")  # noqa: S608
        status = wait_status(job, "transfer_velocity", 2)
        assert status["state"] == "refused" and status["field"] == "document", status
        assert "the row's document is NULL" in status["reason"] and "ALTER TABLE" in status["reason"]

        u = job.user("v")
        events = [ev(f"{u}-{i}", u, "transfer", i * S, amount=a) for i, a in enumerate((30_000, 25_000))]
        job.send(events)
        d = job.decisions_for([e["event_id"] for e in events])
        (fired,) = [r for r in d[f"{u}-1"]["rules"] if r["id"] == "transfer_velocity"]
        assert fired["version"] == 1
        assert job.proc is not None
        job.proc.check_alive()
    finally:
        assert job.proc is not None
        job.proc.stop()
