"""``--wait``: after a write, wait for the running job's report on each new version (table ``rule_status``).

The job records what it did with every rule version it reads (accepted, refused with the reason, deleted);
a write with ``--wait SECONDS`` polls that table so that a script knows whether the job runs the new rules,
not only that MySQL holds them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from riskctl.cli.common import ExitCode, echo_error, emit_json, printable
from riskctl.store.rules_store import Change, JobStatus, RuleStore

_POLL_S = 0.25


@dataclass(frozen=True)
class WaitTarget:
    """A version whose fate the job must report, and the states that end the wait for it."""

    rule_id: str
    version: int
    states: tuple[str, ...]


def wait_targets(changes: Sequence[Change]) -> list[WaitTarget]:
    """What to wait for after ``changes``: the new version of each written rule; for a deletion, the job's
    ``deleted`` report on the version it dropped.
    """
    targets = []
    for change in changes:
        if change.change == "delete":
            if change.from_version is not None:
                targets.append(WaitTarget(change.rule_id, change.from_version, ("deleted",)))
        else:
            targets.append(WaitTarget(change.rule_id, change.version, ("accepted", "refused")))
    return targets


def wait_for_job(
    store: RuleStore, targets: Sequence[WaitTarget], timeout_s: float, *, as_json: bool
) -> tuple[ExitCode, list[dict[str, Any]]]:
    """Poll ``rule_status`` until every target has a final state or ``timeout_s`` passed; print each result
    as it arrives. Returns the exit code (OK, REFUSED or TIMEOUT) and the results.
    """
    pending = {(t.rule_id, t.version): t for t in targets}
    results: dict[tuple[str, int], dict[str, Any]] = {}
    if not as_json:
        n = len(pending)
        click.echo(
            f"waiting up to {timeout_s:g} s for the job to report {n} version{'s' if n != 1 else ''}..."
        )
    deadline = time.monotonic() + timeout_s
    interrupted = False
    try:
        while pending:
            found = store.job_status(pending)
            for key, status in sorted(found.items()):
                target = pending[key]
                if status.state not in target.states:
                    continue
                del pending[key]
                results[key] = status.to_dict()
                if not as_json:
                    click.echo(status_line(status))
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        # The changes are committed: Ctrl-C ends the wait only. It ended as click's 'Aborted!', exit 1, the
        # code of a failed command, as if nothing had been written (found in review).
        interrupted = True
    for key, target in sorted(pending.items()):
        state = "interrupted" if interrupted else "timeout"
        results[key] = {"id": target.rule_id, "version": target.version, "state": state}
    ordered = [results[k] for k in sorted(results)]
    refused = [r for r in ordered if r["state"] == "refused"]
    if interrupted and pending:
        if not as_json:
            missing = printable(", ".join(f"{t.rule_id} v{t.version}" for t in pending.values()))
            echo_error(
                f"interrupted while waiting: the changes are written to MySQL; the job's report on {missing} "
                "was not awaited (see 'riskctl rules list')"
            )
        return ExitCode.INTERRUPTED, ordered
    if pending:
        if not as_json:
            missing = printable(", ".join(f"{t.rule_id} v{t.version}" for t in pending.values()))
            echo_error(
                f"timed out after {timeout_s:g} s: the job has not reported {missing} (is the job "
                f"running and reading table {store.names.rules!r}? it reports in {store.names.status!r})"
            )
        return ExitCode.TIMEOUT, ordered
    if refused:
        if not as_json:
            echo_error(f"the job refused {len(refused)} version(s); it keeps running the previous ones")
        return ExitCode.REFUSED, ordered
    return ExitCode.OK, ordered


def finish_write(
    store: RuleStore, changes: Sequence[Change], wait_s: float, out: dict[str, Any], *, as_json: bool
) -> None:
    """The end of every write command: with ``wait_s`` > 0 wait for the job's report on ``changes`` (added
    to ``out`` as ``wait``); print ``out`` with ``--json``; exit with the wait's code when it is not OK."""
    code = ExitCode.OK
    if wait_s > 0:
        code, results = wait_for_job(store, wait_targets(changes), wait_s, as_json=as_json)
        out["wait"] = {"timeout_s": wait_s, "results": results}
        out["ok"] = code == ExitCode.OK
    if as_json:
        emit_json(out)
    if code:
        sys.exit(code)


def status_line(status: JobStatus) -> str:
    """One line of the job's report on a version: state, rule, version, and the reason of a refusal; printable
    (the reason quotes the document, whoever wrote it)."""
    line = f"{status.state:<9} {status.rule_id} v{status.version}"
    if status.reason:
        line += f": {status.reason}"
    if status.field:
        line += f" (field {status.field!r})"
    return printable(line)
