"""The console over HTTP (Starlette's TestClient) on the real MySQL, uuid-named tables: every role on every
action, CSRF, sessions, the login rate limit, hostile bodies, the audit trail.

No browser here (tests/integration/test_console.py drives Chromium); these run in a few seconds.
"""

from __future__ import annotations

import html
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from riskctl.config import Settings
from riskctl.console.accounts import AccountStore
from riskctl.console.app import Backend, create_app
from riskctl.console.security import RateLimiter
from riskctl.store.connection import connect
from riskctl.store.migrations import drop_store, table_names
from riskctl.store.rules_store import RuleStore
from tests.helpers import free_port, serve_in_thread

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"  # noqa: S105 - a test account's
RULE = {"id": "big_amount", "action": "REVIEW", "priority": 5, "when": "event.amount > 1000"}
EVENTS = (
    b'{"event_id": "e1", "user_id": "alice", "type": "transfer", "ts": 1700000000000, "amount": 500}\n'
    b'{"event_id": "e2", "user_id": "bob", "type": "transfer", "ts": 1700000001000, "amount": 5000}\n'
    b'{"event_id": "e3", "user_id": "carol", "type": "transfer", "ts": 1700000002000, "amount": 1500}\n'
    b"not json\n"
)


@pytest.fixture
def env(stack: Settings) -> Iterator[dict[str, Any]]:
    table = f"c{uuid.uuid4().hex[:10]}_rules"
    conn = connect(stack)
    store = RuleStore(conn, table)
    accounts = AccountStore(conn, table)
    for role in ("viewer", "analyst", "approver"):
        accounts.add_user(role, role, PASSWORD)
    store.apply(store.plan(_ruleset(RULE)), author="setup")
    backend = Backend(lambda: connect(stack), table)
    yield {"backend": backend, "store": store, "accounts": accounts, "table": table}
    drop_store(conn, table)
    conn.close()


def _ruleset(doc: dict[str, Any]) -> Any:
    from riskctl.core.rules import RuleSet, parse_rule

    return RuleSet([parse_rule(doc)])


def _client(env: dict[str, Any], limiter: RateLimiter | None = None) -> TestClient:
    return TestClient(
        create_app(env["backend"], secure_cookies=False, limiter=limiter), follow_redirects=False
    )


def _login(client: TestClient, user: str, password: str = PASSWORD) -> tuple[Any, str | None]:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    resp = client.post("/login", data={"csrf": token.group(1), "username": user, "password": password})
    if resp.status_code != 303:
        return resp, None
    rules = client.get("/rules")
    csrf = re.search(r"const CSRF = \"([^\"]+)\"", rules.text)
    assert csrf
    return resp, csrf.group(1)


def _form(**extra: str) -> dict[str, str]:
    return {
        "rule_id": "big_amount",
        "action": "REJECT",
        "priority": "5",
        "when": "event.amount > 2000",
        **extra,
    }


# action -> (method, path, form builder); every action of PERMISSIONS that has a route
ACTIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "view": ("GET", "/rules/big_amount", {}),
    "draft": ("POST", "/api/validate", _form()),
    "set_status": ("POST", "/rules/big_amount/change", {"op": "shadow"}),
    "rollback": ("POST", "/rules/big_amount/change", {"op": "rollback", "to": "1"}),
    "publish": ("POST", "/rules/publish", _form(base_version="1")),
}
EXPECTED = {  # role -> the actions it may do
    "viewer": {"view"},
    "analyst": {"view", "draft"},
    "approver": {"view", "draft", "set_status", "rollback", "publish"},
}


@pytest.mark.parametrize("role", ["viewer", "analyst", "approver"])
@pytest.mark.parametrize("action", list(ACTIONS))
def test_each_role_on_each_action(env: dict[str, Any], role: str, action: str) -> None:
    if action == "rollback":  # needs a version 2 to roll back from
        env["store"].set_status("big_amount", "disabled", author="setup")
    client = _client(env)
    _, csrf = _login(client, role)
    method, path, data = ACTIONS[action]
    before = env["store"].get("big_amount").version
    if method == "GET":
        resp = client.get(path)
    else:
        resp = client.post(path, data={**data, "csrf": csrf or ""})
    after = env["store"].get("big_amount")
    if action in EXPECTED[role]:
        assert resp.status_code in (200, 303), resp.text
        if action in ("set_status", "rollback", "publish"):
            assert after.version == before + 1
            assert after.updated_by == role  # who, in the rules store's history too
            log = env["accounts"].audit_log("big_amount")
            assert log[0]["user"] == role and log[0]["at"] is not None
    else:
        assert resp.status_code == 403, resp.text
        assert after.version == before


def test_no_page_or_api_without_a_session(env: dict[str, Any]) -> None:
    client = _client(env)
    for path in (
        "/",
        "/rules",
        "/rules/big_amount",
        "/rules/big_amount/diff?a=1&b=1",
        "/rules/new",
        "/audit",
    ):
        resp = client.get(path)
        assert resp.status_code == 303 and resp.headers["location"] == "/login", path
    assert client.get("/api/rules/big_amount/status").status_code == 401
    for path in ("/api/validate", "/api/backtest", "/rules/publish", "/rules/big_amount/change", "/logout"):
        assert client.post(path, data={"csrf": "x"}).status_code == 401, path
    # a made-up or oversized cookie is no session
    client.cookies.set("riskctl_console", "A" * 5000)
    assert client.get("/rules").status_code == 303


@pytest.mark.parametrize("token", [None, "", "wrong", "A" * 43])
def test_csrf_missing_or_wrong_is_403(env: dict[str, Any], token: str | None) -> None:
    client = _client(env)
    _, csrf = _login(client, "approver")
    data: dict[str, str] = {"op": "disable"}
    if token is not None:
        data["csrf"] = token
    resp = client.post("/rules/big_amount/change", data=data)
    assert resp.status_code == 403
    assert env["store"].get("big_amount").version == 1
    headers = {} if token is None else {"X-CSRF-Token": token}
    assert client.post("/api/validate", data=_form(), headers=headers).status_code == 403
    # the right token works (the test can fail the other way)
    assert (
        client.post("/rules/big_amount/change", data={"op": "disable", "csrf": csrf or ""}).status_code == 303
    )
    assert env["store"].get("big_amount").status == "disabled"


def test_login_form_needs_its_csrf_token(env: dict[str, Any]) -> None:
    client = _client(env)
    resp = client.post("/login", data={"csrf": "forged", "username": "approver", "password": PASSWORD})
    assert resp.status_code == 403


def test_login_rate_limit(env: dict[str, Any]) -> None:
    client = _client(env, RateLimiter(max_failures=3, window_s=60))
    for _ in range(3):
        resp, _csrf = _login(client, "analyst", "wrong password!")
        assert resp.status_code == 401
    resp, _csrf = _login(client, "analyst")  # the right password, but locked out now
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) > 0
    failed = [e for e in env["accounts"].audit_log(None, 20) if e["action"] == "login_failed"]
    assert len(failed) == 3


def test_session_cookie_flags(env: dict[str, Any]) -> None:
    client = _client(env)
    resp, _ = _login(client, "viewer")
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    secure = TestClient(
        create_app(env["backend"], secure_cookies=True), base_url="https://testserver", follow_redirects=False
    )
    resp, _ = _login(secure, "viewer")
    assert "Secure" in resp.headers["set-cookie"]


def test_logout_ends_the_session(env: dict[str, Any]) -> None:
    client = _client(env)
    _, csrf = _login(client, "viewer")
    assert client.get("/rules").status_code == 200
    assert client.post("/logout", data={"csrf": csrf or ""}).status_code == 303
    client.cookies.clear()
    assert client.get("/rules").status_code == 303


def test_validate_puts_errors_at_the_field(env: dict[str, Any]) -> None:
    client = _client(env)
    _, csrf = _login(client, "analyst")
    headers = {"X-CSRF-Token": csrf or ""}
    bad = client.post("/api/validate", data=_form(action="REJCT", when="event.amount > "), headers=headers)
    errors = bad.json()["errors"]
    assert set(errors) >= {"action", "when"}
    assert "REJECT" in " ".join(errors["action"])  # did you mean
    feats = client.post(
        "/api/validate", data=_form(features="fails: {kind: count, window: 5 parsecs}"), headers=headers
    )
    assert "features" in feats.json()["errors"]
    yaml_bad = client.post("/api/validate", data=_form(features="a: [1, 2"), headers=headers)
    assert "features" in yaml_bad.json()["errors"]
    good = client.post("/api/validate", data=_form(), headers=headers)
    assert good.json() == {"ok": True, "errors": {}}


def test_publish_refuses_an_invalid_draft_and_a_stale_base(env: dict[str, Any]) -> None:
    client = _client(env)
    _, csrf = _login(client, "approver")
    bad = client.post("/rules/publish", data={**_form(action="NOPE", base_version="1"), "csrf": csrf or ""})
    assert (
        bad.status_code == 400
        and 'id="err-action"' in bad.text
        and "NOPE" not in bad.text.split("err-action")[0][-5:]
    )
    assert env["store"].get("big_amount").version == 1
    stale = client.post("/rules/publish", data={**_form(base_version="7"), "csrf": csrf or ""})
    assert stale.status_code == 409
    new = client.post(
        "/rules/publish",
        data={"csrf": csrf or "", "id": "night_login", "action": "REVIEW", "when": "event.type == 'login'"},
    )
    assert new.status_code == 303 and new.headers["location"] == "/rules/night_login"
    stored = env["store"].get("night_login")
    assert stored.version == 1 and stored.updated_by == "approver"


def test_backtest_compares_draft_and_current(env: dict[str, Any]) -> None:
    client = _client(env)
    _, csrf = _login(client, "analyst")
    files = {"events": ("events.jsonl", EVENTS, "application/x-ndjson")}
    resp = client.post("/api/backtest", data=_form(), files=files, headers={"X-CSRF-Token": csrf or ""})
    out = resp.json()
    assert resp.status_code == 200, out
    assert out["draft"]["hits"] == 1 and out["draft"]["top_users"] == [{"user": "bob", "hits": 1}]
    assert out["current"]["hits"] == 2  # amount > 1000: bob and carol
    assert out["only_current"] == ["5:carol:event:e3"] and out["only_draft"] == []
    assert out["draft"]["bad_lines"] == 1
    none = client.post("/api/backtest", data=_form(), headers={"X-CSRF-Token": csrf or ""})
    assert none.status_code == 400 and "events" in none.json()["error"]


