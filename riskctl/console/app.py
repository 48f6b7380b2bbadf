"""The console's web application (Starlette, Jinja2 templates rendered on the server, a little JavaScript).

Every route but ``/login`` needs a session; every POST needs the session's CSRF token (form field ``csrf`` or
header ``X-CSRF-Token``) and the permission of its action (:data:`riskctl.console.security.PERMISSIONS`).
Answers: 303 to ``/login`` for a page without a session, 401 for an API call without one, 403 for a missing or
wrong CSRF token or a role that may not, 413 for a body over :data:`MAX_BODY_BYTES`, 415 for a wrong content
type, 429 (with ``Retry-After``) for too many failed logins or too many backtests, replays or validations
running at once (:data:`MAX_HEAVY`, :data:`MAX_VALIDATIONS`), 409 for a concurrent edit; a login whose audit
row or session MySQL does not take logs nobody in: the form again, 500 or 503 with the reason
(:meth:`Console.login`).

Each request opens its own MySQL connection (:class:`Backend`), in a worker thread: pymysql connections are
not thread-safe and a console is not a high-traffic service.
"""

from __future__ import annotations

import asyncio
import difflib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskctl.cli.replay import JOB_DEFAULTS, ReplaySettings
from riskctl.console.accounts import AccountStore, Session, audit_written
from riskctl.console.backtest import MAX_UPLOAD_BYTES, BacktestError, TimeLimitError, backtest
from riskctl.console.feed import Feed
from riskctl.console.forms import FIELDS, Draft, fields_from_document, validate_form
from riskctl.console.replay_user import replay_user, user_lines
from riskctl.console.security import RateLimiter, allowed, new_token, same_token
from riskctl.core.rules import RuleSet
from riskctl.errors import (
    RiskctlError,
    ServiceError,
    StoreBusyError,
    StoreQueryError,
    VersionConflictError,
)
from riskctl.store.connection import lacks_privilege, refusal
from riskctl.store.migrations import case_key
from riskctl.store.rules_store import Plan, RuleStore

COOKIE = "riskctl_console"
LOG = logging.getLogger("riskctl.console")
LOGIN_COOKIE = "riskctl_console_login"  # double-submit CSRF token of the login form (no session yet)
#: the largest request body; a backtest upload may be this large, a form is far smaller
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024
MAX_FORM_FIELDS = 64
#: backtests and replays (a topic read of up to 8 MiB, then the engine over up to 100,000 lines: seconds each)
#: running at once; one more is refused with 429: they run in the worker threads every request needs (the
#: session check reads MySQL there), so a burst of them made every page of every user wait
MAX_HEAVY = 2
#: validations of a draft running at once, for all users and for one user (the editor's check as you type,
#: /api/validate, and the one before a backtest or a publish): each reads up to 11 fields of 64 KiB of YAML
#: in a worker thread (0.84 s of CPU for six fields of 60 KiB, the GIL held), and had no bound: 40 at once
#: held every worker thread (the session check of every page needs one) and the CPU for half a minute, by
#: the same measure. One more is refused
#: with 429 and ``Retry-After: 1`` (the editor checks again then); per user, so that one user's (or script's)
#: burst leaves the other slots to the other analysts
MAX_VALIDATIONS = 4
MAX_VALIDATIONS_PER_USER = 2
#: characters of a publish's comment (kept in the history's TEXT column: 65,535 bytes, 4 a character at most)
MAX_COMMENT_CHARS = 2000
#: the longest session cookie looked up (a token is 43 characters; AccountStore.session takes up to 128)
MAX_TOKEN_CHARS = 128
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: what a page shows of a decision or an alert (anyone who may write to the topics can put one there, up to
#: 1 MB): a text's first MAX_SHOWN_CHARS characters (``clip``), a record's first MAX_SHOWN_RULES rules, an
#: evidence's first MAX_SHOWN_EVIDENCE characters of JSON (``json_excerpt``); a user id over
#: MAX_LINKED_ID_CHARS (the door's max_string_chars) is shown without a link. Pages are rendered on the event
#: loop, and they showed records whole: 5 records of 40,000 rule ids each made /decisions 2.7 MB
MAX_SHOWN_CHARS = 300
MAX_SHOWN_RULES = 20
MAX_SHOWN_EVIDENCE = 2000
MAX_LINKED_ID_CHARS = 4096
#: versions of a rule's history on one page of /rules/<id> (newest first, then ``?before=<version>`` for the
#: older ones, one bounded read on the history's key): the page read every version with its document though
#: it showed none, and showed every version with a rollback form each. A rule written 5,000 times (documents
#: of 1 kB) made a page of 3.2 MB in 0.4 s, growing with the versions and their documents; now 40 kB in 0.08 s
HISTORY_PAGE = 50
_TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def clip(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """``value`` as text (its JSON if it is not text), cut to ``limit`` characters (then ``...``)."""
    if not isinstance(value, str):
        return json_excerpt(value, limit)
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value):,} characters)"


def json_excerpt(value: Any, limit: int = MAX_SHOWN_EVIDENCE) -> str:
    """The JSON of ``value`` up to ``limit`` characters (then ``...``): encoded piece by piece and stopped
    there, so a megabyte of evidence costs what ``limit`` characters do."""
    out: list[str] = []
    size = 0
    try:
        for piece in json.JSONEncoder(ensure_ascii=False).iterencode(value):
            out.append(piece)
            size += len(piece)
            if size > limit:
                return "".join(out)[:limit] + "..."
    except (TypeError, ValueError):
        return "?"
    return "".join(out)


_TEMPLATES.env.filters["clip"] = clip
_TEMPLATES.env.filters["json_excerpt"] = json_excerpt
_TEMPLATES.env.globals.update(MAX_SHOWN_RULES=MAX_SHOWN_RULES, MAX_LINKED_ID_CHARS=MAX_LINKED_ID_CHARS)


@dataclass
class Backend:
    """How the console reaches MySQL: a connection factory (:func:`mysql_backend`'s sets the seconds a
    statement waits for a row lock, :data:`LOCK_WAIT_S`) and the rules table.

    A statement MySQL answers with an error (a trigger, a strict-mode refusal) comes out of :meth:`open` as
    :class:`~riskctl.errors.StoreQueryError` with MySQL's code and message, as from the CLI: as the driver's
    error it was a 500, or (error 1644, a trigger's SIGNAL) a 503 saying MySQL was not answering. The
    driver's errors of a MySQL away go on unchanged (:data:`_DATABASE_AWAY`)."""

    connect: Callable[[], Any]
    rules_table: str = "rules"

    @contextmanager
    def open(self) -> Iterator[tuple[RuleStore, AccountStore]]:
        conn = self.connect()
        try:
            yield RuleStore(conn, self.rules_table), AccountStore(conn, self.rules_table, auto_migrate=False)
        except Exception as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from exc
        finally:
            conn.close()


