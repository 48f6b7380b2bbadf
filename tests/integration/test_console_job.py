"""The console with the running job, in a real browser: an approver creates a rule, the page shows the moment
the job accepts it (through CDC), and the job's decisions change; the console's decisions page shows them.

Slower than tests/integration/test_console.py (it starts the Flink job on the MiniCluster), so it is a file
of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from riskctl.config import Settings
from riskctl.console.accounts import AccountStore
from riskctl.console.app import Backend, create_app
from riskctl.console.feed import Feed, KafkaTail
from riskctl.store.connection import connect
from riskctl.store.migrations import drop_store
from tests.helpers import free_port
from tests.integration.support import S, ev, new_job, start_job, wait_rules
from tests.integration.test_console import PASSWORD, WAIT_S, _login, _wait, chromium_driver

pytestmark = pytest.mark.integration


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium_driver() as driver:
        yield driver


@pytest.fixture
def running(stack: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    job = new_job(stack, tmp_path)
    proc = start_job(job, tmp_path / "job.log")
    conn = connect(stack)
    feed = Feed()
    tail = KafkaTail(feed, stack.kafka_bootstrap, [job.topics["decisions"], job.topics["alerts"]]).start()
    server = None
    thread = None
    try:
        AccountStore(conn, job.rules_table).add_user("ann", "approver", PASSWORD)
        port = free_port()
        app = create_app(Backend(lambda: connect(stack), job.rules_table), secure_cookies=False, feed=feed)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_rules(job)
        yield {"job": job, "url": f"http://127.0.0.1:{port}", "feed": feed}
    finally:
        proc.stop()
        tail.stop()
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(WAIT_S)
        drop_store(conn, job.rules_table)
        conn.close()


def test_publish_is_accepted_by_the_job_and_decisions_change(running: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    job, url = running["job"], running["url"]
    user = job.user("console")
    job.send([ev(f"{user}-0", user, "transfer", 0, amount=4242)])
    before = job.decisions_for([f"{user}-0"])[f"{user}-0"]
    assert "console_block" not in [r["id"] for r in before["rules"]]

    _login(browser, url, "ann")
    browser.get(f"{url}/rules/new")
    for name, value in (("id", "console_block"), ("action", "REJECT"), ("applies_to", "[transfer]")):
        browser.find_element(By.ID, f"f-{name}").send_keys(value)
    browser.find_element(By.ID, "f-when").send_keys("event.amount == 4242")
    _wait(browser, lambda d: d.find_element(By.ID, "validity").text == "valid")
    browser.find_element(By.ID, "publish").click()
    _wait(browser, lambda d: d.current_url.endswith("/rules/console_block"))
    # the page polls the job's status: "accepted at <time>" appears without a reload (CDC takes seconds; a
    # loaded machine gets a minute and a half)
    WebDriverWait(browser, 90).until(lambda d: "accepted at" in d.find_element(By.ID, "job-status").text)

    job.send([ev(f"{user}-1", user, "transfer", 1 * S, amount=4242)])
    after = job.decisions_for([f"{user}-1"])[f"{user}-1"]
    assert after["action"] == "REJECT" and "console_block" in [r["id"] for r in after["rules"]]

    def shown(d: Any) -> str | None:
        d.get(f"{url}/decisions?rule=console_block")
        text = str(d.find_element(By.ID, "decisions").text)
        return text if f"{user}-1" in text else None

    table = WebDriverWait(browser, 30, poll_frequency=1).until(shown)
    assert "REJECT" in table and f"{user}-0" not in table
