"""The rules store in MySQL (pymysql): current rules for the job, an append-only history, migrations.

No PyFlink here: the job, the CLI and the tests all use this package. Its errors are defined with every other
riskctl error in :mod:`riskctl.errors` and re-exported here.
"""

from __future__ import annotations

from riskctl.errors import (
    RuleNotFoundError,
    StoreBusyError,
    StoreError,
    StoreQueryError,
    VersionConflictError,
    VersionNotFoundError,
)
from riskctl.store.connection import connect
from riskctl.store.migrations import TableNames, migrate, table_names
from riskctl.store.rules_store import (
    Change,
    HistoryEntry,
    JobStatus,
    Plan,
    PlanItem,
    RuleStore,
    StoredRule,
    content_digest,
)

__all__ = [
    "Change",
    "HistoryEntry",
    "JobStatus",
    "Plan",
    "PlanItem",
    "RuleNotFoundError",
    "RuleStore",
    "StoreBusyError",
    "StoreError",
    "StoreQueryError",
    "StoredRule",
    "TableNames",
    "VersionConflictError",
    "VersionNotFoundError",
    "connect",
    "content_digest",
    "migrate",
    "table_names",
]