#: seconds a request waits for MySQL to answer (or to take what it sends) before it is a 503: a MySQL that
#: accepts connections but does not answer (frozen, a network dropping its packets) held each request's worker
#: thread forever, and with every thread held no page needing MySQL answered again
MYSQL_TIMEOUT_S = 30.0
#: seconds a write waits for a rule's row lock (held by another writer, or an SQL session left open) before
#: MySQL ends it with error 1205: a 503 saying what was not written, the form kept. Below MYSQL_TIMEOUT_S:
#: with the server's default (50 s) the read timeout came first, and the write was a 503 saying MySQL was away
LOCK_WAIT_S = 10


def mysql_backend(settings: Any, *, timeout_s: float = MYSQL_TIMEOUT_S) -> Backend:
    """The console's :class:`Backend` over the configuration's MySQL (``riskctl console``)."""
    from riskctl.store.connection import connect

    return Backend(
        lambda: connect(settings, read_timeout=timeout_s, lock_wait_s=LOCK_WAIT_S), settings.job.rules_table
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (then cookies may go without ``Secure`` over plain HTTP)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: seconds a request body has to arrive, from the application's first read of it (a handler reads the body
#: only after the session check): else 408. A body trickling in held its connection (one of
#: riskctl.console.server.MAX_CONNECTIONS) for ever; 8 MiB in 60 s is 1.1 Mbit/s
BODY_TIMEOUT_S = 60.0


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, by its Content-Length or, when
    there is none (chunked), as the bytes arrive; and one that has not arrived within ``timeout_s`` of the
    first read of it with 408."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await PlainTextResponse(f"request body over {self.limit} bytes", 413)(scope, receive, send)
            return
        seen = 0
        deadline: float | None = None
        done = False

        async def limited() -> Message:
            nonlocal seen, deadline, done
            if done:  # the body is in: what follows is the client's disconnect, whenever it comes
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                msg = f"the request body did not arrive within {self.timeout_s:g} s"
                raise HTTPException(408, msg) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # raised where the handler reads the body: Starlette's exception middleware answers it
                    # (an exception of our own went through its error middleware first, a 500)
                    raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


class _Busy(Exception):
    pass


class _Misconfigured(Exception):
    """MySQL refused a statement for a privilege the console's account lacks (the StoreQueryError is its
    argument). Not a RiskctlError, so that no handler's ``except RiskctlError`` answers it as the
    analyst's mistake: the application's handler does (:func:`_misconfigured`)."""


_RETRY_AFTER = {"Retry-After": "5"}
_RETRY_SOON = {"Retry-After": "1"}  # a validation takes a second at most
#: the Content-Security-Policy of a page: only its own scripts (a nonce per response: the few inline ones),
#: requests to this origin only, no plugins, no framing, forms posted here only; styles may be inline (the
#: templates' style attributes). Whatever a rule text, an event field or a note holds, a page runs no script
#: of its own even if an escape were ever missed.
PAGE_CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: every other answer (JSON, plain text): nothing in it runs
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


Handler = Callable[[Request, Session], Awaitable[Response]]


class Console:
    """The routes, with the backend, the login rate limiter and the cookie policy they share."""

    def __init__(
        self,
        backend: Backend,
        *,
        secure_cookies: bool,
        limiter: RateLimiter | None = None,
        feed: Feed | None = None,
        events: Callable[[int], bytes] | None = None,
        max_heavy: int = MAX_HEAVY,
        max_validations: int = MAX_VALIDATIONS,
        max_validations_per_user: int = MAX_VALIDATIONS_PER_USER,
        replay_settings: ReplaySettings = JOB_DEFAULTS,
    ) -> None:
        self.feed = feed or Feed()
        #: how backtests and user replays decide: as the job does (its settings)
        self.replay_settings = replay_settings
        self.max_heavy = max_heavy
        self._heavy = 0  # backtests and replays running (changed on the event loop only: no lock)
        self.max_validations = max_validations
        self.max_validations_per_user = max_validations_per_user
        self._validating: dict[str, int] = {}  # user -> validations running (on the event loop only)
        self.events = events
        self.backend = backend
        self.secure = secure_cookies
        self.limiter = limiter or RateLimiter()

    # -- plumbing ------------------------------------------------------------------------------------------
    async def db(self, func: Callable[[RuleStore, AccountStore], Any]) -> Any:
        """``func`` with the stores, in a worker thread. A statement refused for a privilege the console's
        MySQL account lacks is :class:`_Misconfigured` (a 500, :func:`_misconfigured`): as MySQL refusing
        the statement it was a 400 on the pages that show refusals, as if the analyst's input were wrong."""

        def work() -> Any:
            with self.backend.open() as (rules, accounts):
                return func(rules, accounts)

        try:
            return await run_in_threadpool(work)
        except RiskctlError as exc:
            if lacks_privilege(exc):
                raise _Misconfigured(exc) from exc
            raise

    @contextmanager
    def heavy(self) -> Iterator[None]:
        """A slot for a backtest or a replay; :class:`_Busy` when :attr:`max_heavy` are running."""
        if self._heavy >= self.max_heavy:
            msg = f"busy: {self._heavy} backtests or replays are running, at most {self.max_heavy}; try again"
            raise _Busy(msg)
        self._heavy += 1
        try:
            yield
        finally:
            self._heavy -= 1

    @contextmanager
    def validating(self, user: str) -> Iterator[None]:
        """A slot for a validation of ``user``'s; :class:`_Busy` when :attr:`max_validations` are running,
        or :attr:`max_validations_per_user` of the user's. Held until the worker thread is done (a client
        that goes away does not give it back early: anyio waits for the thread before it cancels)."""
        running, mine = sum(self._validating.values()), self._validating.get(user, 0)
        if running >= self.max_validations or mine >= self.max_validations_per_user:
            msg = (
                f"busy: {running} validations are running ({mine} of yours), at most {self.max_validations} "
                f"({self.max_validations_per_user} a user); try again"
            )
            raise _Busy(msg)
        self._validating[user] = mine + 1
        try:
            yield
        finally:
            left = self._validating[user] - 1
            if left:
                self._validating[user] = left
            else:
                del self._validating[user]

    async def check_draft(self, form: dict[str, Any], rule_id: str | None, session: Session) -> Draft:
        """:func:`validate_form` in a worker thread, in one of the :meth:`validating` slots (else
        :class:`_Busy`): a draft's YAML fields may take a second to read, and on the event loop that second
        stalled every request of every user."""
        with self.validating(session.username):
            return await run_in_threadpool(lambda: validate_form(form, rule_id=rule_id))

    def page(
        self, request: Request, name: str, session: Session | None, code: int = 200, **ctx: Any
    ) -> Response:
        nonce = new_token()
        ctx.update(
            feed=self.feed,
            request=request,
            session=session,
            can=lambda action: session is not None and allowed(session.role, action),
            csp_nonce=nonce,
        )
        response = _TEMPLATES.TemplateResponse(request, name, ctx, status_code=code)
        response.headers["content-security-policy"] = PAGE_CSP.format(nonce=nonce)
        return response

    def guarded(
        self, action: str, *, api: bool = False
    ) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
        """Wrap a handler: a session (else 303 to /login, or 401 for an API), the CSRF token on a POST (else
        403), the role's permission for ``action`` (else 403)."""

        def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                token = request.cookies.get(COOKIE)
                # no cookie, or none a session could have: no session, without a MySQL connection and a
                # worker thread (what a request from anyone who is not logged in cost before)
                session = None
                if token and len(token) <= MAX_TOKEN_CHARS:
                    session = await self.db(lambda _r, a: a.session(token))
                if session is None:
                    if api or request.method != "GET":
                        return JSONResponse({"error": "not logged in"}, 401)
                    return RedirectResponse("/login", 303)
                if request.method == "POST":
                    given = request.headers.get("x-csrf-token")
                    if given is None:
                        ctype = request.headers.get("content-type", "")
                        if not ctype.startswith(_FORM_TYPES):
                            return JSONResponse({"error": f"unsupported content type {ctype!r}"}, 415)
                        form = await request.form(
                            max_fields=MAX_FORM_FIELDS, max_files=1, max_part_size=MAX_BODY_BYTES
                        )
                        value = form.get("csrf")
                        given = value if isinstance(value, str) else None
                    if not same_token(given, session.csrf):
                        return JSONResponse({"error": "missing or wrong CSRF token"}, 403)
                if not allowed(session.role, action):
                    message = f"role {session.role!r} may not {action}"
                    if api or request.method != "GET":
                        return JSONResponse({"error": message}, 403)
                    return self.page(request, "error.html", session, 403, message=message)
                return await handler(request, session)

            return endpoint

        return wrap

    async def form(self, request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith(_FORM_TYPES):
            return {}
        form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=1, max_part_size=MAX_BODY_BYTES)
        return dict(form)

    # -- login ---------------------------------------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        token = new_token()
        response = self.page(request, "login.html", None, csrf=token, error=None)
        self._cookie(response, LOGIN_COOKIE, token, max_age=3600)
        return response

    async def login(self, request: Request) -> Response:
        """A user name and password: with the right ones, a session (303 to ``/rules``, its cookie).

        A login is let in only with its audit row. The row (``login``) is written with the session, in one
        transaction (:meth:`~riskctl.console.accounts.AccountStore.open_session`); a wrong password (or an
        unknown name) writes ``login_failed``. When MySQL refuses that write (a trigger's SIGNAL, a value
        strict mode refuses, a privilege the console's account lacks) or cannot take it now (a row lock, a
        deadlock on each try, MySQL away), nobody is logged in and nothing is written: the login form again
        with the name, the status and the reason (:meth:`_login_not_written`: 500 for a refusal, 503 with
        ``Retry-After`` for a lock or MySQL away), and a log line with MySQL's error, in place of the audit
        row. A refusal was the driver's error, a bare 500 with a traceback; MySQL away a plain-text 503.

        Why not let the user in, as a label, a logout or a rule change whose audit row MySQL refuses stands
        (:func:`~riskctl.console.accounts.audit_written`)? Their audit rows come after a change already
        committed, which the console can no longer take back, so it says the truth (written) and logs the
        missing row. A login's change is the session, and it is not written yet when its row is refused: the
        console can still say no. A session the audit log does not show (who logged in, when, from where)
        would act for 8 hours under a name with no record of how it came in, and the audit log is there for
        exactly that; a login refused costs the user nothing but sending it again (or an administrator's
        look at the log). So the policy of a9d18fe stands: no audit row, no session.

        The answer is the same whether the password was right or wrong: without its audit row a login's
        outcome is not told. A wrong password whose audit row failed still counts toward the login limit
        (the password was checked: de2fae9); any other attempt that failed is forgiven (MySQL did not answer
        before the check, or the password was right)."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith(_FORM_TYPES):
            return JSONResponse({"error": f"unsupported content type {ctype!r}"}, 415)
        form = await request.form(max_fields=8, max_files=0, max_part_size=4096)
        csrf, username, password = (form.get(k) for k in ("csrf", "username", "password"))
        if not (isinstance(csrf, str) and same_token(csrf, request.cookies.get(LOGIN_COOKIE))):
            return JSONResponse({"error": "missing or wrong CSRF token"}, 403)
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            return JSONResponse({"error": "username and password are required"}, 400)
        username = username[:64]  # no account has a longer name; bounds the rate limiter's keys too
        client = request.client.host if request.client else "?"
        now = time.monotonic()
        keys = (f"user:{username}", f"ip:{client}")
        # counted as a failure before the password is checked (no await in between): a burst of concurrent
        # guesses is held to the limit too, not all checked against the count before the first one failed
        wait = self.limiter.attempt(keys, now)
        if wait > 0:
            return PlainTextResponse(
                f"too many failed logins: try again in {int(wait) + 1} s",
                429,
                headers={"Retry-After": str(int(wait) + 1)},
            )

        # the audit action the password's check came to ('login_failed': it was wrong, whatever became of
        # the audit row; 'login': right), none while it was not checked
        checked: list[str] = []

        def check(_r: RuleStore, accounts: AccountStore) -> str | None:
            role = accounts.check_login(username, password)
            if role is None:
                checked.append("login_failed")
                # named in a lock's message as open_session names a login's: the answer does not tell which
                accounts.audit(
                    username, "login_failed", None, f"from {client}", what=f"the login of {username!r}"
                )
                return None
            checked.append("login")
            return accounts.open_session(username, detail=f"from {client}")

        try:
            token = await self.db(check)
        except BaseException as exc:
            outcome = checked[0] if checked else None
            if outcome != "login_failed":  # MySQL did not answer before the check, or the password was right
                for key in keys:
                    self.limiter.forgive(key, now)
            answer = self._login_not_written(request, exc, username, client, outcome)
            if answer is None:
                raise
            return answer
        if token is None:
            fresh = new_token()
            response = self.page(
                request, "login.html", None, 401, csrf=fresh, error="wrong user name or password"
            )
            self._cookie(response, LOGIN_COOKIE, fresh, max_age=3600)
            return response
        self.limiter.succeeded(keys[0])
        self.limiter.forgive(keys[1], now)
        response = RedirectResponse("/rules", 303)
        self._cookie(response, COOKIE, token, max_age=8 * 3600)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    def _login_not_written(
        self, request: Request, exc: BaseException, username: str, client: str, outcome: str | None
    ) -> Response | None:
        """The answer to a login whose writes MySQL refused or could not take (see :meth:`login`): the
        login form again, with the name and a fresh CSRF token, the status and the reason; the log line that
        stands in for the audit row. None for an error that is not MySQL's answer (it goes on).

        - a row lock or a deadlock on each try (:class:`~riskctl.errors.StoreBusyError`): 503,
          ``Retry-After``, the store's message, a warning;
        - MySQL away: 503, ``Retry-After``, :data:`_AWAY` (:func:`_log_away`);
        - a privilege the console's MySQL account lacks: 500 saying so (:data:`_MISCONFIGURED`), an error;
        - any other refusal (a trigger's SIGNAL, strict mode, ...:
          :class:`~riskctl.errors.StoreQueryError`): 500 saying MySQL refused to record the login, with the
          error's code, an error. Not retried by itself (MySQL refuses again until an administrator acts),
          hence no ``Retry-After``; not the user's input, hence no 400 or 401.

        MySQL's message goes to the log only, as for a missing privilege: the login page is anyone's, and
        the message may name tables, columns, the account and its host."""
        attempt = f"the login of {username!r} from {client}"
        attempt += {
            "login": " (its audit row and its session; the password was right)",
            "login_failed": " (its audit row: a wrong password or an unknown name, counted toward the limit)",
        }.get(outcome or "", " (the password was not checked)")
        line = "console: %s %s: %s was not written, nobody was logged in: %s"
        where = (request.method, request.url.path, attempt)
        headers: dict[str, str] = {}
        if isinstance(exc, StoreBusyError):
            LOG.warning(line, *where, exc)
            code, error, headers = 503, str(exc), _RETRY_AFTER
        elif isinstance(exc, _DATABASE_AWAY):
            _log_away(request, exc)
            code, error, headers = 503, _AWAY, _RETRY_AFTER
        elif isinstance(exc, _Misconfigured):
            refused = exc.args[0]
            LOG.error(line, *where, f"the console's MySQL account lacks a privilege: {refused}")
            code, error = 500, _MISCONFIGURED.format(code=getattr(refused, "code", "?"))
        elif isinstance(exc, StoreQueryError):
            LOG.error(line, *where, f"MySQL refused it: {exc}")
            code, error = 500, _LOGIN_REFUSED.format(code=exc.code)
        else:
            return None
        fresh = new_token()
        response = self.page(request, "login.html", None, code, csrf=fresh, error=error, username=username)
        self._cookie(response, LOGIN_COOKIE, fresh, max_age=3600)
        response.headers.update(headers)
        return response

    def _cookie(self, response: Response, name: str, value: str, *, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, httponly=True, samesite="strict", secure=self.secure, path="/"
        )

    async def logout(self, request: Request, session: Session) -> Response:
        """The end of the session (303 to ``/login``); its audit row after, logged if refused
        (:func:`~riskctl.console.accounts.audit_written`). When MySQL refuses the end of the session itself
        (a trigger's SIGNAL on the sessions table), the session is still open: the error page says so, with
        MySQL's code, a 500 (the user's request was right; as a login's refused writes), and the cookie is
        kept, since the session it names still acts; an error is logged. It was a bare 500 with a
        traceback."""
        token = request.cookies.get(COOKIE, "")

        def out(_r: RuleStore, accounts: AccountStore) -> None:
            accounts.close_session(token)
            audit_written(accounts, session.username, "logout", None, None, kind="the session")

        try:
            await self.db(out)
        except StoreQueryError as exc:  # a refusal; a lock (StoreBusyError) is the application's 503
            LOG.error(  # noqa: TRY400 - MySQL's message is the reason; a traceback adds nothing
                "console: POST /logout: the session of %s was not ended: MySQL refused it: %s",
                session.username,
                exc,
            )
            message = f"not logged out: MySQL refused to end this session ({exc}); it is still open"
            return self.page(request, "error.html", session, 500, message=message)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    # -- rules ---------------------------------------------------------------------------------------------
    async def rules(self, request: Request, session: Session) -> Response:
        def read(store: RuleStore, _a: AccountStore) -> list[dict[str, Any]]:
            current = store.current()
            status = store.job_status((r.rule_id, r.version) for r in current)
            return [
                {
                    "id": r.rule_id,
                    "version": r.version,
                    "mode": r.status,
                    "action": r.action,
                    "priority": r.document.get("priority", 0),
                    "job": status.get((r.rule_id, r.version)),
                    "updated_by": r.updated_by,
                    "updated_at": r.updated_at,
                }
                for r in current
            ]

        rules = await self.db(read)
        hits = self.feed.hits(_now_ms(), rules=[r["id"] for r in rules])
        return self.page(request, "rules.html", session, rules=rules, hits=hits)

    async def rule(self, request: Request, session: Session) -> Response:
        rule_id = request.path_params["rule_id"]
        before = _int(request.query_params.get("before"))

        def read(store: RuleStore, accounts: AccountStore) -> dict[str, Any] | None:
            current = store.get(rule_id)
            try:
                history, older = store.history_page(rule_id, before=before, limit=HISTORY_PAGE)
            except RiskctlError:
                return None
            pairs = [(e.rule_id, e.version) for e in history]
            if current is not None:
                pairs.append((rule_id, current.version))  # the job's status of it, on every page
            status = store.job_status(pairs)
            return {
                "text": _yaml(current.document) if current else "",
                "current": current,
                "history": history,
                "before": before,
                "older": older,
                "status": status,
                "audit": accounts.audit_log(rule_id, 20),
                "precision": accounts.precision(rule_id),
            }

        data = await self.db(read)
        if data is None:
            return self.page(request, "error.html", session, 404, message=f"no rule {rule_id!r}")
        chart = _chart(self.feed.per_minute(_now_ms(), 60, rule=rule_id))
        hits = self.feed.hits(_now_ms(), rules=[rule_id])[rule_id]
        return self.page(request, "rule.html", session, rule_id=rule_id, chart=chart, hits=hits, **data)

    async def rule_status(self, request: Request, session: Session) -> Response:
        """JSON: the current version of a rule and what the job did with it (the rule page polls it)."""
        rule_id = request.path_params["rule_id"]

        def read(store: RuleStore, _a: AccountStore) -> dict[str, Any]:
            current = store.get(rule_id)
            if current is None:
                return {"id": rule_id, "version": None, "job": None}
            job = store.job_status([(rule_id, current.version)]).get((rule_id, current.version))
            return {"id": rule_id, "version": current.version, "job": job.to_dict() if job else None}

        return JSONResponse(await self.db(read))

    async def diff(self, request: Request, session: Session) -> Response:
        rule_id = request.path_params["rule_id"]
        try:
            a, b = int(request.query_params.get("a", "")), int(request.query_params.get("b", ""))
        except ValueError:
            return self.page(request, "error.html", session, 400, message="a and b must be version numbers")

        def read(store: RuleStore, _a: AccountStore) -> list[str]:
            old, new = store.version(rule_id, a), store.version(rule_id, b)
            old_text, new_text = _yaml(old.document).splitlines(), _yaml(new.document).splitlines()
            return diff_lines(old_text, new_text, f"v{a}", f"v{b}")

        try:
            lines = await self.db(read)
        except RiskctlError as exc:
            return self.page(request, "error.html", session, 404, message=str(exc))
        return self.page(request, "diff.html", session, rule_id=rule_id, a=a, b=b, lines=lines)

    async def change(self, request: Request, session: Session) -> Response:
        """enable / disable / shadow / rollback (approver): a new version, authored by the session's user."""
        rule_id = request.path_params["rule_id"]
        form = await self.form(request)
        op = form.get("op")
        expect = _int(form.get("expect_version"))
        to = _int(form.get("to"))
        modes = {"enable": "active", "disable": "disabled", "shadow": "shadow"}
        if op == "rollback" and not allowed(session.role, "rollback"):
            return JSONResponse({"error": f"role {session.role!r} may not rollback"}, 403)
        if op not in modes and not (op == "rollback" and to is not None):
            return JSONResponse({"error": "op must be enable, disable, shadow or rollback (with to)"}, 400)

        def write(store: RuleStore, accounts: AccountStore) -> Any:
            who = session.username
            if op == "rollback":
                assert to is not None
                change = store.rollback(rule_id, to, author=who, expect_version=expect)
            else:
                change = store.set_status(rule_id, modes[str(op)], author=who, expect_version=expect)
            detail = json.dumps(change.to_dict()) if change else "unchanged"
            audit_written(accounts, who, str(op), rule_id, detail)
            return change

        try:
            await self.db(write)
        except VersionConflictError as exc:
            return self.page(request, "error.html", session, 409, message=str(exc))
        except _BUSY_OR_AWAY as exc:  # another session's row lock, or MySQL away: nothing written
            if isinstance(exc, StoreBusyError):
                message = str(exc)
            else:  # was a 400 (ServiceError is a RiskctlError), as if the analyst had erred
                _log_away(request, exc)
                message = _AWAY
            sent = {k: v for k in ("op", "to", "expect_version") if isinstance(v := form.get(k), str)}
            retry = {"action": request.url.path, "fields": sent}  # the same change again
            response = self.page(request, "error.html", session, 503, message=message, retry=retry)
            response.headers.update(_RETRY_AFTER)
            return response
        except RiskctlError as exc:  # MySQL refused the write (StoreQueryError), no such version, ...
            return self.page(request, "error.html", session, 400, message=str(exc))
        return RedirectResponse(f"/rules/{rule_id}", 303)

    # -- editor --------------------------------------------------------------------------------------------
    async def edit(self, request: Request, session: Session) -> Response:
        rule_id = request.path_params.get("rule_id")
        if rule_id is None:
            fields = dict.fromkeys(FIELDS, "")
            return self.page(
                request, "edit.html", session, rule_id=None, fields=fields, base_version="", errors={}
            )

        def read(store: RuleStore, _a: AccountStore) -> tuple[Any, dict[str, str]] | None:
            current = store.get(rule_id)  # its fields dumped as YAML here too: not on the event loop
            return None if current is None else (current, fields_from_document(current.document))

        found = await self.db(read)
        if found is None:
            return self.page(request, "error.html", session, 404, message=f"no rule {rule_id!r}")
        current, fields = found
        return self.page(
            request,
            "edit.html",
            session,
            rule_id=rule_id,
            fields=fields,
            base_version=current.version,
            errors={},
        )

    async def validate(self, request: Request, session: Session) -> Response:
        """JSON: the errors of a draft, by form field (the editor calls it as you type)."""
        form = await self.form(request)
        try:
            draft = await self.check_draft(form, _str(form.get("rule_id")), session)
        except _Busy as exc:
            return JSONResponse({"ok": False, "busy": True, "error": str(exc)}, 429, headers=_RETRY_SOON)
        return JSONResponse(draft.to_dict())

    async def run_backtest(self, request: Request, session: Session) -> Response:
        form = await self.form(request)
        rule_id = _str(form.get("rule_id"))
        try:
            draft = await self.check_draft(form, rule_id, session)
        except _Busy as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, 429, headers=_RETRY_SOON)
        if not draft.ok:
            return JSONResponse({"ok": False, "errors": draft.errors}, 400)
        try:
            with self.heavy():
                return await self._backtest(form, draft.document, session)
        except _Busy as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, 429, headers=_RETRY_AFTER)

    async def _backtest(self, form: dict[str, Any], document: dict[str, Any], session: Session) -> Response:
        """The draft and the rule's current version over the events of the form's source; JSON.

        Its audit row (``backtest``) is written after the run. When MySQL refuses it (a trigger's SIGNAL,
        1644; a value strict mode refuses), cannot take it now (a lock wait, 1205) or is away, the result is
        shown all the same and the missing row is logged as an error naming the rule, the user and MySQL's
        error (:func:`~riskctl.console.accounts.audit_written`), as for a label, a logout or a rule change;
        it was the driver's error, a bare 500 with a traceback, the result thrown away. Not withheld as a
        login is (no audit row, no session): a login's session would act for hours with no record of how
        it came in, while a backtest writes nothing, grants nothing and has already been run (up to
        :data:`~riskctl.console.backtest.MAX_SECONDS` of the engine on a heavy slot); what it read, the
        rules and the events, a viewer reads unaudited (``/rules``, a user's replay on ``/users``). Sending
        it again would run it again, and MySQL refuses again until an administrator acts."""
        upload = form.get("events")
        minutes = _int(form.get("minutes"))
        if form.get("source") == "topic":
            if minutes is None or not 1 <= minutes <= 1440:
                return JSONResponse({"ok": False, "error": "minutes: a whole number from 1 to 1440"}, 400)
            if self.events is None:
                return JSONResponse({"ok": False, "error": "source: no events topic configured"}, 400)
            read = self.events
            try:
                data = await run_in_threadpool(lambda: read(minutes * 60_000))
            except RiskctlError as exc:
                return JSONResponse({"ok": False, "error": f"source: {exc}"}, 503)
        elif isinstance(upload, UploadFile):
            data = await upload.read(MAX_UPLOAD_BYTES + 1)
        else:
            return JSONResponse({"ok": False, "error": "events: upload a JSON-lines file of events"}, 400)
        rid = str(document["id"])
        current = await self.db(lambda store, _a: store.get(rid))
        decides = self.replay_settings

        def work() -> dict[str, Any]:
            return backtest(document, current.document if current else None, data, settings=decides)

        try:
            result = await run_in_threadpool(work)
        except TimeLimitError as exc:
            return JSONResponse({"ok": False, "error": f"events: {exc}"}, 422)
        except BacktestError as exc:
            return JSONResponse({"ok": False, "error": f"events: {exc}"}, 413)
        who, detail = session.username, f"{result['lines']} lines"
        try:
            await self.db(lambda _r, a: audit_written(a, who, "backtest", rid, detail, done="run"))
        except _DATABASE_AWAY as exc:  # away before the audit row: audit_written logs one lost after
            LOG.error(  # noqa: TRY400 - the reason is in the line, as audit_written's
                "console: backtest of rule %r by %s was run, but its audit row was not (%s): %s",
                rid[:255],
                who,
                exc,
                detail,
            )
        return JSONResponse({"ok": True, **result})

    async def publish(self, request: Request, session: Session) -> Response:
        form = await self.form(request)
        rule_id = _str(form.get("rule_id"))
        try:
            draft = await self.check_draft(form, rule_id, session)
        except _Busy as exc:
            response = self.page(request, "error.html", session, 429, message=str(exc))
            response.headers.update(_RETRY_SOON)
            return response
        base = _int(form.get("base_version"))
        comment = _str(form.get("comment"))
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            draft.add("comment", f"too long: {len(comment)} characters, at most {MAX_COMMENT_CHARS}")
        if not draft.ok:
            return self.page(
                request,
                "edit.html",
                session,
                400,
                rule_id=rule_id,
                fields=draft.fields,
                base_version=form.get("base_version", ""),
                errors=draft.errors,
                comment=comment,
            )
        assert draft.rule is not None
        rule = draft.rule

        def write(store: RuleStore, accounts: AccountStore) -> str:
            items = [i for i in store.plan(RuleSet([rule])).items if i.rule_id == rule.id]
            item = items[0]
            if item.from_version != base:
                raise VersionConflictError(rule.id, base, item.from_version)
            if not item.changes:
                return "unchanged"
            [change] = store.apply(Plan((item,)), author=session.username, comment=comment)
            audit_written(accounts, session.username, "publish", rule.id, json.dumps(change.to_dict()))
            return "written"

        def again(code: int, **reason: str) -> Response:
            """The editor with the draft, base version and comment as sent, to publish again, and why it was
            not written (``busy``: MySQL could not take it now; ``refused``: MySQL refused it)."""
            return self.page(
                request,
                "edit.html",
                session,
                code,
                rule_id=rule_id,
                fields=draft.fields,
                base_version=form.get("base_version", ""),
                errors={},
                comment=comment,
                **reason,
            )

        try:
            await self.db(write)
        except VersionConflictError as exc:
            return self.page(request, "error.html", session, 409, message=str(exc))
        except StoreBusyError as exc:  # another session's row lock: nothing written
            response = again(503, busy=str(exc))
            response.headers.update(_RETRY_AFTER)
            return response
        except _DATABASE_AWAY as exc:  # not where MySQL is: that goes to the log, as for any other request
            _log_away(request, exc)
            response = again(503, busy=_AWAY)
            response.headers.update(_RETRY_AFTER)
            return response
        except RiskctlError as exc:  # MySQL refused the write (StoreQueryError: a trigger, strict mode, ...)
            return again(400, refused=str(exc))
        return RedirectResponse(f"/rules/{rule.id}", 303)

    # -- decisions, users, review --------------------------------------------------------------------------
    async def decisions(self, request: Request, session: Session) -> Response:
        q = request.query_params
        filters = {k: (q.get(k) or "")[:128] or None for k in ("action", "rule", "user")}
        records = self.feed.latest(**filters, limit=200)
        chart = _chart(self.feed.per_minute(_now_ms(), 60))
        return self.page(request, "decisions.html", session, records=records, filters=filters, chart=chart)

    async def user(self, request: Request, session: Session) -> Response:
        """A user's recent decisions and alerts; with ``?minutes=N``, their events of the last N minutes
        (from the events topic) replayed with the current rules, with every feature's value.

        The id is ``/users?id=<id>`` (what the pages link to) or ``/users/<id>``: a user id is any string, and
        a browser resolves the path segments ``.`` and ``..`` (``%2e`` too) before sending the request, so
        ``/users/..`` would be ``/``; a query is never rewritten."""
        user_id = request.path_params.get("user_id")
        if user_id is None:
            user_id = request.query_params.get("id")
        if not user_id:
            return self.page(request, "error.html", session, 404, message="no user id given (/users?id=...)")
        records = self.feed.latest(user=user_id, limit=200)
        raw = request.query_params.get("minutes")
        minutes = _int(raw)
        replayed: list[dict[str, Any]] | None = None
        error = None
        code = 200
        if raw is not None:
            if minutes is None or not 1 <= minutes <= 1440:
                error = "minutes: a whole number from 1 to 1440"
            elif self.events is None:
                error = "no events topic configured"
            else:
                read = self.events
                window = minutes * 60_000
                decides = self.replay_settings

                def work(store: RuleStore, _a: AccountStore) -> list[dict[str, Any]]:
                    documents = [r.document for r in store.current()]
                    return replay_user(documents, user_lines(read(window), user_id), settings=decides)

                try:
                    with self.heavy():
                        replayed = await self.db(work)
                except _Busy as exc:
                    error, code = str(exc), 429
                except TimeLimitError as exc:
                    error, code = f"replay: {exc}", 422
                except RiskctlError as exc:
                    error = str(exc)
        if code == 200 and error and error.startswith("minutes"):
            code = 400
        response = self.page(
            request,
            "user.html",
            session,
            code,
            user_id=user_id,
            records=records,
            replayed=replayed,
            replay_settings=self.replay_settings.to_dict(),
            minutes=minutes or 60,
            error=error,
        )
        if code == 429:
            response.headers.update(_RETRY_AFTER)
        return response

    async def review(self, request: Request, session: Session) -> Response:
        cases = self.feed.cases(200)
        # by their keys, worked out once per case as it was read (an id may have a megabyte)
        labels = await self.db(lambda _r, a: a.labels_by_key({c.key: c.key for c in cases}))
        return self.page(request, "review.html", session, cases=cases, labels=labels)

    async def label(self, request: Request, session: Session) -> Response:
        form = await self.form(request)
        case_id, user_id, label, note = (_str(form.get(k)) for k in ("case_id", "user_id", "label", "note"))
        if case_id is None or label is None:
            return JSONResponse({"error": "case_id and label are required"}, 400)
        # the page posts the case's key (its user in it); a client may post the case's user and whole id. An
        # id alone names no case: another user's event may have the same id, and his case took the label
        case = self.feed.case(case_id if user_id is None else case_key(user_id, case_id))
        if case is None:
            whose = "" if user_id is None else f" of user {user_id[:255]!r}"
            message = f"case_id: no case {case_id[:255]!r}{whose} in the recent decisions"
            return JSONResponse({"error": message}, 404)
        if note is not None and len(note) > 2000:
            return JSONResponse({"error": "note: at most 2000 characters"}, 400)

        def write(_r: RuleStore, accounts: AccountStore) -> None:
            who = session.username
            accounts.label_case(case.case_id, case.rules, case.shadow, case.user_id, label, note, who)
            detail = f"{label}: {note or ''}"[:1000]
            audit_written(accounts, who, "label", case.key, detail, kind="case")  # its user in it

        try:
            await self.db(write)
        except StoreBusyError as exc:  # a row lock kept it out: nothing written, the label to send again
            fields = ("case_id", "user_id", "label", "note")
            sent = {k: v for k in fields if isinstance(v := form.get(k), str)}
            retry = {"action": request.url.path, "fields": sent}
            response = self.page(request, "error.html", session, 503, message=str(exc), retry=retry)
            response.headers.update(_RETRY_AFTER)
            return response
        except StoreQueryError as exc:  # MySQL refused the label (a trigger, strict mode): nothing written
            message = f"the label was not written: {exc}"  # as a status change MySQL refuses (it was a 500)
            return self.page(request, "error.html", session, 400, message=message)
        except ValueError as exc:
            return JSONResponse({"error": f"label: {exc}"}, 400)
        return RedirectResponse("/review", 303)

    async def audit(self, request: Request, session: Session) -> Response:
        entries = await self.db(lambda _r, a: a.audit_log(None, 200))
        return self.page(request, "audit.html", session, entries=entries)

    async def home(self, request: Request, session: Session) -> Response:
        return RedirectResponse("/rules", 303)


