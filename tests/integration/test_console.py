"""The console in a real browser: Debian's headless Chromium driven by Selenium (chromium-driver).

An approver logs in, edits a rule, makes an error and sees it at the field, fixes it, backtests it on an
uploaded file, publishes it and finds the new version in MySQL with its author; a viewer can neither edit nor
publish; a reviewer's labels change the rule's precision. The console runs in this process (uvicorn in a
thread) over uuid-named tables of the real MySQL.
A missing chromium or chromedriver is a failure (scripts/setup installs them), never a skip.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium.webdriver.support.ui import WebDriverWait

from riskctl.cli.replay import JOB_DEFAULTS
from riskctl.config import PROJECT_ROOT, Settings
from riskctl.console.accounts import AccountStore
from riskctl.console.app import Backend, create_app
from riskctl.console.feed import Feed
from riskctl.core.rules import RuleSet, parse_rule
from riskctl.store.connection import connect
from riskctl.store.migrations import drop_store
from riskctl.store.rules_store import RuleStore
from tests.helpers import free_port, serve_in_thread

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"  # noqa: S105 - a test account's
WAIT_S = 10
#: where the rules page's screenshot goes when RISKCTL_CONSOLE_SCREENSHOT=1 (the README's); else tmp_path
SCREENSHOT = PROJECT_ROOT / "docs" / "img" / "console-rules.png"
EVENTS = "\n".join(
    f'{{"event_id": "e{i}", "user_id": "u{i % 4}", "type": "transfer", "ts": {1_700_000_000_000 + i * 1000}, '
    f'"amount": {i * 300}}}'
    for i in range(1, 21)
)


@pytest.fixture
def console(stack: Settings) -> Iterator[dict[str, Any]]:
    table = f"b{uuid.uuid4().hex[:10]}_rules"
    conn = connect(stack)
    store = RuleStore(conn, table)
    accounts = AccountStore(conn, table)
    accounts.add_user("ann", "approver", PASSWORD)
    accounts.add_user("vic", "viewer", PASSWORD)
    docs = [
        {"id": "big_amount", "action": "REVIEW", "priority": 5, "when": "event.amount > 3000"},
        {"id": "new_device", "action": "REVIEW", "status": "shadow", "when": "event.type == 'login'"},
        {"id": "brute_force", "action": "REJECT", "priority": 10, "when": "fails >= 5",
         "features": {"fails": {"kind": "count", "window": "10m", "filter": "event.type == 'login'"}}},
    ]  # fmt: skip
    store.apply(store.plan(RuleSet([parse_rule(d) for d in docs])), author="setup", comment="seed")
    port = free_port()
    feed = Feed()
    now = int(time.time() * 1000)
    feed.add(
        (
            {"kind": "decision", "event_id": f"r{i}", "user_id": f"u{i}", "type": "transfer", "ts": now,
             "action": "REVIEW", "shadow": [],
             "rules": [{"id": "big_amount", "version": 1, "action": "REVIEW", "evidence": {}}]},
            now,
        )
        for i in (1, 2)
    )  # fmt: skip
    backend = Backend(lambda: connect(stack), table)
    decides = dataclasses.replace(
        JOB_DEFAULTS, lateness=7000, too_late_action="REVIEW"
    )  # as a job configured so
    app = create_app(backend, secure_cookies=False, feed=feed, replay_settings=decides)
    stop = _serve(app, port)
    yield {"url": f"http://127.0.0.1:{port}", "store": store, "feed": feed, "backend": backend}
    stop()
    drop_store(conn, table)
    conn.close()


def _serve(app: Any, port: int) -> Any:
    """Serve ``app`` on ``port`` (uvicorn in a thread) once it listens; returns the function that stops it."""
    return serve_in_thread(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"), WAIT_S)


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium_driver() as driver:
        yield driver


@contextmanager
def chromium_driver() -> Iterator[Any]:
    """Debian's headless Chromium through its chromedriver; a missing one fails the test (never a skip)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail(
            "chromium or chromedriver is missing: run scripts/setup (it installs chromium, chromium-driver)",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait(driver: Any, condition: Any) -> Any:
    return WebDriverWait(driver, WAIT_S).until(condition)