def test_hostile_bodies(env: dict[str, Any]) -> None:
    client = _client(env)
    _, csrf = _login(client, "approver")
    headers = {"X-CSRF-Token": csrf or ""}
    huge = client.post(
        "/api/validate",
        content=b"x" * (9 * 1024 * 1024),
        headers={**headers, "content-type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413
    wrong_type = client.post(
        "/rules/big_amount/change",
        content=json.dumps({"op": "disable"}),
        headers={"content-type": "application/json"},
    )
    assert wrong_type.status_code == 415
    long_field = client.post("/api/validate", data=_form(when="1 > 0 and " * 10_000), headers=headers)
    assert long_field.status_code == 200 and "when" in long_field.json()["errors"]
    deep = client.post("/api/validate", data=_form(features="[" * 200 + "]" * 200), headers=headers)
    assert deep.status_code == 200 and "features" in deep.json()["errors"]
    bad_utf8 = client.post(
        "/api/validate",
        content=b"action=%FF%FE&when=x",
        headers={**headers, "content-type": "application/x-www-form-urlencoded"},
    )
    assert bad_utf8.status_code < 500
    huge_number = client.post("/api/validate", data=_form(priority="9" * 5000), headers=headers)
    assert huge_number.status_code == 200 and "priority" in huge_number.json()["errors"]
    bad_diff = client.get("/rules/big_amount/diff?a=x&b=1")
    assert bad_diff.status_code == 400
    missing = client.get("/rules/big_amount/diff?a=1&b=99")
    assert missing.status_code == 404
    assert client.get("/rules/nope").status_code == 404


def test_cli_user_add(stack: Settings) -> None:
    """``riskctl console user add``, run as a user runs it: the password from the environment or a prompt,
    never echoed; a bad role or a short password refused with exit 2; the account logs in."""
    import os
    import subprocess
    import sys

    table = f"u{uuid.uuid4().hex[:10]}_rules"
    env = {**os.environ, "RISKCTL_JOB_RULES_TABLE": table, "RISKCTL_CONSOLE_PASSWORD": PASSWORD}
    cmd = [sys.executable, "-m", "riskctl.cli.main", "console", "user", "add"]
    conn = connect(stack)
    try:
        made = subprocess.run(
            [*cmd, "ann", "--role", "approver"], env=env, capture_output=True, text=True, timeout=60
        )
        assert made.returncode == 0 and "created user ann (approver)" in made.stdout, made.stderr
        assert PASSWORD not in made.stdout + made.stderr
        del env["RISKCTL_CONSOLE_PASSWORD"]
        prompt = f"{PASSWORD}2\n{PASSWORD}2\n"
        reset = subprocess.run(
            [*cmd, "ann", "--role", "viewer"],
            env=env,
            input=prompt,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reset.returncode == 0 and "updated user ann (viewer)" in reset.stdout, reset.stderr
        assert PASSWORD not in reset.stdout + reset.stderr
        short = subprocess.run(
            [*cmd, "bob", "--role", "viewer"],
            env=env,
            input="short\nshort\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert short.returncode == 2 and "too short" in short.stderr
        accounts = AccountStore(conn, table)
        assert accounts.users() == [("ann", "viewer")]
        assert accounts.check_login("ann", f"{PASSWORD}2") == "viewer"
        assert accounts.check_login("ann", PASSWORD) is None
        assert [e["action"] for e in accounts.audit_log("ann")] == ["user_update", "user_add"]
    finally:
        drop_store(conn, table)
        conn.close()


def _feed() -> Any:
    import time

    from riskctl.console.feed import Feed

    now = int(time.time() * 1000)

    def review(eid: str, user: str, shadow: list[str]) -> dict[str, Any]:
        def fired(rule: str) -> dict[str, Any]:
            return {"id": rule, "version": 1, "action": "REVIEW", "evidence": {}}

        return {"kind": "decision", "event_id": eid, "user_id": user, "type": "transfer", "ts": now,
                "action": "REVIEW", "rules": [fired("big_amount")],
                "shadow": [fired(s) for s in shadow]}  # fmt: skip

    feed = Feed()
    feed.add([(review("e1", "bob", ["night"]), now), (review("e2", "carol", []), now)])
    feed.add([({"kind": "decision", "event_id": "e3", "user_id": "dan", "type": "login", "ts": now,
                "action": "PASS", "rules": [], "shadow": []}, now)])  # fmt: skip
    return feed


def test_review_labels_change_precision(env: dict[str, Any]) -> None:
    client = TestClient(
        create_app(env["backend"], secure_cookies=False, feed=_feed()), follow_redirects=False
    )
    _, csrf = _login(client, "analyst")
    page = client.get("/review")
    assert page.status_code == 200 and "decision:e1" in page.text and "decision:e3" not in page.text
    rule = client.get("/rules/big_amount").text
    assert re.search(r'data-mode="active">.*?<td class="value">—', rule, re.S)
    hits = client.get("/rules").text
    assert re.search(r'data-rule="big_amount">.*?decisions\?rule=big_amount">2<', hits, re.S)

    from riskctl.store.migrations import case_key

    for user, label in (("bob", "fraud"), ("carol", "legitimate")):
        key = case_key(user, "decision:e1" if user == "bob" else "decision:e2")  # what the page posts
        resp = client.post(
            "/review/label", data={"csrf": csrf or "", "case_id": key, "label": label, "note": "n"}
        )
        assert resp.status_code == 303, resp.text
    precision = env["accounts"].precision("big_amount")
    assert precision["active"] == {"fraud": 1, "legitimate": 1, "labelled": 2, "precision": 0.5}
    assert env["accounts"].precision("night")["shadow"]["precision"] == 1.0
    assert re.search(
        r'data-mode="active">.*?<td class="value">50%', client.get("/rules/big_amount").text, re.S
    )
    # relabel: replaces, does not add
    relabel = {"csrf": csrf or "", "case_id": "decision:e2", "user_id": "carol", "label": "fraud"}
    client.post("/review/label", data=relabel)
    assert env["accounts"].precision("big_amount")["active"]["precision"] == 1.0

    bad = client.post("/review/label", data={**relabel, "label": "maybe"})
    assert bad.status_code == 400 and "label" in bad.json()["error"]
    gone = client.post("/review/label", data={**relabel, "case_id": "decision:zz"})
    assert gone.status_code == 404
    alone = client.post(
        "/review/label", data={"csrf": csrf or "", "case_id": "decision:e2", "label": "fraud"}
    )
    assert alone.status_code == 404  # an id without its user names no case
    elsewhere = client.post("/review/label", data={**relabel, "user_id": "bob"})
    assert elsewhere.status_code == 404  # bob has no e2
    long_note = client.post(
        "/review/label",
        data={**relabel, "note": "x" * 3000},
    )
    assert long_note.status_code == 400

    viewer = TestClient(
        create_app(env["backend"], secure_cookies=False, feed=_feed()), follow_redirects=False
    )
    _, vcsrf = _login(viewer, "viewer")
    denied = viewer.post("/review/label", data={**relabel, "csrf": vcsrf or "", "label": "legitimate"})
    assert denied.status_code == 403


def test_decisions_view_filters(env: dict[str, Any]) -> None:
    client = TestClient(
        create_app(env["backend"], secure_cookies=False, feed=_feed()), follow_redirects=False
    )
    _login(client, "viewer")
    everything = client.get("/decisions").text
    assert all(user in everything for user in ("bob", "carol", "dan")) and "actions-chart" in everything
    only_pass = client.get("/decisions?action=PASS").text
    assert "dan" in only_pass and "carol" not in only_pass
    by_rule = client.get("/decisions?rule=night").text
    assert "bob" in by_rule and "carol" not in by_rule
    user = client.get("/users/carol").text
    assert "carol" in user and "bob" not in user
    hostile = _feed()
    hostile.add([({"kind": "decision", "event_id": "<b>e9</b>", "user_id": "<script>alert(1)</script>",
                   "type": "login", "ts": 1, "action": "PASS", "rules": [], "shadow": []}, 1)])  # fmt: skip
    escaped = TestClient(
        create_app(env["backend"], secure_cookies=False, feed=hostile), follow_redirects=False
    )
    _login(escaped, "viewer")
    page = escaped.get("/decisions").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>e9</b>" not in page
    long_filter = client.get("/decisions?user=" + "x" * 30_000)
    assert (
        long_filter.status_code == 200
        and "No decisions in the buffer matching the filters" in long_filter.text
    )


def test_rule_status_api_reports_what_the_job_did(env: dict[str, Any]) -> None:
    """The rule page's poll: "not seen" until the job writes rule_status, then its state and time."""
    client = _client(env)
    _login(client, "viewer")
    first = client.get("/api/rules/big_amount/status").json()
    assert first == {"id": "big_amount", "version": 1, "job": None}
    store = env["store"]
    with store.conn.cursor() as cur:  # what the job writes when it applies a version
        cur.execute(
            f"INSERT INTO {store.names.quoted()['status']} (rule_id, version, state) VALUES (%s, %s, %s)",  # noqa: S608
            ("big_amount", 1, "accepted"),
        )
    store.conn.commit()
    job = client.get("/api/rules/big_amount/status").json()["job"]
    assert job["state"] == "accepted" and job["seen_at"].endswith("Z")
    assert 'class="accepted"' in client.get("/rules").text
    assert client.get("/api/rules/nope/status").json() == {"id": "nope", "version": None, "job": None}


def test_kafka_tail_fills_the_feed(stack: Settings, topic: Any) -> None:
    """The console's reader of the decisions and alerts topics: records produced after (and shortly before)
    it starts reach the feed; a missing topic is reported, not raised."""
    import time

    from riskctl.console.feed import Feed, KafkaTail
    from riskctl.sim.kafka_io import producer

    decisions, alerts = topic("dec"), topic("alr")
    prod = producer(stack.kafka_bootstrap)
    before = {"kind": "decision", "event_id": "e0", "user_id": "u0", "ts": 1, "action": "REVIEW",
              "rules": [{"id": "r1"}], "shadow": []}  # fmt: skip
    prod.send(decisions, key="u0", value=before)
    prod.flush()
    feed = Feed()
    tail = KafkaTail(feed, stack.kafka_bootstrap, [decisions, alerts]).start()
    try:
        after = {"kind": "alert", "alert_id": "a1", "user_id": "u1", "ts": 2, "reason": "timer",
                 "rule": {"id": "r2"}, "shadow": False}  # fmt: skip
        prod.send(alerts, key="u1", value=after)
        prod.flush()
        deadline = time.monotonic() + 30
        while len(feed.latest()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {c.case_id for c in feed.cases()} == {"decision:e0", "alert:a1"}
        assert feed.connected and feed.error is None
        assert set(feed.hits(int(time.time() * 1000))) == {"r1", "r2"}
    finally:
        tail.stop()
        prod.close()
    broken = Feed()
    missing = KafkaTail(broken, stack.kafka_bootstrap, [f"test-missing-{uuid.uuid4().hex[:8]}"]).start()
    try:
        deadline = time.monotonic() + 20
        while broken.error is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert broken.error is not None and "do not exist" in broken.error
    finally:
        missing.stop()


def test_backtest_over_the_events_topic(env: dict[str, Any], stack: Settings, topic: Any) -> None:
    """A backtest over the last minutes of a real events topic: the same counts as over the same events
    uploaded; a bad window or a missing topic is a clear error."""
    from riskctl.console.backtest import read_topic_window
    from riskctl.sim.kafka_io import producer

    events = topic("events")
    prod = producer(stack.kafka_bootstrap)
    for line in EVENTS.splitlines():
        if line.startswith(b"{"):
            prod.send(events, value=json.loads(line))
    prod.send(events, value=[1, 2])  # not an object: refused at the door, counted
    prod.flush()
    prod.close()

    def read(window_ms: int) -> bytes:
        return read_topic_window(stack.kafka_bootstrap, events, window_ms)

    client = TestClient(create_app(env["backend"], secure_cookies=False, events=read), follow_redirects=False)
    _, csrf = _login(client, "analyst")
    headers = {"X-CSRF-Token": csrf or ""}
    resp = client.post("/api/backtest", data=_form(source="topic", minutes="5"), headers=headers)
    out = resp.json()
    assert resp.status_code == 200, out
    assert out["lines"] == 4 and out["draft"]["hits"] == 1 and out["current"]["hits"] == 2
    assert out["draft"]["bad_lines"] == 1
    for minutes in ("0", "1441", "x", ""):
        bad = client.post("/api/backtest", data=_form(source="topic", minutes=minutes), headers=headers)
        assert bad.status_code == 400 and bad.json()["error"].startswith("minutes"), minutes
    # the user page's replay reads the same topic: bob's one event, decided by the current rules
    replayed = client.get("/users/bob?minutes=5")
    assert replayed.status_code == 200 and 'data-event="e2"' in replayed.text
    assert 'data-event="e1"' not in replayed.text  # alice's
    assert client.get("/users/bob?minutes=0").status_code == 400

    def missing(window_ms: int) -> bytes:
        return read_topic_window(stack.kafka_bootstrap, f"test-none-{uuid.uuid4().hex[:8]}", window_ms)

    broken = TestClient(
        create_app(env["backend"], secure_cookies=False, events=missing), follow_redirects=False
    )
    _, csrf2 = _login(broken, "analyst")
    gone = broken.post(
        "/api/backtest", data=_form(source="topic", minutes="5"), headers={"X-CSRF-Token": csrf2 or ""}
    )
    assert gone.status_code == 503 and "does not exist" in gone.json()["error"]


@dataclass
class _ConsoleProcess:
    proc: Any
    port: int
    table: str
    conn: Any
    err: str = ""  # its standard error, once it stopped


@contextmanager
def _riskctl_console(stack: Settings, **settings: str) -> Iterator[_ConsoleProcess]:
    """``riskctl console`` as a user starts it, on a free port and a rules table of its own (and the
    environment's ``settings``), once it answers ``/login``; stopped with Ctrl-C (SIGINT) after, its table
    dropped."""
    import os
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    table = f"s{uuid.uuid4().hex[:10]}_rules"
    env = {**os.environ, **settings, "RISKCTL_JOB_RULES_TABLE": table}
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "riskctl.cli.main", "console", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    console = _ConsoleProcess(proc, port, table, connect(stack))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _ask(port, b"GET /login HTTP/1.1\r\nHost: c\r\n\r\n", 2).startswith(b"HTTP/1.1 200"):
                    break
            except ConnectionError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "riskctl console did not answer"
            time.sleep(0.2)
        yield console
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _out, console.err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
        drop_store(console.conn, table)
        console.conn.close()


def test_riskctl_console_serves(stack: Settings) -> None:
    """``riskctl console`` as a user starts it: it migrates the tables, listens on 127.0.0.1, asks for a
    session, and a created user logs in and sees the rules page; Ctrl-C (SIGINT) stops it. A user's page
    says how its replay decides: by the job's settings."""
    import urllib.error
    import urllib.request

    job = {"RISKCTL_JOB_LATENESS_MS": "7000", "RISKCTL_JOB_TOO_LATE_ACTION": "REVIEW"}
    with _riskctl_console(stack, **job) as console:
        port = console.port

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(f"http://127.0.0.1:{port}/rules", timeout=5)
        assert refused.value.code == 303 and refused.value.headers["location"] == "/login"
        AccountStore(console.conn, console.table).add_user("ann", "viewer", PASSWORD)
        import httpx2

        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as client:
            resp, csrf = _login(client, "ann")  # type: ignore[arg-type]
            assert resp.status_code == 303 and csrf
            assert "Rules" in client.get("/rules").text
            said = client.get("/users?id=bob").text
            assert "lateness 7000 ms, a too-late event at least REVIEW" in said, said
            assert "a user's state forgotten after 86400000 ms of silence, duplicates: api" in said, said
    assert f"riskctl console on http://127.0.0.1:{port}/" in console.err


def test_hostile_logins(env: dict[str, Any]) -> None:
    limiter = RateLimiter(max_failures=100, window_s=60)
    client = _client(env, limiter)
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    csrf = token.group(1)
    huge = client.post("/login", data={"csrf": csrf, "username": "u" * 1_000_000, "password": "x"})
    assert huge.status_code in (400, 401, 413)
    assert all(len(key) < 100 for key in limiter._failures)
    missing = client.post("/login", data={"csrf": csrf})
    assert missing.status_code == 400
    as_json = client.post(
        "/login", content=b'{"username": "approver"}', headers={"content-type": "application/json"}
    )
    assert as_json.status_code == 415
    many = client.post("/login", data={"csrf": csrf, **{f"f{i}": "x" for i in range(100)}})
    assert many.status_code == 400
    bad_utf8 = client.post(
        "/login",
        content=b"csrf=" + csrf.encode() + b"&username=%FF%FE&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert bad_utf8.status_code in (400, 401)
    assert client.get("/rules").status_code == 303  # none of them opened a session


def test_only_the_exact_user_name_logs_in(env: dict[str, Any]) -> None:
    """MySQL compares 'approver ' equal to 'approver' (PAD SPACE): such a spelling logged in as the approver
    under another name, the author of its changes, with a rate-limit count of its own."""
    limiter = RateLimiter(max_failures=100, window_s=60)
    for spelling in ("approver ", "approver   "):
        client = _client(env, limiter)
        resp, csrf = _login(client, spelling)
        assert resp.status_code == 401 and csrf is None, spelling
        assert client.get("/rules").status_code == 303
    resp, csrf = _login(_client(env, limiter), "approver")  # the name as created still logs in
    assert resp.status_code == 303 and csrf
    assert {e["user"] for e in env["accounts"].audit_log(None, 20) if e["action"] == "login"} == {"approver"}


def test_concurrent_wrong_logins_are_held_to_the_limit(env: dict[str, Any]) -> None:
    """30 wrong passwords sent at once, 3 allowed: each was checked against the count before any had failed
    (the check is in a worker thread), so all 30 were tried; now 3 are and 27 get 429."""
    import asyncio
    from collections import Counter

    import httpx2

    limiter = RateLimiter(max_failures=3, window_s=60)
    app = create_app(env["backend"], secure_cookies=False, limiter=limiter)

    async def burst() -> Counter[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
            page = await client.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token

            async def guess(i: int) -> int:
                data = {"csrf": token.group(1), "username": "analyst", "password": f"wrong password {i}"}
                return (await client.post("/login", data=data)).status_code

            return Counter(await asyncio.gather(*(guess(i) for i in range(30))))

    assert asyncio.run(burst()) == {401: 3, 429: 27}
    failed = [e for e in env["accounts"].audit_log(None, 50) if e["action"] == "login_failed"]
    assert len(failed) == 3
    resp, csrf = _login(_client(env, RateLimiter(max_failures=3, window_s=60)), "analyst")
    assert resp.status_code == 303 and csrf  # a fresh limiter: the account itself is fine


def test_publish_refuses_a_comment_over_its_limit(env: dict[str, Any]) -> None:
    """A 70,000-character comment overflowed the history's TEXT column: MySQL refused the write, a 500."""
    client = TestClient(
        create_app(env["backend"], secure_cookies=False),
        follow_redirects=False,
        raise_server_exceptions=False,
    )
    _, csrf = _login(client, "approver")
    resp = client.post(
        "/rules/publish", data={**_form(base_version="1", comment="c" * 70_000), "csrf": csrf or ""}
    )
    assert resp.status_code == 400 and 'id="err-comment"><div>too long: 70000 characters' in resp.text
    assert env["store"].get("big_amount").version == 1
    ok = client.post(
        "/rules/publish", data={**_form(base_version="1", comment="é" * 2000), "csrf": csrf or ""}
    )
    assert ok.status_code == 303
    assert env["store"].history("big_amount")[-1].comment == "é" * 2000


def test_kafka_tail_survives_a_malformed_record_and_a_failure(
    stack: Settings, topic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision whose ``rules`` is not a list raised in the feed; the reader then started again from a day
    back and added every record again, every 5 s: the counts grew for ever. Now the record is left out, and
    a reader that fails for another reason resumes where it was."""
    import time

    import riskctl.sim.kafka_io as kafka_io
    from riskctl.console.feed import Feed, KafkaTail

    decisions = topic("dec")
    prod = kafka_io.producer(stack.kafka_bootstrap)
    good = {"kind": "decision", "event_id": "e0", "user_id": "u0", "ts": 1, "action": "REVIEW",
            "rules": [{"id": "r1"}], "shadow": []}  # fmt: skip
    for value in (good, {**good, "event_id": "e1", "rules": "r1"}, {**good, "event_id": "e2"}):
        prod.send(decisions, key="u0", value=value)
    prod.flush()
    real_poll, calls = kafka_io.poll, []

    def failing_once(c: Any, timeout_ms: int = 200) -> Any:
        batch = list(real_poll(c, timeout_ms))
        calls.append(len(batch))
        if batch and sum(1 for n in calls if n) == 2:  # the poll after the records were added
            msg = "the broker went away"
            raise RuntimeError(msg)
        return iter(batch)

    monkeypatch.setattr(kafka_io, "poll", failing_once)
    feed = Feed()
    tail = KafkaTail(feed, stack.kafka_bootstrap, [decisions]).start()
    try:
        deadline = time.monotonic() + 30
        while len(feed.latest()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        prod.send(decisions, key="u0", value={**good, "event_id": "e3"})  # the next poll fails on it
        prod.flush()
        while feed.error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert feed.error is not None and "the broker went away" in feed.error
        while len(feed.latest()) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # time to add anything twice
        assert [r["event_id"] for r in feed.latest()] == ["e3", "e2", "e0"]
        assert feed.skipped == 1 and feed.hits(int(time.time() * 1000)) == {"r1": {"hour": 3, "day": 3}}
    finally:
        tail.stop()
        prod.close()


def test_backtests_and_replays_at_once_are_bounded(env: dict[str, Any]) -> None:
    """Each replay or topic backtest holds a worker thread for seconds, and every request needs one (the
    session check reads MySQL there): 60 replays at once made a viewer's rules page wait for them. Now two
    run at once (MAX_HEAVY), the others get 429 at once, and the other pages answer meanwhile."""
    import asyncio
    import threading
    import time

    import httpx2

    from riskctl.console.app import MAX_HEAVY

    entered, release = threading.Semaphore(0), threading.Event()

    def events(window_ms: int) -> bytes:  # a topic read that takes as long as the test says
        entered.release()
        release.wait(30)
        return EVENTS

    app = create_app(env["backend"], secure_cookies=False, events=events)
    login = TestClient(app, follow_redirects=False)
    _, csrf = _login(login, "analyst")
    cookies = {"riskctl_console": login.cookies.get("riskctl_console") or ""}

    async def burst() -> tuple[list[int], list[int], float]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://testserver", cookies=cookies, timeout=60
        ) as client:
            replays = [asyncio.create_task(client.get("/users/bob?minutes=5")) for _ in range(4)]
            backtest = {**_form(), "source": "topic", "minutes": "5"}
            backtests = [
                asyncio.create_task(
                    client.post("/api/backtest", data=backtest, headers={"X-CSRF-Token": csrf or ""})
                )
                for _ in range(4)
            ]
            try:
                for _ in range(MAX_HEAVY):
                    assert await asyncio.to_thread(entered.acquire, True, 10)
                tasks = replays + backtests
                deadline = time.monotonic() + 10
                while sum(t.done() for t in tasks) < len(tasks) - MAX_HEAVY and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                refused = sorted(t.result().status_code for t in tasks if t.done())
                running = [t for t in tasks if not t.done()]
                assert len(running) == MAX_HEAVY, "the ones over the limit waited for the running ones"
                started = time.monotonic()
                assert (await client.get("/rules")).status_code == 200
                page_s = time.monotonic() - started
            finally:
                release.set()
            finished = [(await t).status_code for t in running]
            return refused, finished, page_s

    refused, finished, page_s = asyncio.run(burst())
    assert refused == [429] * 6 and finished == [200] * MAX_HEAVY
    assert page_s < 5
    again = login.get("/users/bob?minutes=5")  # the slots were given back
    assert again.status_code == 200 and 'id="replayed"' in again.text


def test_a_case_with_a_long_event_id_can_be_labelled(env: dict[str, Any]) -> None:
    """An event id may have 4,096 characters (the door's max_string_chars), the labels' case_id column 255:
    labelling such a case was a 500 (MySQL: data too long). Now it is stored under a prefix and a digest."""
    import time

    from riskctl.console.feed import Feed

    now = int(time.time() * 1000)
    long_ids = ["e" * 300, "e" * 300 + "x", "e" * 4096]  # alike for 246 characters: different cases
    feed = Feed()
    feed.add(
        ({"kind": "decision", "event_id": eid, "user_id": "u1", "type": "transfer", "ts": now,
          "action": "REVIEW", "rules": [{"id": "big_amount"}], "shadow": []}, now)
        for eid in long_ids
    )  # fmt: skip
    client = TestClient(create_app(env["backend"], secure_cookies=False, feed=feed), follow_redirects=False)
    _, csrf = _login(client, "analyst")
    for eid, label in zip(long_ids, ("fraud", "legitimate", "fraud"), strict=True):
        resp = client.post(
            "/review/label",
            data={"csrf": csrf or "", "case_id": f"decision:{eid}", "user_id": "u1", "label": label},
        )
        assert resp.status_code == 303, resp.text
    labels = env["accounts"].labels("u1", [f"decision:{eid}" for eid in long_ids])
    assert [labels[f"decision:{eid}"][0] for eid in long_ids] == ["fraud", "legitimate", "fraud"]
    assert env["accounts"].precision("big_amount")["active"]["labelled"] == 3
    assert client.get("/review").text.count('<strong class="label">') == 3


def test_a_user_id_with_a_slash_has_its_page(env: dict[str, Any]) -> None:
    """User ids are the events' (any string): one with a '/' was linked from the decisions page as
    /users/a/b, which no route matched: a 404 instead of the user's page ('../rules' led to the rules)."""
    import html
    import time

    from riskctl.console.feed import Feed

    now = int(time.time() * 1000)
    feed = Feed()
    for user in ("shop/42", "../rules", "x</script>"):
        record = {"kind": "decision", "event_id": f"e-{user}", "user_id": user, "type": "transfer", "ts": now,
                  "action": "PASS", "rules": [], "shadow": []}  # fmt: skip
        feed.add([(record, now)])
    client = TestClient(create_app(env["backend"], secure_cookies=False, feed=feed), follow_redirects=False)
    _login(client, "viewer")
    links = re.findall(r'<a href="(/users\?id=[^"]+)">', client.get("/decisions").text)
    assert len(links) == 3
    shown: list[str] = []
    for link in links:
        page = client.get(link)
        assert page.status_code == 200, link
        assert "Nothing recent for this user" not in page.text and "x</script>" not in page.text
        shown.append(re.search(r"<h1>User (.*)</h1>", page.text).group(1))  # type: ignore[union-attr]
    assert sorted(shown) == sorted(html.escape(u, quote=False) for u in ("shop/42", "../rules", "x</script>"))
    # a path still works for an id a browser leaves alone; no id at all is a 404
    assert "<h1>User shop/42</h1>" in client.get("/users/shop%2F42").text
    assert client.get("/users").status_code == 404 and client.get("/users?id=").status_code == 404


def test_mysql_away_is_a_503_saying_so_and_the_console_recovers(env: dict[str, Any], stack: Settings) -> None:
    """Every page and API answered a bare 500 'Internal Server Error' while MySQL was down (the session
    check reads it). Now a 503 that says why (not where MySQL is: that goes to the log), then the same
    session works again once MySQL answers."""
    import copy

    client = _client(env)
    _, csrf = _login(client, "approver")
    backend: Backend = env["backend"]
    working = backend.connect
    dead = copy.deepcopy(stack)
    dead.mysql.port = free_port()  # nothing listens there: connection refused
    backend.connect = lambda: connect(dead, connect_timeout=2)
    try:
        page = client.get("/rules")
        api = client.get("/api/rules/big_amount/status")
        post = client.post("/rules/big_amount/change", data={"op": "shadow", "csrf": csrf or ""})
    finally:
        backend.connect = working
    assert page.status_code == 503 and "MySQL" in page.text and str(dead.mysql.port) not in page.text
    assert page.headers["Retry-After"] == "5"
    assert api.status_code == 503 and "not answering" in api.json()["error"]
    assert post.status_code == 503
    assert client.get("/rules").status_code == 200  # the same session, once MySQL answers
    assert env["store"].get("big_amount").status != "shadow"


def test_a_slow_validation_does_not_stall_other_requests(env: dict[str, Any]) -> None:
    """The editor's validation ran on the event loop: a draft with ~60 KiB in each YAML field takes up to
    a second to read, and while it did no other request of any user was answered (the login page waited
    as long as the validation). It now runs in a worker thread; the other pages answer meanwhile."""
    import asyncio
    import time

    import httpx2

    app = create_app(env["backend"], secure_cookies=False)
    login = TestClient(app, follow_redirects=False)
    _, csrf = _login(login, "analyst")
    cookies = {"riskctl_console": login.cookies.get("riskctl_console") or ""}
    yaml_text = "\n".join(f"k{i}: [" + ", ".join(["1"] * 20) + "]" for i in range(600))[:65_000]
    fields = ("priority", "applies_to", "alert", "features", "sequence", "tags")
    draft = {**_form(), **dict.fromkeys(fields, yaml_text)}

    async def race() -> tuple[float, list[float]]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://testserver", cookies=cookies, timeout=60
        ) as client:
            started = time.monotonic()
            slow = asyncio.create_task(
                client.post("/api/validate", data=draft, headers={"X-CSRF-Token": csrf or ""})
            )
            waits = []  # from one answer to the next, the small sleep in between included
            asked = time.monotonic()
            while not slow.done():
                await asyncio.sleep(0.01)
                assert (await client.get("/login")).status_code == 200
                waits.append(time.monotonic() - asked)
                asked = time.monotonic()
            resp = await slow
            assert resp.status_code == 200 and not resp.json()["ok"]
            return time.monotonic() - started, waits

    slow_s, waits = asyncio.run(race())
    assert slow_s > 0.2, f"the validation took {slow_s:.2f} s: too fast to show anything"
    assert max(waits) < slow_s / 3, f"a page waited {max(waits):.2f} s for a {slow_s:.2f} s validation"


def test_a_backtest_or_replay_over_its_time_limit_is_a_422(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backtest or a replay had no time limit (a rule costly per event ran for half an hour, holding one
    of the two slots); past MAX_SECONDS it now stops: 422 naming the events and the line, slot given back."""
    from riskctl.console import backtest as backtest_module

    monkeypatch.setattr(backtest_module, "MAX_SECONDS", 0.0)
    client = TestClient(
        create_app(env["backend"], secure_cookies=False, events=lambda _ms: EVENTS, max_heavy=1),
        follow_redirects=False,
        raise_server_exceptions=False,
    )
    _, csrf = _login(client, "analyst")
    headers = {"X-CSRF-Token": csrf or ""}
    resp = client.post("/api/backtest", data=_form(), files={"events": ("e.jsonl", EVENTS)}, headers=headers)
    assert resp.status_code == 422
    assert resp.json()["error"].startswith("events: stopped at the time limit (0 s) on line 1 of 4")
    page = client.get("/users?id=bob&minutes=5")
    assert page.status_code == 422 and 'id="replay-error">replay: stopped at the time limit' in page.text
    monkeypatch.setattr(backtest_module, "MAX_SECONDS", 60.0)
    again = client.post("/api/backtest", data=_form(), files={"events": ("e.jsonl", EVENTS)}, headers=headers)
    assert again.status_code == 200 and again.json()["draft"]["hits"] == 1  # bob's 5000


def test_the_scripts_of_a_page_carry_its_csp_nonce(env: dict[str, Any]) -> None:
    """Every inline script of a page has the nonce its Content-Security-Policy allows (the browser tests,
    tests/integration/test_console.py, run them under it); each page its own."""
    client = _client(env)
    _, csrf = _login(client, "approver")
    nonces = set()
    for path in ("/rules", "/rules/big_amount", "/rules/big_amount/edit", "/decisions"):
        page = client.get(path)
        nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"])
        assert nonce, path
        scripts = re.findall(r"<script([^>]*)>", page.text)
        assert scripts and all(attrs == f' nonce="{nonce.group(1)}"' for attrs in scripts), (path, scripts)
        nonces.add(nonce.group(1))
    assert len(nonces) == 4


def test_validations_at_once_are_bounded_per_user_and_in_all(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """/api/validate (the editor's check as you type) had no bound: each validation reads up to 11 fields of
    64 KiB of YAML in a worker thread (up to a second of CPU), and a burst of them from one analyst (or a
    script with the analyst's cookie) held every worker thread and the CPU: every page of every user waited.
    Now MAX_VALIDATIONS run at once, at most MAX_VALIDATIONS_PER_USER of one user's; one more is a 429 with
    Retry-After at once (so is the validation before a backtest or a publish), other pages answer meanwhile,
    and the slots are given back."""
    import asyncio
    import threading
    import time

    import httpx2

    from riskctl.console import app as app_module
    from riskctl.console.app import MAX_VALIDATIONS, MAX_VALIDATIONS_PER_USER

    assert (MAX_VALIDATIONS, MAX_VALIDATIONS_PER_USER) == (4, 2)  # the numbers this test is written for
    entered, release = threading.Semaphore(0), threading.Event()
    real = app_module.validate_form

    def slow(form: Any, *, rule_id: str | None = None) -> Any:  # as long as the test says
        entered.release()
        release.wait(30)
        return real(form, rule_id=rule_id)

    monkeypatch.setattr(app_module, "validate_form", slow)
    env["accounts"].add_user("analyst2", "analyst", PASSWORD)
    app = create_app(env["backend"], secure_cookies=False)
    sessions = {}
    for user in ("analyst", "approver", "analyst2"):
        login = TestClient(app, follow_redirects=False)
        _, csrf = _login(login, user)
        sessions[user] = ({"riskctl_console": login.cookies.get("riskctl_console") or ""}, csrf or "")

    async def burst() -> dict[str, Any]:
        transport = httpx2.ASGITransport(app=app)
        clients = {
            user: httpx2.AsyncClient(
                transport=transport, base_url="http://testserver", cookies=cookies, timeout=60,
                headers={"X-CSRF-Token": csrf},
            )
            for user, (cookies, csrf) in sessions.items()
        }  # fmt: skip
        out: dict[str, Any] = {}
        try:
            tasks = {
                user: [
                    asyncio.create_task(clients[user].post("/api/validate", data=_form())) for _ in range(4)
                ]
                for user in ("analyst", "approver")
            }
            for _ in range(MAX_VALIDATIONS):
                assert await asyncio.to_thread(entered.acquire, True, 10)
            everyone = [t for ts in tasks.values() for t in ts]
            deadline = time.monotonic() + 10
            while sum(t.done() for t in everyone) < len(everyone) - MAX_VALIDATIONS:
                assert time.monotonic() < deadline, "the validations over the limit waited"
                await asyncio.sleep(0.05)
            out["refused"] = {
                user: sorted(t.result().status_code for t in ts if t.done()) for user, ts in tasks.items()
            }
            out["retry_after"] = {t.result().headers.get("retry-after") for t in everyone if t.done()}
            # all slots taken: another user's validation, and the ones before a backtest and a publish, too
            other = clients["analyst2"]
            out["other"] = (await other.post("/api/validate", data=_form())).status_code
            backtest = await other.post("/api/backtest", data=_form(), files={"events": ("e.jsonl", EVENTS)})
            out["backtest"] = backtest.status_code
            publish = await clients["approver"].post("/rules/publish", data=_form(base_version="1"))
            out["publish"] = publish.status_code
            started = time.monotonic()
            out["page"] = (await other.get("/rules")).status_code
            out["page_s"] = time.monotonic() - started
        finally:
            release.set()
        out["finished"] = [(await t).status_code for t in everyone if (await t).status_code != 429]
        out["again"] = (await clients["analyst"].post("/api/validate", data=_form())).json()
        for client in clients.values():
            await client.aclose()
        return out

    out = asyncio.run(burst())
    assert out["refused"] == {"analyst": [429, 429], "approver": [429, 429]}
    assert out["retry_after"] == {"1"}
    assert (out["other"], out["backtest"], out["publish"]) == (429, 429, 429)
    assert out["page"] == 200 and out["page_s"] < 5
    assert out["finished"] == [200] * MAX_VALIDATIONS
    assert out["again"] == {"ok": True, "errors": {}}  # the slots were given back
    assert env["store"].get("big_amount").version == 1  # the refused publish wrote nothing


def test_records_from_another_producer_cost_the_pages_little(env: dict[str, Any]) -> None:
    """Anyone who may write to the decisions topic can put records of up to 1 MB there: 40,000 rule ids in
    one, an evidence of 900 kB, a user id of 500 kB. Pages are rendered on the event loop, and they showed
    all of it: /decisions listed every rule id of 200 records (megabytes, seconds for every user meanwhile),
    the user page every evidence whole, the review queue every rule of every case, and the rules page summed
    every count of the day. Now a page shows the first MAX_SHOWN_RULES rules of a record, the first
    MAX_SHOWN_EVIDENCE characters of an evidence, the first MAX_SHOWN_CHARS of a text (an over-long user id
    without a link), and looks up the hits of the rules it shows."""
    import time

    from riskctl.console.app import MAX_SHOWN_RULES
    from riskctl.console.feed import Feed

    now = int(time.time() * 1000)

    def record(eid: str, user: str, rules: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
        return ({"kind": "decision", "event_id": eid, "user_id": user, "type": "transfer", "ts": now,
                 "action": "REVIEW", "rules": rules, "shadow": []}, now)  # fmt: skip

    feed = Feed()
    feed.add(
        [record(f"many{i}", "u1", [{"id": f"x{i}-{j}"} for j in range(40_000)]) for i in range(5)]
        + [
            record(f"blob{i}", "u1", [{"id": "big_amount", "evidence": {"blob": [1] * 300_000}}])
            for i in range(5)
        ]
        + [record("long-user", "u" * 500_000, [{"id": "big_amount"}])]
    )
    assert feed.skipped == 0
    client = TestClient(create_app(env["backend"], secure_cookies=False, feed=feed), follow_redirects=False)
    _login(client, "analyst")
    took = {}
    for path in (
        "/rules",
        "/rules/big_amount",
        "/decisions",
        "/decisions?rule=nope",
        "/review",
        "/users?id=u1",
    ):
        started = time.monotonic()
        page = client.get(path)
        took[path] = time.monotonic() - started
        assert page.status_code == 200, path
        assert len(page.content) < 200_000, (path, len(page.content))
    assert max(took.values()) < 2, took
    decisions = client.get("/decisions").text
    assert f"and {40_000 - MAX_SHOWN_RULES} more" in decisions
    assert "(500,000 characters)" in decisions and "u" * 4097 not in decisions  # shown cut, without a link
    assert 'href="/users?id=u1"' in decisions
    user = client.get("/users?id=u1").text
    assert user.count("[1, 1, 1") == 5 and "..." in user
    assert f"and {40_000 - MAX_SHOWN_RULES} more" in client.get("/review").text


def test_a_case_naming_a_rule_twice_can_be_labelled(env: dict[str, Any]) -> None:
    """A review case that names a rule twice (another producer's record: the job lists each rule once) was
    a duplicate key in the labels table: labelling it answered 500. A label now writes one row per rule."""
    import time

    from riskctl.console.feed import Feed
    from riskctl.store.migrations import case_key

    now = int(time.time() * 1000)
    feed = Feed()
    rules = [{"id": "big_amount"}, {"id": "big_amount"}]
    shadow = [{"id": "big_amount"}, {"id": "night"}, {"id": "night"}]
    feed.add(
        [({"kind": "decision", "event_id": "twice", "user_id": "u1", "type": "transfer", "ts": now,
           "action": "REVIEW", "rules": rules, "shadow": shadow}, now)]
    )  # fmt: skip
    client = TestClient(
        create_app(env["backend"], secure_cookies=False, feed=feed),
        follow_redirects=False,
        raise_server_exceptions=False,
    )
    _, csrf = _login(client, "analyst")
    resp = client.post(
        "/review/label",
        data={"csrf": csrf or "", "case_id": case_key("u1", "decision:twice"), "label": "fraud"},
    )
    assert resp.status_code == 303, resp.text
    assert env["accounts"].precision("big_amount")["active"]["labelled"] == 1
    assert env["accounts"].precision("big_amount")["shadow"]["labelled"] == 0
    assert env["accounts"].precision("night")["shadow"]["labelled"] == 1


def test_a_diff_of_two_large_versions_is_answered_in_linear_time(env: dict[str, Any]) -> None:
    """A diff of two versions is difflib's, quadratic in the lines that differ: two valid versions of a rule
    with 8,000 tags each (one a line once dumped), every other one changed, took about 10 s of a worker
    thread and the CPU, and any viewer could ask for it again and again. Past MAX_DIFF_LINES changed lines
    the diff shows them removed then added, at once."""
    import time

    from riskctl.console.app import MAX_DIFF_LINES

    store = env["store"]
    tags = [f"tag-{i}" for i in range(8_000)]
    for version_tags in (tags, [t if i % 2 else f"new-{i}" for i, t in enumerate(tags)]):
        store.apply(store.plan(_ruleset({**RULE, "tags": version_tags})), author="setup")
    client = _client(env)
    _login(client, "viewer")
    started = time.monotonic()
    page = client.get("/rules/big_amount/diff?a=2&b=3")
    took = time.monotonic() - started
    assert page.status_code == 200
    assert took < 3, f"{took:.1f} s"
    assert f"over {MAX_DIFF_LINES} lines changed" in page.text
    # tags 0 to 7,998 (the changed ones and those between them), and the --- and +++ lines
    assert page.text.count('<span class="del">-') == page.text.count('<span class="add">+') == 7_999 + 1
    small = client.get("/rules/big_amount/diff?a=1&b=2")  # a small change: difflib's diff as before
    assert small.status_code == 200 and "lines changed" not in small.text and "+tags:" in small.text


def test_a_case_with_a_megabyte_id_puts_its_key_in_the_page_not_its_id(env: dict[str, Any]) -> None:
    """Another producer's REVIEW record may carry an event id of nearly 1 MB: the review page wrote the case
    id whole into the row's data-case attribute and the label form's hidden input (2 MB a case). The page now
    names each case by its bounded key (at most 255 characters: the id, or a prefix and its SHA-256), and
    posting that key labels the case (the whole id with its user still does)."""
    import time

    from riskctl.console.feed import Feed
    from riskctl.store.migrations import case_key

    now = int(time.time() * 1000)
    long_id, short_id = "e" * 999_000, "short-one"
    feed = Feed()
    feed.add(
        ({"kind": "decision", "event_id": eid, "user_id": "u1", "type": "transfer", "ts": now,
          "action": "REVIEW", "rules": [{"id": "big_amount"}], "shadow": []}, now)
        for eid in (long_id, short_id)
    )  # fmt: skip
    client = TestClient(create_app(env["backend"], secure_cookies=False, feed=feed), follow_redirects=False)
    _, csrf = _login(client, "analyst")
    page = client.get("/review")
    assert page.status_code == 200
    assert len(page.content) < 50_000, len(page.content)
    posted = re.findall(r'name="case_id" value="([^"]*)"', page.text)
    assert posted == ["2:u1:decision:short-one", case_key("u1", f"decision:{long_id}")]  # newest first
    assert all(len(key) <= 255 for key in posted)
    for key, label in zip(posted, ("legitimate", "fraud"), strict=True):
        resp = client.post("/review/label", data={"csrf": csrf or "", "case_id": key, "label": label})
        assert resp.status_code == 303, resp.text
    labels = env["accounts"].labels("u1", [f"decision:{long_id}", "decision:short-one"])
    assert [v[0] for v in labels.values()] == ["fraud", "legitimate"]
    page = client.get("/review")
    assert page.text.count('<strong class="label">') == 2
    assert len(page.content) < 50_000
    resp = client.post(  # the whole id, as before
        "/review/label",
        data={"csrf": csrf or "", "case_id": f"decision:{long_id}", "user_id": "u1", "label": "legitimate"},
    )
    assert resp.status_code == 303
    assert env["accounts"].labels("u1", [f"decision:{long_id}"])[f"decision:{long_id}"][0] == "legitimate"


def _write_versions(env: dict[str, Any], rule_id: str, count: int) -> dict[str, Any]:
    """Versions 2..count of ``rule_id`` (version 1 written by the fixture) written as a script or SQL would,
    in one transaction: one history row each, a document of about 1 kB, the current row at the last one."""
    from riskctl.store.rules_store import content_digest

    store = env["store"]
    names = store.names.quoted()
    rows = []
    for version in range(2, count + 1):
        doc = {**RULE, "description": f"v{version} " + "x" * 1000, "status": "active", "version": version}
        digest = content_digest(doc)
        text = json.dumps(doc)
        rows.append((rule_id, version, "active", "update", "script", f"run {version}", text, digest))
    with store.conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {names['history']} (rule_id, version, status, `change`, author, comment, document, "  # noqa: S608
            "digest) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        cur.execute(
            f"UPDATE {names['rules']} SET version = %s, document = %s WHERE rule_id = %s",  # noqa: S608
            (count, rows[-1][6], rule_id),
        )
    store.conn.commit()
    return doc


def test_the_history_of_a_rule_written_thousands_of_times_is_paged(env: dict[str, Any]) -> None:
    """A rule updated 5,000 times (a script, SQL): its page read every version with its document from MySQL
    and showed every one (with a rollback form each). The page now shows the newest HISTORY_PAGE versions, one
    bounded read, with a link to the older ones, page after page; diff and rollback work on any version."""
    import time

    from riskctl.console.app import HISTORY_PAGE

    count = 5_000
    _write_versions(env, "big_amount", count)
    client = _client(env)
    _, csrf = _login(client, "approver")
    started = time.monotonic()
    page = client.get("/rules/big_amount")
    took = time.monotonic() - started
    assert page.status_code == 200
    assert len(page.content) < 150_000 and took < 1.5, f"{len(page.content):,} bytes in {took:.2f} s"
    shown = [int(v) for v in re.findall(r'<input type="radio" name="b" value="(\d+)"', page.text)]
    assert shown == list(range(count, count - HISTORY_PAGE, -1))
    older = re.search(r'<a id="older" href="([^"]+)"', page.text)
    assert older and older.group(1) == f"/rules/big_amount?before={count - HISTORY_PAGE + 1}"
    # every version is on one page or another, each once, oldest last; the last page has no older link
    seen, url, pages = list(shown), older.group(1), 1
    while url:
        more = client.get(url)
        assert more.status_code == 200 and len(more.content) < 150_000
        versions = [int(v) for v in re.findall(r'<input type="radio" name="b" value="(\d+)"', more.text)]
        seen += versions
        pages += 1
        nxt = re.search(r'<a id="older" href="([^"]+)"', more.text)
        url = nxt.group(1) if nxt else ""
    assert seen == list(range(count, 0, -1)) and pages == -(-count // HISTORY_PAGE)
    assert "Roll back to v2<" in more.text or "Roll back to v1<" in more.text
    diff = client.get(f"/rules/big_amount/diff?a=1&b={count}")
    assert diff.status_code == 200 and f"v{count} " in diff.text
    resp = client.post(
        "/rules/big_amount/change",
        data={"csrf": csrf or "", "op": "rollback", "to": "3", "expect_version": str(count)},
    )
    assert resp.status_code == 303, resp.text
    current = env["store"].get("big_amount")
    assert current.version == count + 1 and current.document["description"].startswith("v3 ")
    assert client.get("/rules/big_amount?before=abc").status_code == 200  # not a number: the newest


def _ask(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """``request`` sent on a new connection; what comes back until the server closes it or ``timeout``."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        out = b""
        try:
            while b"\r\n\r\n" not in out:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out


def _closed_by_server(sock: Any, within: float) -> bool:
    import time

    sock.settimeout(within)
    started = time.monotonic()
    try:
        while time.monotonic() - started < within:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return False


def test_riskctl_console_bounds_its_connections_and_closes_slow_ones(stack: Settings) -> None:
    """``riskctl console`` ran uvicorn without limit_concurrency and uvicorn bounds no request's headers in
    time: connections that sent nothing, or a header a byte at a time, stayed open for ever, as many as the
    open-file limit, each able to carry an 8 MiB body. Now MAX_CONNECTIONS at once (a request beyond: 503 at
    once), MAX_CONNECTIONS_PER_CLIENT of them from one address (the others are served meanwhile), and a
    connection without a whole request's headers is closed after HEADER_TIMEOUT_S, so the console answers
    again once the slow clients are closed."""
    import socket
    import time

    from riskctl.console.server import HEADER_TIMEOUT_S, MAX_CONNECTIONS

    slow: list[socket.socket] = []
    with _riskctl_console(stack) as console:
        port = console.port
        try:
            opened = time.monotonic()
            for _ in range(MAX_CONNECTIONS):  # a slowloris: headers begun, never ended
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"POST /login HTTP/1.1\r\nHost: c\r\nContent-Length: 8000000\r\n")
                slow.append(sock)
            started = time.monotonic()
            answer = _ask(port, b"GET /login HTTP/1.1\r\nHost: c\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert time.monotonic() - started < 2
            # one client's connections count for MAX_CONNECTIONS_PER_CLIENT: another client is served
            # (before: 503, the 64 of one client took them all). 127.0.0.2 is loopback too.
            with socket.socket() as other:
                other.settimeout(5)
                other.bind(("127.0.0.2", 0))
                other.connect(("127.0.0.1", port))
                other.sendall(b"GET /login HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
                assert other.recv(65536).startswith(b"HTTP/1.1 200")
            # the slow connections are closed by the server within HEADER_TIMEOUT_S of opening, unanswered
            for sock in slow:
                left = max(0.1, opened + HEADER_TIMEOUT_S + 3 - time.monotonic())
                assert _closed_by_server(sock, left), "a connection without its headers was left open"
            assert time.monotonic() - opened >= HEADER_TIMEOUT_S - 1
            assert _ask(port, b"GET /login HTTP/1.1\r\nHost: c\r\n\r\n").startswith(b"HTTP/1.1 200")
        finally:
            for sock in slow:
                sock.close()


def test_a_request_body_trickling_in_is_a_408(env: dict[str, Any]) -> None:
    """A body sent a few bytes at a time held its connection (one of MAX_CONNECTIONS) for ever: /login reads
    anyone's. Now it has BODY_TIMEOUT_S (here 1 s) from the first read of it; and headers that never end are
    closed after HEADER_TIMEOUT_S (here 1 s), on a new connection and on one kept alive after an answer."""
    import socket
    import time

    from riskctl.console.server import server_config

    port = free_port()
    app = create_app(env["backend"], secure_cookies=False, body_timeout_s=1.0)
    stop = serve_in_thread(server_config(app, "127.0.0.1", port, header_timeout_s=1.0))
    try:
        started = time.monotonic()
        answer = _ask(
            port,
            b"POST /login HTTP/1.1\r\nHost: c\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\ncsrf=abc",
        )
        took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert 0.9 < took < 3, took
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: c\r\n")
            assert _closed_by_server(sock, 3)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: c\r\n\r\n")
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            while b"</html>" not in first:
                first += sock.recv(65536)
            sock.sendall(b"GET /login HTTP/1.1\r\n")  # the next request's headers, never ended
            assert _closed_by_server(sock, 4)
    finally:
        stop()


@pytest.mark.parametrize("op", ["publish", "shadow", "rollback"])
def test_a_write_kept_out_by_a_row_lock_is_a_503_that_keeps_the_form(
    env: dict[str, Any], stack: Settings, op: str
) -> None:
    """A row lock held by another MySQL session (an SQL transaction left open) kept a write out: MySQL's
    lock wait timeout (1205, the store's StoreBusyError) was shown as a 400 page, as if the analyst had
    made a mistake (publish: a 500), and the draft was lost. Now a 503 with the store's message and a
    Retry-After, the draft (or the change) kept to send again, which then writes."""
    env["store"].set_status("big_amount", "disabled", author="setup")  # v2: a version to roll back from
    # a session that waits 1 s for a row lock, not the console's LOCK_WAIT_S
    backend = Backend(lambda: connect(stack, lock_wait_s=1), env["table"])
    client = TestClient(create_app(backend, secure_cookies=False), follow_redirects=False)
    _, csrf = _login(client, "approver")
    if op == "publish":
        path, data = "/rules/publish", _form(base_version="2", comment="raise the bar")
    else:
        fields = {"op": op, "expect_version": "2"} | ({"to": "1"} if op == "rollback" else {})
        path, data = "/rules/big_amount/change", fields
    holder = connect(stack)
    try:
        holder.begin()
        with holder.cursor() as cur:  # another session's open transaction holds the rule's row
            cur.execute(f"SELECT version FROM `{env['table']}` WHERE rule_id = 'big_amount' FOR UPDATE")
        resp = client.post(path, data={**data, "csrf": csrf or ""})
    finally:
        holder.rollback()
        holder.close()
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "5"
    text = html.unescape(resp.text)
    assert "was not written, nothing was: it waited 1 s for a row lock held by another MySQL session" in text
    assert env["store"].get("big_amount").version == 2
    if op == "publish":  # the editor again, with the draft as sent
        assert 'id="busy"' in resp.text and "publish it again" in text
        assert (
            '<textarea id="f-when" name="when" rows="3" class="">event.amount &gt; 2000</textarea>'
            in resp.text
        )
        assert 'value="raise the bar"' in resp.text and 'name="base_version" value="2"' in resp.text
        assert 'value="REJECT"' in resp.text
    else:  # a button that sends the same change again
        sent = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', resp.text))
        assert sent == {"csrf": csrf, **data}, sent
        assert 'action="/rules/big_amount/change"' in resp.text and 'id="retry"' in resp.text
    again = client.post(path, data={**data, "csrf": csrf or ""})  # the lock is gone: written
    assert again.status_code == 303, again.text
    assert env["store"].get("big_amount").version == 3


@contextmanager
def _row_locked(stack: Settings, sql: str) -> Iterator[None]:
    """Rows locked by another MySQL session's open transaction (``sql``: a SELECT ... FOR UPDATE) until the
    block ends."""
    holder = connect(stack)
    try:
        holder.begin()
        with holder.cursor() as cur:
            cur.execute(sql)
        yield
    finally:
        holder.rollback()
        holder.close()


def test_a_label_or_login_kept_out_by_a_row_lock_on_the_accounts_is_a_503_that_keeps_the_form(
    env: dict[str, Any], stack: Settings
) -> None:
    """A row lock on the console's own tables (a label, a session: an SQL transaction left open) kept an
    AccountStore write out outside the rules store's retry: MySQL's lock wait timeout (1205) came out as
    the driver's refusal, a 500 with a traceback for a label and for a login. Now the rules store's
    StoreBusyError: a 503 with Retry-After saying what was not written, the label's form kept to send again
    (which then writes), the login form again with the name (and no 'login' audit row: it was written,
    though the answer said nothing was)."""
    backend = Backend(lambda: connect(stack, lock_wait_s=1), env["table"])
    client = TestClient(create_app(backend, secure_cookies=False, feed=_feed()), follow_redirects=False)
    _, csrf = _login(client, "analyst")
    env["accounts"].label_case("decision:e1", ("big_amount",), (), "bob", "legitimate", None, "setup")
    data = {
        "csrf": csrf or "",
        "case_id": "decision:e1",
        "user_id": "bob",
        "label": "fraud",
        "note": "seen it before",
    }
    tables = table_names(env["table"]).console()
    labels, sessions = tables["labels"], tables["sessions"]
    with _row_locked(stack, f"SELECT * FROM `{labels}` WHERE case_id = '3:bob:decision:e1' FOR UPDATE"):
        resp = client.post("/review/label", data=data)
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "5"
    text = html.unescape(resp.text)
    assert (
        "the label of case 'decision:e1' of user 'bob' was not written, nothing was: "
        "it waited 1 s for a row lock" in text
    )
    sent = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', resp.text))
    assert sent == data, sent
    assert env["accounts"].labels("bob", ["decision:e1"])["decision:e1"][0] == "legitimate"
    again = client.post("/review/label", data=data)  # the lock is gone: written
    assert again.status_code == 303, again.text
    assert env["accounts"].labels("bob", ["decision:e1"])["decision:e1"][:2] == ("fraud", "seen it before")

    other = TestClient(create_app(backend, secure_cookies=False), follow_redirects=False)
    page = other.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    # a login deletes the expired sessions first: a session row locked elsewhere keeps it waiting
    with _row_locked(stack, f"SELECT * FROM `{sessions}` FOR UPDATE"):
        resp = other.post("/login", data={"csrf": token.group(1), "username": "viewer", "password": PASSWORD})
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "5"
    assert "MySQL: the login of 'viewer' was not written, nothing was" in html.unescape(resp.text)
    assert 'name="username" value="viewer"' in resp.text
    assert "riskctl_console" not in resp.cookies
    # nothing was: the login's audit row is in the session's transaction (it was committed before it)
    assert [
        e for e in env["accounts"].audit_log(None, 50) if e["action"] == "login" and e["user"] == "viewer"
    ] == []
    again_token = re.search(r'name="csrf" value="([^"]+)"', resp.text)
    assert again_token
    ok = other.post("/login", data={"csrf": again_token.group(1), "username": "viewer", "password": PASSWORD})
    assert ok.status_code == 303, ok.text


@pytest.mark.parametrize(
    ("errno", "status"),
    [(1644, 400), (1406, 400), (None, 503)],
    ids=["trigger", "too-long", "mysql-away"],
)
def test_a_publish_mysql_refuses_or_cannot_take_keeps_the_draft_and_says_why(
    env: dict[str, Any], stack: Settings, errno: int | None, status: int
) -> None:
    """A publish that MySQL refused (a trigger's SIGNAL, error 1644: shown as 'MySQL is not answering', a
    plain 503; a value refused by strict mode, error 1406 here from the trigger: a bare 500) or that found
    MySQL away (a plain 503) lost the draft. Now the editor again with the draft, base version and comment
    as sent and the reason: a 400 with MySQL's message when it refused the write, a 503 when it is away. A
    status change MySQL refused is a 400 saying why too, one made while MySQL is away a 503 (it was a 400,
    as if the analyst had erred) with the button that sends it again."""
    import copy

    client = _client(env)
    _, csrf = _login(client, "approver")
    backend: Backend = env["backend"]
    working = backend.connect
    if errno is not None:
        history = env["store"].names.history
        with env["store"].conn.cursor() as cur:
            cur.execute(
                f"CREATE TRIGGER `{env['table']}_refuse` BEFORE INSERT ON `{history}` FOR EACH ROW "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test trigger', "
                f"MYSQL_ERRNO = {errno}"
            )
    else:
        dead = copy.deepcopy(stack)
        dead.mysql.port = free_port()  # nothing listens there: connection refused
        # the session is read first (MySQL answers), then MySQL goes away before the write
        connects = iter([working])
        backend.connect = lambda: next(connects, lambda: connect(dead, connect_timeout=2))()
    try:
        data = _form(base_version="1", comment="raise the bar", csrf=csrf or "")
        resp = client.post("/rules/publish", data=data)
        connects = iter([working])
        change = client.post("/rules/big_amount/change", data={"op": "shadow", "csrf": csrf or ""})
    finally:
        backend.connect = working
        with env["store"].conn.cursor() as cur:
            cur.execute(f"DROP TRIGGER IF EXISTS `{env['table']}_refuse`")
    # a status change: the error page saying why, 400 (a SIGNAL was a 503 "not answering") or 503 (a 400)
    assert change.status_code == status, change.text
    if errno is not None:
        assert f"MySQL error {errno}: refused by the test trigger" in html.unescape(change.text)
    else:
        assert "not answering" in change.text and 'id="retry"' in change.text
    assert resp.status_code == status, resp.text
    assert "Traceback" not in resp.text
    text = html.unescape(resp.text)
    if errno is not None:
        assert f"MySQL error {errno}: refused by the test trigger. Nothing was written" in text, text
        assert "Retry-After" not in resp.headers
    else:
        assert "not answering" in text and str(dead.mysql.port) not in text
        assert resp.headers["Retry-After"] == "5"
    assert (
        '<textarea id="f-when" name="when" rows="3" class="">event.amount &gt; 2000</textarea>' in resp.text
    )
    assert 'value="raise the bar"' in resp.text and 'name="base_version" value="1"' in resp.text
    assert env["store"].get("big_amount").version == 1
    again = client.post("/rules/publish", data=data)  # MySQL takes it now: written
    assert again.status_code == 303, again.text
    assert env["store"].get("big_amount").version == 2


@contextmanager
def _inserts_refused(env: dict[str, Any], table: str, errno: int | None = None) -> Iterator[None]:
    """A trigger refusing every row inserted into the console's ``table`` (``audit``, ``sessions``, ...:
    MySQL's SIGNAL, error 1644, or ``errno``; its message '<table> refused by the test trigger'), dropped
    at the end."""
    name = env["store"].names.console()[table]
    trigger = f"`{env['table']}_no{table}`"
    code = "" if errno is None else f", MYSQL_ERRNO = {errno}"
    with env["store"].conn.cursor() as cur:
        cur.execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT ON `{name}` FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{table} refused by the test trigger'{code}"
        )
    try:
        yield
    finally:
        with env["store"].conn.cursor() as cur:
            cur.execute(f"DROP TRIGGER IF EXISTS {trigger}")


def _audit_refused(env: dict[str, Any], errno: int | None = None) -> Any:
    """A trigger refusing every audit row of the console's store (MySQL's SIGNAL), dropped at the end."""
    return _inserts_refused(env, "audit", errno)


def test_a_change_written_whose_audit_row_mysql_refuses_is_shown_written_and_logged(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The store commits a rule change before the console writes its audit row: a refused audit row turned a
    written publish (or status change) into a page saying "Nothing was written" (found in review). The change
    stands (the rules' history names its author); the refused audit row is logged as an error."""
    client = _client(env)
    _, csrf = _login(client, "approver")
    with _audit_refused(env), caplog.at_level(logging.ERROR, logger="riskctl.console"):
        published = client.post(
            "/rules/publish", data=_form(base_version="1", comment="raise", csrf=csrf or "")
        )
        changed = client.post("/rules/big_amount/change", data={"op": "shadow", "csrf": csrf or ""})
    assert published.status_code == 303 and published.headers["location"] == "/rules/big_amount"
    assert changed.status_code in (200, 303), changed.text
    env["store"].conn.commit()  # a fresh read view
    rule = env["store"].get("big_amount")
    assert rule is not None and rule.version == 3 and rule.status == "shadow"
    lines = [r.getMessage() for r in caplog.records if "its audit row was not" in r.getMessage()]
    assert len(lines) == 2 and "audit refused by the test trigger" in lines[0], lines
    assert lines[0].startswith("console: publish of rule 'big_amount' by approver was written")


def _failed_login(port: int, user: str, forwarded_for: str) -> int:
    """A wrong password for ``user`` over a real connection from 127.0.0.1 that says it forwards for
    ``forwarded_for``; the answer's status."""
    import http.client

    headers = {"X-Forwarded-For": forwarded_for}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/login", headers=headers)
        page = conn.getresponse()
        token = re.search(r'name="csrf" value="([^"]+)"', page.read().decode())
        assert token and page.status == 200
        cookie = page.getheader("set-cookie", "").split(";", 1)[0]
        body = f"csrf={token.group(1)}&username={user}&password=wrong+password%21"
        form = {**headers, "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/login", body=body, headers=form)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("trusted", "seen"), [((), ["127.0.0.1"]), (("127.0.0.1",), ["203.0.113.9", "203.0.113.10"])]
)
def test_the_login_limit_and_the_audit_see_forwarded_addresses_only_from_trusted_proxies(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, trusted: tuple[str, ...], seen: list[str]
) -> None:
    """uvicorn believed X-Forwarded-For from 127.0.0.1 by default (or from FORWARDED_ALLOW_IPS): any local
    process chose the address the login limit counted and the audit log wrote. Now only from
    console.trusted_proxies: without any, two wrong logins 'from' two forwarded addresses are one client
    (127.0.0.1), limited as one; from a trusted proxy they are two clients."""
    from riskctl.console.server import server_config

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # widens nothing now
    port = free_port()
    app = create_app(env["backend"], secure_cookies=False, limiter=RateLimiter(max_failures=1, window_s=60))
    stop = serve_in_thread(server_config(app, "127.0.0.1", port, trusted_proxies=trusted))
    try:
        first = _failed_login(port, "viewer", "203.0.113.9")
        second = _failed_login(port, "analyst", "203.0.113.10")
    finally:
        stop()
    assert first == 401
    # one failure per address allowed: the second is locked out only when both are the same client
    assert second == (401 if trusted else 429)
    failed = [e for e in env["accounts"].audit_log(None, 20) if e["action"] == "login_failed"]
    assert [e["detail"] for e in reversed(failed)] == [f"from {address}" for address in seen]


def test_a_label_or_logout_written_whose_audit_row_mysql_refuses_is_shown_written_and_logged(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A label (or a logout's end of session) is committed before its audit row is written: a refused audit
    row made a saved label a page saying it was not written (a trigger's SIGNAL: a 400; a lock wait: 503
    "nothing was"), and a logout that had ended the session an error. Now, as for a rule change, the label
    and the logout stand and the refused audit row is logged as an error."""
    client = TestClient(
        create_app(env["backend"], secure_cookies=False, feed=_feed()), follow_redirects=False
    )
    _, csrf = _login(client, "analyst")
    with _audit_refused(env), caplog.at_level(logging.ERROR, logger="riskctl.console"):
        data = {"csrf": csrf or "", "case_id": "3:bob:decision:e1", "label": "fraud", "note": "seen it"}
        labelled = client.post("/review/label", data=data)
        logged_out = client.post("/logout", data={"csrf": csrf or ""})
    assert labelled.status_code == 303 and labelled.headers["location"] == "/review", labelled.text
    assert logged_out.status_code == 303 and logged_out.headers["location"] == "/login", logged_out.text
    env["store"].conn.commit()  # a fresh read view
    assert env["accounts"].labels("bob", ["decision:e1"])["decision:e1"] == ("fraud", "seen it", "analyst")
    assert client.get("/rules").status_code == 303  # the session ended
    lines = [r.getMessage() for r in caplog.records if "its audit row was not" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("console: label of case '3:bob:decision:e1' by analyst was written"), lines
    assert "audit refused by the test trigger" in lines[0] and lines[0].endswith(": fraud: seen it")
    assert lines[1].startswith("console: logout of the session by analyst was written"), lines


def _login_error(resp: Any) -> str:
    """The reason a login page shows (its ``login-error`` paragraph), unescaped; '' when it shows none."""
    found = re.search(r'<p class="err" id="login-error">(.*?)</p>', resp.text, re.S)
    return html.unescape(found.group(1)) if found else ""


def _login_again(client: TestClient, resp: Any, user: str, password: str = PASSWORD) -> Any:
    """The login form ``resp`` showed again, sent with ``user`` and ``password`` (its fresh CSRF token)."""
    token = re.search(r'name="csrf" value="([^"]+)"', resp.text)
    assert token, resp.text
    return client.post("/login", data={"csrf": token.group(1), "username": user, "password": password})


def _login_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if "was not written, nobody was logged in" in r.getMessage()
    ]


@pytest.mark.parametrize("errno", [None, 1406], ids=["trigger-1644", "too-long-1406"])
def test_a_login_whose_audit_row_mysql_refuses_is_a_500_saying_why_and_logged(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture, errno: int | None
) -> None:
    """A login whose audit row MySQL refused (a trigger's SIGNAL, 1644; a value strict mode refuses, 1406
    here from the trigger) came out of Console.login as the driver's error: a bare 500 with a traceback.
    The console lets nobody in whose login it cannot record, as before (a9d18fe: the audit row comes
    before the session), but now says so: the login form again, a 500 naming the refusal and MySQL's
    code (its message only in the log: the login page is anyone's), the same answer for a right password
    as for a wrong one, an error line with MySQL's message; once the trigger is gone the form logs in."""
    code = errno or 1644
    client = _client(env)
    with _audit_refused(env, errno), caplog.at_level(logging.WARNING, logger="riskctl.console"):
        wrong, _ = _login(client, "analyst", "wrong password!")
        right, _ = _login(client, "viewer")
        assert client.get("/rules").status_code == 303  # nobody logged in
    for resp, user in ((wrong, "analyst"), (right, "viewer")):
        assert resp.status_code == 500, resp.text
        assert "Traceback" not in resp.text and "refused by the test trigger" not in resp.text
        assert f'name="username" value="{user}"' in resp.text
        assert "riskctl_console" not in resp.cookies
        assert "retry-after" not in resp.headers
    reason = _login_error(right)
    assert reason.startswith(f"not logged in: MySQL refused to record this login (MySQL error {code})"), (
        reason
    )
    assert _login_error(wrong) == reason  # a refused audit row does not tell whether the password was right
    lines = _login_lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0].startswith(
        "console: POST /login: the login of 'analyst' from testclient (its audit row: a "
    )
    assert lines[1].startswith(
        "console: POST /login: the login of 'viewer' from testclient (its audit row and "
    )
    assert all(f"MySQL error {code}: audit refused by the test trigger" in line for line in lines), lines

    assert [e for e in env["accounts"].audit_log(None, 20) if e["action"].startswith("login")] == []
    ok = _login_again(client, right, "viewer")  # the trigger is gone: the form shown logs in
    assert ok.status_code == 303 and ok.headers["location"] == "/rules", ok.text
    assert client.get("/rules").status_code == 200
    logins = [e for e in env["accounts"].audit_log(None, 20) if e["action"].startswith("login")]
    assert [(e["user"], e["action"], e["detail"]) for e in logins] == [("viewer", "login", "from testclient")]


def test_a_login_whose_session_mysql_refuses_writes_no_audit_row_and_says_why(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The session's row is the other write of a login: refused by a trigger, it was the driver's error (a
    bare 500) and the 'login' audit row, written before it in a transaction of its own, stayed, naming a
    login that let nobody in. Now the audit row and the session are one transaction: neither is written,
    the answer is the login form again with a 500 naming the refusal, the log has MySQL's message."""
    client = _client(env)
    sessions = table_names(env["table"]).console()["sessions"]
    with _inserts_refused(env, "sessions"), caplog.at_level(logging.WARNING, logger="riskctl.console"):
        resp, _ = _login(client, "approver")
    assert resp.status_code == 500, resp.text
    assert "Traceback" not in resp.text and "refused by the test trigger" not in resp.text
    reason = _login_error(resp)
    assert reason.startswith("not logged in: MySQL refused to record this login (MySQL error 1644)"), reason
    assert 'name="username" value="approver"' in resp.text and "riskctl_console" not in resp.cookies
    [line] = _login_lines(caplog)
    assert line.startswith(
        "console: POST /login: the login of 'approver' from testclient (its audit row and "
    )
    assert line.endswith("MySQL refused it: MySQL error 1644: sessions refused by the test trigger"), line
    env["store"].conn.commit()  # a fresh read view
    assert [e for e in env["accounts"].audit_log(None, 20) if e["action"].startswith("login")] == []
    with env["store"].conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{sessions}`")
        assert cur.fetchone() == (0,)
    ok = _login_again(client, resp, "approver")
    assert ok.status_code == 303, ok.text
    assert [e["user"] for e in env["accounts"].audit_log(None, 20) if e["action"] == "login"] == ["approver"]


@pytest.mark.parametrize("errno", [None, 1205], ids=["signal-1644", "lock-wait-1205"])
def test_a_backtest_whose_audit_row_mysql_refuses_shows_its_result_and_logs_it(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture, errno: int | None
) -> None:
    """A backtest writes nothing but its audit row, after the run: a refused one (a trigger's SIGNAL, 1644)
    threw the result away for a bare 500 with a traceback, a lock wait (1205) for a 503. As for a label or
    a rule change, the result is shown and the missing row is logged as an error naming MySQL's error."""
    client = TestClient(
        create_app(env["backend"], secure_cookies=False),
        follow_redirects=False,
        raise_server_exceptions=False,  # the answer a browser gets, not the exception
    )
    _, csrf = _login(client, "analyst")
    files = {"events": ("events.jsonl", EVENTS, "application/x-ndjson")}
    with _audit_refused(env, errno), caplog.at_level(logging.ERROR, logger="riskctl.console"):
        resp = client.post("/api/backtest", data=_form(), files=files, headers={"X-CSRF-Token": csrf or ""})
    assert resp.status_code == 200, resp.text
    assert "Traceback" not in resp.text
    out = resp.json()
    assert out["ok"] is True and out["draft"]["hits"] == 1 and out["current"]["hits"] == 2, out
    env["store"].conn.commit()  # a fresh read view
    assert [e for e in env["accounts"].audit_log("big_amount", 20) if e["action"] == "backtest"] == []
    lines = [r.getMessage() for r in caplog.records if "its audit row was not" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("console: backtest of rule 'big_amount' by analyst was run"), lines
    assert f"error {errno or 1644}" in lines[0], lines  # MySQL's error, named
    assert lines[0].endswith(f": {out['lines']} lines"), lines
    if errno is None:
        assert "audit refused by the test trigger" in lines[0], lines


def test_a_label_or_logout_that_mysql_refuses_says_so_without_a_traceback(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A label MySQL refuses (a trigger on the labels) and a logout whose end of session it refuses (a
    trigger on deleting sessions) were bare 500s with a traceback. The label is a 400 with MySQL's message,
    as a status change MySQL refuses, nothing written; the logout a 500 saying the session is still open
    (it is), logged as an error."""
    client = TestClient(
        create_app(env["backend"], secure_cookies=False, feed=_feed()),
        follow_redirects=False,
        raise_server_exceptions=False,
    )
    _, csrf = _login(client, "analyst")
    data = {"csrf": csrf or "", "case_id": "3:bob:decision:e1", "label": "fraud", "note": "seen it"}
    with _inserts_refused(env, "labels"):
        labelled = client.post("/review/label", data=data)
    assert labelled.status_code == 400, labelled.text
    assert "the label was not written: MySQL error 1644: labels refused by the test trigger" in labelled.text
    assert "Traceback" not in labelled.text
    env["store"].conn.commit()  # a fresh read view
    assert env["accounts"].labels("bob", ["decision:e1"]) == {}

    sessions = env["store"].names.console()["sessions"]
    trigger = f"`{env['table']}_nologout`"
    with env["store"].conn.cursor() as cur:
        cur.execute(
            f"CREATE TRIGGER {trigger} BEFORE DELETE ON `{sessions}` FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'logout refused by the test trigger'"
        )
    try:
        with caplog.at_level(logging.ERROR, logger="riskctl.console"):
            logged_out = client.post("/logout", data={"csrf": csrf or ""})
    finally:
        with env["store"].conn.cursor() as cur:
            cur.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    assert logged_out.status_code == 500, logged_out.text
    assert "not logged out: MySQL refused to end this session (MySQL error 1644" in logged_out.text
    assert "it is still open" in logged_out.text and "Traceback" not in logged_out.text
    assert client.get("/rules").status_code == 200  # the session still acts, as the page says
    lines = [r.getMessage() for r in caplog.records if "was not ended" in r.getMessage()]
    assert lines == [
        "console: POST /logout: the session of analyst was not ended: MySQL refused it: "
        "MySQL error 1644: logout refused by the test trigger"
    ], lines
    assert client.post("/logout", data={"csrf": csrf or ""}).status_code == 303  # the trigger gone


def test_a_case_of_another_user_with_the_same_event_id_does_not_take_its_label(env: dict[str, Any]) -> None:
    """Event ids are the sender's, unique only within a user, and cases were keyed by ``decision:<event_id>``
    alone: an attacker's event with a victim's event id made both cases one key, the page posted that key for
    both, the label meant for the victim's case landed on the newest (the attacker's: his user, his rules),
    and a label of either replaced the other's. Keyed by (user, id) now: each case keeps its own label."""
    import time

    from riskctl.console.feed import Feed

    now = int(time.time() * 1000)
    feed = Feed()
    feed.add(
        ({"kind": "decision", "event_id": "e7", "user_id": user, "type": "transfer", "ts": now,
          "action": "REVIEW", "rules": [{"id": rule}], "shadow": []}, now + n)
        for n, (user, rule) in enumerate((("alice", "big_amount"), ("mallory", "night")))
    )  # fmt: skip
    client = TestClient(create_app(env["backend"], secure_cookies=False, feed=feed), follow_redirects=False)
    _, csrf = _login(client, "analyst")
    rows = re.findall(
        r'<tr data-case="([^"]*)"><td>decision:e7</td><td><a href="/users\?id=(\w+)"',
        client.get("/review").text,
    )
    keys = {user: html.unescape(key) for key, user in rows}
    assert set(keys) == {"alice", "mallory"} and keys["alice"] != keys["mallory"], rows

    def stored() -> set[tuple[str, str, str]]:
        labels = table_names(env["table"]).console()["labels"]
        env["store"].conn.commit()  # a fresh read view
        with env["store"].conn.cursor() as cur:
            cur.execute(f"SELECT user_id, rule_id, label FROM `{labels}`")  # noqa: S608 - a test's table
            return {tuple(row) for row in cur.fetchall()}

    resp = client.post("/review/label", data={"csrf": csrf or "", "case_id": keys["alice"], "label": "fraud"})
    assert resp.status_code == 303, resp.text
    assert stored() == {("alice", "big_amount", "fraud")}  # the victim's case, with her rule
    resp = client.post(
        "/review/label", data={"csrf": csrf or "", "case_id": keys["mallory"], "label": "legitimate"}
    )
    assert resp.status_code == 303, resp.text
    assert stored() == {("alice", "big_amount", "fraud"), ("mallory", "night", "legitimate")}  # hers kept
    assert env["accounts"].precision("big_amount")["active"]["fraud"] == 1
    page = client.get("/review").text
    assert page.count('<strong class="label">fraud</strong>') == page.count(
        '<strong class="label">legitimate'
    )
    assert page.count('<strong class="label">') == 2


def _former_key(case_id: str) -> str:
    """The labels' key of a case before migration 3: its id, or a prefix of it and its SHA-256."""
    import hashlib

    if len(case_id) <= 255 and "#sha256:" not in case_id:
        return case_id
    digest = hashlib.sha256(case_id.encode()).hexdigest()
    return case_id[: 255 - len("#sha256:") - len(digest)] + "#sha256:" + digest


def test_the_console_start_rewrites_former_label_keys_with_their_user(
    env: dict[str, Any], stack: Settings
) -> None:
    """Labels stored under ``decision:<event_id>`` / ``alert:<alert_id>`` (the key of before, migration 2's
    table) are rewritten at the console's start (migration 3) to the key of their case's user and id, the
    hashed ones of long ids too, in one transaction; rows already in the new form, or without a user, stay."""
    from riskctl.store import migrations
    from riskctl.store.migrations import MIGRATIONS_TABLE, case_key

    long_id = "e" * 4096
    former = {  # the keys the console wrote before (prefix and SHA-256 of the id beyond 255 characters)
        "decision:e1": _former_key("decision:e1"),
        f"decision:{long_id}": _former_key(f"decision:{long_id}"),
        "alert:big_amount:1:rule_alert:e1": _former_key("alert:big_amount:1:rule_alert:e1"),
    }
    assert "#sha256:" in former[f"decision:{long_id}"]
    table = f"m{uuid.uuid4().hex[:10]}_rules"
    conn = env["store"].conn
    names = table_names(table)
    labels = names.console()["labels"]
    try:
        with conn.cursor() as cur:  # the store as migration 2 left it
            migrations._ensure_migrations_table(cur)
            for version, description, apply in migrations.MIGRATIONS[:2]:
                apply(cur, names.quoted())
                cur.execute(
                    f"INSERT INTO `{MIGRATIONS_TABLE}` (scope, version, description) VALUES (%s, %s, %s)",  # noqa: S608
                    (table, version, description),
                )
            rows = [
                (former["decision:e1"], "big_amount", False, "alice", "fraud"),
                (former["decision:e1"], "night", True, "alice", "fraud"),
                (former[f"decision:{long_id}"], "big_amount", False, "bob", "legitimate"),
                (former["alert:big_amount:1:rule_alert:e1"], "big_amount", False, "carol", "fraud"),
                ("5:alice:decision:e9", "big_amount", False, "alice", "fraud"),  # already new
                ("decision:e2", "big_amount", False, None, "fraud"),  # no user: cannot be keyed
            ]
            cur.executemany(
                f"INSERT INTO `{labels}` (case_id, rule_id, shadow, user_id, label, labelled_by) "  # noqa: S608
                "VALUES (%s, %s, %s, %s, %s, 'old')",
                rows,
            )
        conn.commit()
        with Backend(lambda: connect(stack), table).open():  # the console's start: migrates its tables
            pass

        def keys() -> set[tuple[str, str, str | None]]:
            conn.commit()
            with conn.cursor() as cur:
                cur.execute(f"SELECT case_id, rule_id, user_id FROM `{labels}`")  # noqa: S608
                return {(str(c), str(r), u) for c, r, u in cur.fetchall()}

        want = {
            (case_key("alice", "decision:e1"), "big_amount", "alice"),
            (case_key("alice", "decision:e1"), "night", "alice"),
            (case_key("bob", f"decision:{long_id}"), "big_amount", "bob"),
            (case_key("carol", "alert:big_amount:1:rule_alert:e1"), "big_amount", "carol"),
            ("5:alice:decision:e9", "big_amount", "alice"),
            ("decision:e2", "big_amount", None),
        }
        assert keys() == want
        assert case_key("alice", "decision:e1") == "5:alice:decision:e1"
        accounts = AccountStore(conn, table, auto_migrate=False)
        assert accounts.labels("bob", [f"decision:{long_id}"])[f"decision:{long_id}"][0] == "legitimate"
        assert accounts.labels("alice", [f"decision:{long_id}"]) == {}
        with conn.cursor() as cur:  # once more (a second start, another process): nothing changes
            migrations._v3(cur, names.quoted())
        assert keys() == want
    finally:
        drop_store(conn, table)
