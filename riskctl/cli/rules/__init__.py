"""``riskctl rules``: validate rule files, and manage the rules store in MySQL.

The group and its subcommands, one module per kind of work:

- :mod:`~riskctl.cli.rules.local`: ``validate`` (rule files on disk; no MySQL);
- :mod:`~riskctl.cli.rules.publish`: ``apply`` (a folder of rules to MySQL, in one transaction);
- :mod:`~riskctl.cli.rules.read`: ``list``, ``show``, ``history``, ``diff``;
- :mod:`~riskctl.cli.rules.change`: ``enable``, ``disable``, ``shadow``, ``rollback``, ``delete``;
- :mod:`~riskctl.cli.rules.mysql` and :mod:`~riskctl.cli.rules.wait`: what the store subcommands share
  (opening the store, turning MySQL's errors into riskctl's, the write options; waiting for the job's
  report on a new version).

Exit codes: 0 ok; 1 invalid rules, unknown rule or version, or another error; 2 bad usage; 3 MySQL
unreachable or not configured, or a write kept out by MySQL's row locks (nothing written); 4 version conflict
(someone else changed the rule); 5 the job refused a version (``--wait``); 6 timed out waiting for the job
(``--wait``); 130 Ctrl-C while waiting (the changes are written) (:class:`riskctl.cli.common.ExitCode`).
"""

from __future__ import annotations

import click

from riskctl.cli.common import CONTEXT_SETTINGS
from riskctl.cli.rules.change import delete, disable, enable, rollback, shadow
from riskctl.cli.rules.local import validate
from riskctl.cli.rules.publish import apply
from riskctl.cli.rules.read import diff, history, list_rules, show

__all__ = ["rules"]


@click.group("rules", context_settings=CONTEXT_SETTINGS)
def rules() -> None:
    """Validate rule files; apply, read and change the rules in MySQL."""


for _command in (validate, apply, list_rules, show, history, diff, enable, disable, shadow, rollback, delete):
    rules.add_command(_command)