def _login(driver: Any, url: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{url}/login")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    _wait(driver, lambda d: d.current_url.endswith("/rules"))


def test_edit_error_fix_backtest_publish(console: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, store = console["url"], console["store"]
    _login(browser, url, "ann")
    rows = browser.find_elements(By.CSS_SELECTOR, "#rules tr[data-rule]")
    assert [r.get_attribute("data-rule") for r in rows] == ["big_amount", "brute_force", "new_device"]
    assert "not seen by the job yet" in rows[0].text
    # what the job writes when it applies a version (table rule_status): the page shows it
    with store.conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {store.names.quoted()['status']} (rule_id, version, state) "  # noqa: S608
            "VALUES (%s, 1, 'accepted')",
            [("big_amount",), ("brute_force",), ("new_device",)],
        )
    store.conn.commit()
    browser.refresh()
    assert "accepted" in browser.find_element(By.CSS_SELECTOR, '#rules tr[data-rule="big_amount"]').text
    shot = SCREENSHOT if os.environ.get("RISKCTL_CONSOLE_SCREENSHOT") == "1" else tmp_path / "rules.png"
    assert browser.save_screenshot(str(shot))

    browser.find_element(By.LINK_TEXT, "big_amount").click()
    browser.find_element(By.ID, "edit").click()
    action = browser.find_element(By.ID, "f-action")
    action.clear()
    action.send_keys("REJCT")  # an error: shown at the field, as you type
    error = _wait(browser, lambda d: d.find_element(By.ID, "err-action").text or None)
    assert "REJECT" in error  # the validator's did-you-mean
    assert "invalid" in action.get_attribute("class")
    assert browser.find_element(By.ID, "err-when").text == ""
    action.clear()
    action.send_keys("REJECT")
    _wait(browser, lambda d: d.find_element(By.ID, "validity").text == "valid")
    assert browser.find_element(By.ID, "err-action").text == ""
    when = browser.find_element(By.ID, "f-when")
    when.clear()
    when.send_keys("event.amount > 4500")
    _wait(browser, lambda d: d.find_element(By.ID, "validity").text == "valid")

    events = tmp_path / "events.jsonl"
    events.write_text(EVENTS + "\n")
    browser.find_element(By.ID, "events").send_keys(str(events))
    browser.find_element(By.ID, "backtest").click()
    table = _wait(browser, lambda d: d.find_elements(By.ID, "backtest-table") or None)[0]
    cells = [
        [c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in table.find_elements(By.TAG_NAME, "tr")
    ]
    draft = next(c for c in cells if c and c[0] == "draft")
    current = next(c for c in cells if c and c[0] == "current")
    assert (draft[1], current[1]) == ("5", "10")  # amount = 300 i: > 4500 for i 16..20, > 3000 for i 11..20
    assert "only by the current version: 5" in browser.find_element(By.ID, "backtest-diff").text
    said = browser.find_element(By.ID, "backtest-settings").text  # the console's (the fixture's)
    assert "lateness 7000 ms, a too-late event at least REVIEW" in said

    browser.find_element(By.ID, "comment").send_keys("reject the largest transfers")
    browser.find_element(By.ID, "publish").click()
    _wait(browser, lambda d: d.current_url.endswith("/rules/big_amount"))
    assert browser.find_element(By.ID, "version").text == "v2"
    stored = store.get("big_amount")
    assert stored.version == 2 and stored.updated_by == "ann"
    assert stored.document["action"] == "REJECT" and stored.document["when"] == "event.amount > 4500"
    assert store.history("big_amount")[-1].comment == "reject the largest transfers"
    audit = browser.find_element(By.ID, "audit").text
    assert "ann" in audit and "publish" in audit


def test_a_viewer_cannot_publish(console: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    url, store = console["url"], console["store"]
    _login(browser, url, "vic")
    browser.get(f"{url}/rules/big_amount")
    assert browser.find_elements(By.ID, "edit") == []
    assert browser.find_elements(By.ID, "op-disable") == []
    browser.get(f"{url}/rules/big_amount/edit")
    assert "may not draft" in browser.find_element(By.TAG_NAME, "body").text
    # a forged publish from the viewer's own session (right CSRF token, wrong role): 403, nothing written
    browser.get(f"{url}/rules")
    status = browser.execute_script(
        """const d = new FormData(); d.set('csrf', CSRF); d.set('rule_id', 'big_amount');
           d.set('action', 'PASS'); d.set('when', 'true'); d.set('base_version', '1');
           return fetch('/rules/publish', {method: 'POST', body: d}).then(r => r.status);"""
    )
    assert status == 403
    assert store.get("big_amount").version == 1


def _label_of(driver: Any, case: str) -> str | None:
    """The label the review page shows for ``case``; None while the page is being replaced."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, f'#cases tr[data-case="{case}"] .label').text)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def test_a_label_changes_the_rules_precision(console: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    url = console["url"]
    _login(browser, url, "ann")

    def precision() -> str:
        browser.get(f"{url}/rules/big_amount")
        return str(browser.find_element(By.CSS_SELECTOR, '#precision tr[data-mode="active"] td.value').text)

    assert precision() == "—"
    for case, label in (("2:u1:decision:r1", "fraud"), ("2:u2:decision:r2", "legitimate")):  # (user, id)
        browser.get(f"{url}/review")
        row = browser.find_element(By.CSS_SELECTOR, f'#cases tr[data-case="{case}"]')
        row.find_element(By.NAME, "note").send_keys(f"checked {case}")
        row.find_element(By.CSS_SELECTOR, f'button[value="{label}"]').click()
        # the page was /review already: wait for the answer to the POST (its redirect) to show the label
        _wait(browser, lambda d, case=case, label=label: _label_of(d, case) == label)
        if label == "fraud":
            assert precision() == "100%"
    assert precision() == "50%"


def test_users_named_dot_and_dot_dot_have_their_page(console: dict[str, Any], browser: Any) -> None:
    """User ids are the events' (any string). The decisions page linked the user '..' as /users/.., which the
    browser resolves to / (the rules list), and '.' as /users/ (an empty user: 'Nothing recent'); '%2e%2e'
    is a dot segment to a browser too, so no path can carry them. Links and the replay form now give the id
    in the query (/users?id=..), and every user's page is the user's, replay included."""
    from selenium.webdriver.common.by import By

    url, feed = console["url"], console["feed"]
    now = int(time.time() * 1000)
    users = (".", "..", "./..", "a/../b", "%2e%2e", "x&y=z #1 +")
    feed.add(
        (
            {"kind": "decision", "event_id": f"d{i}", "user_id": user, "type": "transfer", "ts": now,
             "action": "REVIEW", "shadow": [],
             "rules": [{"id": "big_amount", "version": 1, "action": "REVIEW", "evidence": {"n": i}}]},
            now,
        )
        for i, user in enumerate(users)
    )  # fmt: skip
    _login(browser, url, "vic")
    for i, user in enumerate(users):
        browser.get(f"{url}/decisions")
        links = [a for a in browser.find_elements(By.CSS_SELECTOR, "#decisions a") if a.text == user]
        assert links, user
        links[0].click()
        heading = _wait(browser, lambda d: d.find_elements(By.TAG_NAME, "h1") or None)[0].text
        assert heading == f"User {user}", (user, browser.current_url)
        table = browser.find_element(By.ID, "user-decisions").text
        assert "Nothing recent" not in table and f'{{"n": {i}}}' in table, table
        browser.find_element(By.ID, "replay").click()  # no events topic here: the error, on the same user
        _wait(browser, lambda d: d.find_elements(By.ID, "replay-error") or None)
        assert browser.find_element(By.TAG_NAME, "h1").text == f"User {user}", browser.current_url


def test_decisions_show_an_event_stamped_ahead_late_or_too_late(
    console: dict[str, Any], browser: Any
) -> None:
    """An analyst sees what the job said of an event's time: stamped ahead of its clock (``ahead_ms``: decided
    at the clock's time), late, too late (counted by no feature): a client that sets its events' ``ts``
    shows. Records come from Kafka, so a mark shows only for a value of the job's own type."""
    from selenium.webdriver.common.by import By

    url, feed = console["url"], console["feed"]
    now = int(time.time() * 1000)
    user = f"marks-{now}"
    cases = {
        "ahead": ({"ahead_ms": 299_000}, f"{now} ahead 299.0 s"),
        "too-late": ({"late": True, "too_late": True}, f"{now} too late"),
        "late": ({"late": True, "too_late": False, "ahead_ms": 0}, f"{now} late"),
        "ahead-far": ({"ahead_ms": 1e300}, f"{now} ahead far s"),
        "plain": ({"late": False, "too_late": False, "ahead_ms": 0}, f"{now}"),
        "text": ({"ahead_ms": "299000", "late": "yes", "too_late": 1}, f"{now}"),
        "bool": ({"ahead_ms": True}, f"{now}"),
        "negative": ({"ahead_ms": -5}, f"{now}"),
        "nan": ({"ahead_ms": float("nan")}, f"{now}"),
        "list": ({"ahead_ms": [299_000]}, f"{now}"),
    }
    feed.add(
        ({"kind": "decision", "event_id": f"{user}-{name}", "user_id": user, "type": "transfer", "ts": now,
          "action": "PASS", "rules": [], "shadow": [], **fields}, now)
        for name, (fields, _) in cases.items()
    )  # fmt: skip
    _login(browser, url, "vic")

    def rows(table: str) -> list[list[str]]:
        found = browser.find_elements(By.CSS_SELECTOR, f"#{table} tr")
        return [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in found[1:]]

    browser.get(f"{url}/decisions?user={user}")
    shown = {cells[-1].removeprefix(f"{user}-"): cells[0] for cells in rows("decisions")}
    assert shown == {name: want for name, (_, want) in cases.items()}
    browser.get(f"{url}/users?id={user}")  # (no event id column there)
    assert sorted(cells[0] for cells in rows("user-decisions")) == sorted(w for _, w in cases.values())
    titles = [m.get_attribute("title") for m in browser.find_elements(By.CSS_SELECTOR, ".mark.ahead")]
    assert "stamped 299000 ms ahead of the job's clock: decided at the clock's time" in titles


def test_a_backtest_file_over_the_limit_says_so(
    console: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    """A file over the body limit is answered 413 in plain text; the editor's script read every answer as
    JSON, threw, and the backtest said 'running...' forever. Now the answer is shown under the button."""
    from selenium.webdriver.common.by import By

    from riskctl.console.app import MAX_BODY_BYTES

    _login(browser, console["url"], "ann")
    browser.get(f"{console['url']}/rules/big_amount/edit")
    big = tmp_path / "big.jsonl"
    line = (EVENTS.splitlines()[0] + "\n").encode()
    big.write_bytes(line * (MAX_BODY_BYTES // len(line) + 1))
    browser.find_element(By.ID, "events").send_keys(str(big))
    browser.find_element(By.ID, "backtest").click()
    result = _wait(
        browser, lambda d: (t := d.find_element(By.ID, "backtest-result").text) != "running..." and t
    )
    assert "413" in result and "request body over" in result
    assert browser.find_element(By.ID, "backtest-result").get_attribute("class") == "err"


def test_the_rule_page_reconnects_after_failed_polls(console: dict[str, Any], browser: Any) -> None:
    """The rule page asks the job's status of the current version every 2 s until the job reports it. One
    failed ask ended the asking (fetch rejects when there is no answer, and nothing caught it): after a blip
    (the console restarted, the network) the page said "not seen by the job yet" for ever, while the job had
    long accepted the version. Now it says it is reconnecting, asks again with a growing wait, and shows the
    job's status once the console answers again. Here the server fails a few asks for real: one answered
    502 (a proxy's), then the console is stopped (no answer at all: fetch rejects), then started again."""
    from selenium.webdriver.common.by import By

    store, port = console["store"], free_port()
    url = f"http://127.0.0.1:{port}"
    inner = create_app(console["backend"], secure_cookies=False, feed=console["feed"])
    failing = {"left": 0, "asked": 0}

    async def flaky(scope: Any, receive: Any, send: Any) -> None:
        """The console, but the status API answers 502 while ``failing["left"]`` says so."""
        if scope["type"] == "http" and scope["path"].startswith("/api/rules/"):
            failing["asked"] += 1
            if failing["left"] > 0:
                failing["left"] -= 1
                await send({"type": "http.response.start", "status": 502, "headers": []})
                await send({"type": "http.response.body", "body": b"bad gateway"})
                return
        await inner(scope, receive, send)

    stop = _serve(flaky, port)
    _login(browser, url, "ann")
    failing["left"] = 1
    browser.get(f"{url}/rules/big_amount")
    assert "not seen by the job yet" in browser.find_element(By.ID, "job-status").text
    note = _wait(browser, lambda d: (e := d.find_element(By.ID, "poll-state")).is_displayed() and e)
    assert "reconnecting" in note.text and "502" in note.text, note.text
    stop()  # the console goes away: the next asks get no answer at all
    _wait(browser, lambda d: "the last 2 tries failed" in d.find_element(By.ID, "poll-state").text)
    asked = failing["asked"]
    # the job accepts the version meanwhile (what it writes to rule_status)
    with store.conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {store.names.quoted()['status']} (rule_id, version, state) "  # noqa: S608
            "VALUES ('big_amount', 1, 'accepted')"
        )
    store.conn.commit()
    stop = _serve(flaky, port)  # back, on the same address
    try:
        # the wait after two failures is 4 to 4.8 s, after three 8 to 9.6 s: within 20 s whatever the timing
        status = WebDriverWait(browser, 20).until(
            lambda d: "accepted" in (t := d.find_element(By.ID, "job-status").text) and t
        )
        assert status.startswith("accepted at ")
        assert not browser.find_element(By.ID, "poll-state").is_displayed()
        assert failing["asked"] == asked + 1  # one ask after the console came back, and the asking stopped
        time.sleep(3)
        assert failing["asked"] == asked + 1
    finally:
        stop()


def test_the_decisions_page_stays_live_through_a_restart(console: dict[str, Any], browser: Any) -> None:
    """The live decisions page reloaded itself every 5 s: one reload while the console was away (restarting,
    the network) replaced it with the browser's error page, which has no script, and it never refreshed
    again (a 503 while MySQL was away: the same, with the 503's text). Now the page asks for itself, keeps
    what it shows when the ask fails, says it is reconnecting, and shows the new decisions once the console
    answers again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    feed, port = console["feed"], free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(console["backend"], secure_cookies=False, feed=feed)

    def record(eid: str) -> tuple[dict[str, Any], int]:
        now = int(time.time() * 1000)
        return (
            {"kind": "decision", "event_id": eid, "user_id": "u9", "type": "transfer", "ts": now,
             "action": "REJECT", "shadow": [], "rules": [{"id": "brute_force", "evidence": {}}]},
            now,
        )  # fmt: skip

    def shown(d: Any) -> str:
        try:
            return str(d.find_element(By.ID, "decisions").text)
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    stop = _serve(app, port)
    _login(browser, url, "vic")
    browser.get(f"{url}/decisions")
    feed.add([record("live-1")])
    _wait(browser, lambda d: "live-1" in shown(d))  # within 5 s, without a reload
    stop()
    note = _wait(browser, lambda d: (e := d.find_element(By.ID, "live-state")).is_displayed() and e)
    assert "reconnecting" in note.text, note.text
    assert "live-1" in shown(browser)  # what it showed is still there
    feed.add([record("live-2")])
    stop = _serve(app, port)
    try:
        # the wait after one failure is 5 to 6 s, after two 10 to 12 s: within 25 s whatever the timing
        WebDriverWait(browser, 25).until(lambda d: "live-2" in shown(d))
        assert not browser.find_element(By.ID, "live-state").is_displayed()
        assert browser.find_element(By.ID, "live").is_selected()
    finally:
        stop()