def _now_ms() -> int:
    return int(time.time() * 1000)


_COLORS = {"REJECT": "#b42318", "REVIEW": "#b7791f", "PASS": "#17753a", "ALERT": "#6941c6", "hits": "#1d4ed8"}


def _chart(series: dict[str, list[int]], width: int = 720, height: int = 160) -> dict[str, Any]:
    """Polylines of per-minute counts (oldest first) for an inline SVG: no chart library, no script."""
    top = max((max(v) for v in series.values()), default=0) or 1
    lines = []
    for key, values in sorted(series.items()):
        step = width / max(1, len(values) - 1)
        points = " ".join(
            f"{i * step:.1f},{height - v * (height - 10) / top:.1f}" for i, v in enumerate(values)
        )
        lines.append({"key": key, "points": points, "color": _COLORS.get(key, "#555"), "total": sum(values)})
    return {"width": width, "height": height, "top": top, "lines": lines}


#: lines of the part two versions differ in (between their common first and last lines) that a diff matches
#: line by line: difflib is quadratic in them (0.19 s for 1,000 changed lines, 2.6 s for 4,000), and a valid
#: rule dumps to tens of thousands of lines (a 64 KiB list of tags, one a line): one diff of two such
#: versions, which any viewer may ask for again and again, held a worker thread and the CPU for minutes.
#: When the lines of the two sides multiplied are more than its square, the whole part is shown removed then
#: added (lines only added or only removed: difflib's diff, at any size)
MAX_DIFF_LINES = 1000


