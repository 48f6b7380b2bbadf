"""What the subcommands of ``riskctl rules`` that work on MySQL share: the store, the author, the options of
a write.

:func:`open_store` turns whatever MySQL answers into riskctl's errors (:mod:`riskctl.errors`), so the
commands end through :func:`riskctl.cli.common.handles_errors` like every other command: one line (or one
JSON document) and the exit code of the error's class, never a driver's traceback.
"""

from __future__ import annotations

import getpass
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import click

from riskctl.config import Settings, load_settings
from riskctl.errors import ServiceError
from riskctl.store.connection import SERVICE, connect, refusal
from riskctl.store.rules_store import RuleStore

#: Seconds to wait for one answer of MySQL (and to send one statement). Without a limit, a server that
#: accepts connections and never answers (frozen, packets dropped) held every command forever: 'riskctl rules
#: list' was still in the handshake after 60 s, and '--wait N' outlived its N (found in review). Above
#: LOCK_WAIT_S, so a statement waiting for a row lock ends with MySQL's own answer first.
MYSQL_TIMEOUT_S = 60.0
#: Seconds a statement waits for a rule's row lock (held by another writer, or an SQL session left open)
#: before MySQL ends it with error 1205 (then the store's StoreBusyError: exit 3, nothing written); the
#: server's default (innodb_lock_wait_timeout) is 50 and may be more
LOCK_WAIT_S = 20


@contextmanager
def open_store() -> Iterator[RuleStore]:
    """The rules store of ``settings.job.rules_table`` (migrated), its connection closed at the end.

    A statement MySQL answers with an error (a trigger's SIGNAL, a value strict mode refuses, a privilege
    missing) raises :class:`~riskctl.errors.StoreQueryError` with the server's code and message, as in the
    console (:func:`riskctl.store.connection.refusal`); any other driver error during the block means the
    server was lost (killed, restarted, the socket closed) and raises the
    :class:`~riskctl.errors.ServiceError` of :func:`lost_connection`.
    """
    import pymysql

    settings = load_settings()
    conn = connect(settings, read_timeout=MYSQL_TIMEOUT_S, lock_wait_s=LOCK_WAIT_S)
    try:
        yield RuleStore(conn, settings.job.rules_table)
    except pymysql.err.MySQLError as exc:
        # connected, then no answer: not "cannot connect". pymysql's InterfaceError (0, '') of a socket the
        # server closed was "MySQL error: (0, '')", saying nothing of what became of the write
        raise refusal(exc) or lost_connection(settings, exc) from None
    finally:
        with suppress(pymysql.err.Error):  # already closed by the store, after a transaction it lost
            conn.close()


def lost_connection(settings: Settings, exc: BaseException) -> ServiceError:
    """MySQL lost in the middle of a command: what that means for the command's write. MySQL rolls back a
    transaction whose connection ends, unless the connection went while it committed (then only a read says
    whether the change is there)."""
    detail = str(exc.args[1] if len(exc.args) > 1 else exc)
    reason = f" ({detail})" if detail else ""  # pymysql's closed socket is (0, ''): no '()' for it
    address = f"{settings.mysql_host}:{settings.mysql_port}"
    message = (
        f"connection to {address} lost in the middle of the command{reason}: MySQL rolls "
        "back a change it had not committed; if it went while committing, the change may be written: "
        "check with 'riskctl rules list' or 'riskctl rules history ID' before you retry"
    )
    return ServiceError(SERVICE, message)


#: what the history's columns hold: ``author`` a VARCHAR(128) (characters), ``comment`` a TEXT (bytes)
MAX_AUTHOR_CHARS = 128
MAX_COMMENT_BYTES = 65_535


def storable_text(
    value: str, what: str, *, max_chars: int | None = None, max_bytes: int | None = None
) -> str:
    """``value`` if MySQL can store it: UTF-8 text (a byte that is not UTF-8 in an argument or in the
    environment reaches Python as a lone surrogate, which pymysql failed to encode, with a traceback) within
    the column's size (beyond it MySQL refused the whole write); else :class:`click.BadParameter`.
    """
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        msg = f"{what} is not UTF-8 text (a byte that is not UTF-8 at character {exc.start + 1})"
        raise click.BadParameter(msg) from None
    if max_chars is not None and len(value) > max_chars:
        msg = f"{what} is {len(value)} characters; the history keeps at most {max_chars}"
        raise click.BadParameter(msg)
    if max_bytes is not None and size > max_bytes:
        msg = f"{what} is {size} bytes in UTF-8; the history keeps at most {max_bytes}"
        raise click.BadParameter(msg)
    return value


def default_author() -> str:
    """``$RISKCTL_AUTHOR``, else the login name (:class:`click.BadParameter` when MySQL cannot store it)."""
    if os.environ.get("RISKCTL_AUTHOR"):
        return storable_text(os.environ["RISKCTL_AUTHOR"], "$RISKCTL_AUTHOR", max_chars=MAX_AUTHOR_CHARS)
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _author(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else storable_text(value, "the author", max_chars=MAX_AUTHOR_CHARS)


def _comment(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else storable_text(value, "the comment", max_bytes=MAX_COMMENT_BYTES)


author_option = click.option(
    "--author",
    default=None,
    callback=_author,
    show_default="$RISKCTL_AUTHOR or your login name",
    help="Who makes the change (at most 128 characters).",
)
comment_option = click.option(
    "--comment", "-m", default=None, callback=_comment, help="Why: kept in the rule's history."
)
expect_option = click.option(
    "--expect-version",
    type=click.IntRange(min=1),
    default=None,
    help="Write only if the rule is still at this version (else: a conflict, exit 4, nothing written).",
)


def _finite_seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # FloatRange(min=0) lets both through: 'nan' (nan < 0 is false) then skipped the wait (nan > 0 is false
    # too) and exited 0 without the job's report; 'inf' (or 1e999) polled forever when the job did not report
    if not math.isfinite(value):
        msg = f"{value} is not a number of seconds (NaN and infinity are refused)"
        raise click.BadParameter(msg)
    return value


wait_option = click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    callback=_finite_seconds,
    default=0.0,
    metavar="SECONDS",
    help="After writing, wait up to SECONDS for the running job to report each new version accepted or "
    "refused (table rule_status); 0: do not wait.",
)
