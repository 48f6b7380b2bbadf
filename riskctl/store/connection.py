"""Connecting to the rules store's MySQL, with errors that say what to start instead of a stack trace."""

from __future__ import annotations

import re
from typing import Any

from riskctl.config import Settings
from riskctl.errors import ServiceError, StoreQueryError

SERVICE = "MySQL"
# pymysql / MySQL client error codes that mean "nothing usable answers at that address"
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}
_ACCESS_DENIED = 1045
_UNKNOWN_DATABASE = 1049
#: MySQL error codes of a statement refused for a privilege the connection's account lacks (on the database,
#: a table, a column, a routine, a global one like SUPER; 1045 on a statement): the server's configuration,
#: not the values the statement was given
PRIVILEGE_CODES = frozenset({1044, 1045, 1142, 1143, 1227, 1370})
_ENV_HINT = (
    "RISKCTL_MYSQL_HOST, RISKCTL_MYSQL_PORT, RISKCTL_MYSQL_USER, RISKCTL_MYSQL_PASSWORD, "
    "RISKCTL_MYSQL_DATABASE"
)


def describe_operational_error(settings: Settings, exc: BaseException) -> ServiceError:
    """Turn a pymysql connection error into a :class:`ServiceError` that names the address and what to do."""
    address = f"{settings.mysql_host}:{settings.mysql_port}"
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    detail = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    # "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)" -> the errno part
    errno = re.search(r"\((\[Errno [^)]*|timed out)\)\s*$", detail)
    if errno:
        detail = errno.group(1)
    if code == _ACCESS_DENIED:
        message = (
            f"access denied for user {settings.mysql.user!r} at {address} ({detail}); check the password "
            "(RISKCTL_MYSQL_PASSWORD, or .stack/mysql/password for the local stack) "
            f"and the user ({_ENV_HINT})"
        )
    elif code == _UNKNOWN_DATABASE:
        message = (
            f"database {settings.mysql.database!r} does not exist at {address}; create it, or set "
            f"RISKCTL_MYSQL_DATABASE ('riskctl stack up' creates 'riskctl' on the local stack)"
        )
    else:
        message = (
            f"cannot connect to {address} ({detail}). "
            "Start the local stack with 'riskctl stack up', "
            f"or point riskctl at your server with {_ENV_HINT}"
        )
    return ServiceError(SERVICE, message)


def refusal(exc: BaseException) -> StoreQueryError | None:
    """A pymysql error as the :class:`~riskctl.errors.StoreQueryError` it means when MySQL answered a
    statement with an error (a trigger's SIGNAL, a value strict mode refuses, a privilege missing): its code
    and message. None when ``exc`` says MySQL is away instead (the connection lost, refused, timed out,
    closed: codes of :data:`_UNREACHABLE`, or no code), which the caller answers as such."""
    import pymysql

    if not isinstance(exc, pymysql.err.MySQLError) or isinstance(exc, pymysql.err.InterfaceError):
        return None
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if not code or code in _UNREACHABLE:
        return None
    detail = exc.args[1] if len(exc.args) > 1 else exc
    msg = f"MySQL error {code}: {detail}"
    return StoreQueryError(msg, code=code)


def lacks_privilege(exc: BaseException) -> bool:
    """Whether ``exc`` (a :func:`refusal`'s error) is MySQL refusing a statement for a privilege the
    connection's account lacks (:data:`PRIVILEGE_CODES`)."""
    return isinstance(exc, StoreQueryError) and exc.code in PRIVILEGE_CODES


def connect(
    settings: Settings,
    *,
    connect_timeout: float = 5.0,
    read_timeout: float | None = None,
    lock_wait_s: int | None = None,
) -> Any:
    """A pymysql connection to the configured database: autocommit off, UTC session time zone, utf8mb4.
    ``read_timeout``: seconds to wait for an answer (the handshake included) and to send, else none: a
    server that accepts the connection but never answers (frozen, packets dropped) held the caller forever.
    ``lock_wait_s``: seconds a statement waits for a row lock before MySQL ends it with error 1205 (the
    session's ``innodb_lock_wait_timeout``), else the server's; set with the time zone by the connection's
    ``init_command``, so a session pymysql reconnects keeps it too.

    Raises :class:`ServiceError` (MySQL down, access denied, no database) or
    :class:`~riskctl.errors.ConfigError` (no password configured), never a raw driver error.
    """
    import pymysql

    password = settings.mysql_password  # ConfigError with what to set when there is none
    init_command = "SET time_zone = '+00:00'"
    if lock_wait_s is not None:
        init_command += f", innodb_lock_wait_timeout = {int(lock_wait_s)}"
    try:
        return pymysql.connect(
            host=settings.mysql_host,
            port=settings.mysql_port,
            user=settings.mysql.user,
            password=password,
            database=settings.mysql.database,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            write_timeout=read_timeout,
            charset="utf8mb4",
            autocommit=False,
            init_command=init_command,
        )
    except pymysql.err.OperationalError as exc:
        raise describe_operational_error(settings, exc) from None
    except OSError as exc:  # e.g. a host name that does not resolve
        raise describe_operational_error(settings, exc) from None