def diff_lines(old: list[str], new: list[str], old_name: str, new_name: str) -> list[str]:
    """A unified diff of ``old`` and ``new``: difflib's when the lines between their common first and last
    lines, of one side times the other, are at most :data:`MAX_DIFF_LINES` squared, else one hunk with those
    lines of ``old`` removed and those of ``new`` added (linear time)."""
    same = min(len(old), len(new))
    start = 0
    while start < same and old[start] == new[start]:
        start += 1
    end = 0
    while end < same - start and old[len(old) - 1 - end] == new[len(new) - 1 - end]:
        end += 1
    if (len(old) - start - end) * (len(new) - start - end) <= MAX_DIFF_LINES**2:
        return list(difflib.unified_diff(old, new, old_name, new_name, lineterm=""))
    lo = max(0, start - 3)
    old_hi, new_hi = min(len(old), len(old) - end + 3), min(len(new), len(new) - end + 3)
    return [
        f"--- {old_name}",
        f"+++ {new_name}",
        f"@@ -{lo + 1},{old_hi - lo} +{lo + 1},{new_hi - lo} @@ (over {MAX_DIFF_LINES} lines changed)",
        *(" " + line for line in old[lo:start]),
        *("-" + line for line in old[start : len(old) - end]),
        *("+" + line for line in new[start : len(new) - end]),
        *(" " + line for line in old[len(old) - end : old_hi]),
    ]


def _yaml(document: Any) -> str:
    import yaml

    shown = {k: v for k, v in document.items() if k != "version"} if isinstance(document, dict) else document
    return str(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True))


def _int(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 9:
        return int(value.strip())
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def _security_headers(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(name.lower() == b"content-security-policy" for name, _ in headers):
                headers.append((b"content-security-policy", OTHER_CSP.encode()))
            headers += [
                (b"x-frame-options", b"DENY"),
                (b"x-content-type-options", b"nosniff"),
                (b"referrer-policy", b"same-origin"),
                (b"cache-control", b"no-store"),
            ]
            message = {**message, "headers": headers}
        await send(message)

    await app(scope, receive, sending)


class _Headers:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _security_headers(self.app, scope, receive, send)


def create_app(
    backend: Backend,
    *,
    secure_cookies: bool,
    limiter: RateLimiter | None = None,
    feed: Feed | None = None,
    events: Callable[[int], bytes] | None = None,
    max_heavy: int = MAX_HEAVY,
    max_validations: int = MAX_VALIDATIONS,
    max_validations_per_user: int = MAX_VALIDATIONS_PER_USER,
    body_timeout_s: float = BODY_TIMEOUT_S,
    replay_settings: ReplaySettings = JOB_DEFAULTS,
) -> ASGIApp:
    """The console as an ASGI application; ``feed``: the decisions and alerts it shows (empty if None);
    ``events(window_ms)``: the recent events as JSON lines, for backtests (None: uploads only); ``max_heavy``:
    backtests and replays at once (:data:`MAX_HEAVY`); ``max_validations``, ``max_validations_per_user``:
    validations of drafts at once (:data:`MAX_VALIDATIONS`, :data:`MAX_VALIDATIONS_PER_USER`);
    ``body_timeout_s``: the time a request body has to arrive (:data:`BODY_TIMEOUT_S`); ``replay_settings``:
    how backtests and user replays decide, the job's settings (``ReplaySettings.of(settings.job)``; the
    defaults if not given). Connections are bounded by the server (:mod:`riskctl.console.server`)."""
    c = Console(
        backend,
        secure_cookies=secure_cookies,
        limiter=limiter,
        feed=feed,
        events=events,
        max_heavy=max_heavy,
        max_validations=max_validations,
        max_validations_per_user=max_validations_per_user,
        replay_settings=replay_settings,
    )
    g = c.guarded
    routes = [
        Route("/login", c.login_page, methods=["GET"]),
        Route("/login", c.login, methods=["POST"]),
        Route("/logout", g("view")(c.logout), methods=["POST"]),
        Route("/", g("view")(c.home), methods=["GET"]),
        Route("/rules", g("view")(c.rules), methods=["GET"]),
        Route("/rules/new", g("draft")(c.edit), methods=["GET"]),
        Route("/audit", g("view")(c.audit), methods=["GET"]),
        Route("/decisions", g("view")(c.decisions), methods=["GET"]),
        Route("/users", g("view")(c.user), methods=["GET"]),
        Route("/users/{user_id:path}", g("view")(c.user), methods=["GET"]),
        Route("/review", g("view")(c.review), methods=["GET"]),
        Route("/review/label", g("label")(c.label), methods=["POST"]),
        Route("/api/validate", g("draft", api=True)(c.validate), methods=["POST"]),
        Route("/api/backtest", g("draft", api=True)(c.run_backtest), methods=["POST"]),
        Route("/rules/publish", g("publish")(c.publish), methods=["POST"]),
        Route("/rules/{rule_id}", g("view")(c.rule), methods=["GET"]),
        Route("/rules/{rule_id}/diff", g("view")(c.diff), methods=["GET"]),
        Route("/rules/{rule_id}/edit", g("draft")(c.edit), methods=["GET"]),
        Route("/rules/{rule_id}/change", g("set_status")(c.change), methods=["POST"]),
        Route("/api/rules/{rule_id}/status", g("view", api=True)(c.rule_status), methods=["GET"]),
    ]
    handlers: dict[Any, Any] = dict.fromkeys(_DATABASE_AWAY, _database_away)
    handlers |= {StoreBusyError: _store_busy, _Misconfigured: _misconfigured}
    app = Starlette(routes=routes, exception_handlers=handlers)
    return _Headers(BodyLimit(app, MAX_BODY_BYTES, body_timeout_s))


def _database_errors() -> tuple[type[BaseException], ...]:
    import pymysql

    return (ServiceError, pymysql.err.OperationalError, pymysql.err.InterfaceError)


#: what MySQL being away (down, restarting, unreachable, the connection lost mid-request) raises
_DATABASE_AWAY = _database_errors()


#: what a write that MySQL could not take now raises: a 503, the form kept to send again
_BUSY_OR_AWAY: tuple[type[BaseException], ...] = (StoreBusyError, *_DATABASE_AWAY)
_AWAY = "the rules database (MySQL) is not answering: try again in a few seconds"


def _log_away(request: Request, exc: BaseException) -> None:
    """The log line of a request that found MySQL away (its address stays here, not in the answer): at most
    one every LOG_EVERY_S under ``riskctl console``, with the count of those held back
    (:func:`riskctl.console.server.quiet_logs`)."""
    LOG.warning("console: %s %s: MySQL is away: %s", request.method, request.url.path, exc)


async def _database_away(request: Request, exc: Exception) -> Response:
    """503 with a plain reason (not the server's address: that stays in the log, :func:`_log_away`) instead of
    a bare 500; one log line per request flooded the log while MySQL was away."""
    _log_away(request, exc)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"ok": False, "error": _AWAY}, 503, headers=_RETRY_AFTER)
    return PlainTextResponse(_AWAY, 503, headers=_RETRY_AFTER)


async def _store_busy(request: Request, exc: Exception) -> Response:
    """503 with the reason and a Retry-After, for a request MySQL's row locks kept out whose page has no
    answer of its own for it (a logout, a session's audit row): the analyst sends it again."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"ok": False, "error": str(exc)}, 503, headers=_RETRY_AFTER)
    return PlainTextResponse(str(exc), 503, headers=_RETRY_AFTER)


#: what a request refused for a missing privilege answers (MySQL's message, naming the account and the
#: table, goes to the log only, as the address of a MySQL away does)
_MISCONFIGURED = (
    "the console's MySQL account lacks a privilege this needs (MySQL error {code}): the server is "
    "misconfigured, not your input; the console's log has MySQL's message for the administrator"
)


#: what a login answers when MySQL refused to write it (its audit row, or its session): a trigger's SIGNAL, a
#: value strict mode refuses (MySQL's message goes to the log only)
_LOGIN_REFUSED = (
    "not logged in: MySQL refused to record this login (MySQL error {code}), and the console lets nobody in "
    "whose login its audit log does not show. Nothing was written; the console's log has MySQL's message "
    "for the administrator"
)


async def _misconfigured(request: Request, exc: Exception) -> Response:
    """500: the console's MySQL account lacks a privilege (a server's misconfiguration), logged with MySQL's
    message as an error."""
    refused = exc.args[0]
    LOG.error(  # noqa: TRY400 - MySQL's message is the reason; a traceback adds nothing
        "console: %s %s: the console's MySQL account lacks a privilege: %s",
        request.method,
        request.url.path,
        refused,
    )
    message = _MISCONFIGURED.format(code=getattr(refused, "code", "?"))
    if request.url.path.startswith("/api/"):
        return JSONResponse({"ok": False, "error": message}, 500)
    return PlainTextResponse(message, 500)
