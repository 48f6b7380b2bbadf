"""Latency of the console's pages on the local stack's MySQL: a login, then 50 GETs of the rules list and of a
rule page.

Run: ``PYTHONPATH=. .venv/bin/python bench/console_pages.py`` (uuid-named tables with rules/ applied,
dropped at the end). Each request opens its own MySQL connection (docs/console.md): that is most of the time.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.testclient import TestClient

from riskctl.config import load_settings
from riskctl.console.accounts import AccountStore
from riskctl.console.app import Backend, create_app
from riskctl.core.rules import load_rules
from riskctl.store.connection import connect
from riskctl.store.migrations import drop_store
from riskctl.store.rules_store import RuleStore

PASSWORD = "correct horse battery"  # noqa: S105 - a throw-away account of a throw-away table
REQUESTS = 50


def main() -> None:
    settings = load_settings()
    table = f"l{uuid.uuid4().hex[:8]}_rules"
    conn = connect(settings)
    try:
        store = RuleStore(conn, table)
        store.apply(store.plan(load_rules("rules")), author="bench")
        AccountStore(conn, table).add_user("v", "viewer", PASSWORD)
        app = create_app(Backend(lambda: connect(settings), table), secure_cookies=False)
        client = TestClient(app, follow_redirects=False)
        found = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert found
        t = time.perf_counter()
        resp = client.post("/login", data={"csrf": found.group(1), "username": "v", "password": PASSWORD})
        assert resp.status_code == 303
        print(f"login (scrypt + session): {1000 * (time.perf_counter() - t):.0f} ms")
        for path in ("/rules", "/rules/transfer_velocity"):
            times = []
            for _ in range(REQUESTS):
                t = time.perf_counter()
                assert client.get(path).status_code == 200
                times.append(1000 * (time.perf_counter() - t))
            times.sort()
            p50, p90 = times[REQUESTS // 2], times[REQUESTS * 9 // 10]
            print(f"{path}: p50 {p50:.1f} ms, p90 {p90:.1f} ms over {REQUESTS} requests")
    finally:
        drop_store(conn, table)
        conn.close()


if __name__ == "__main__":
    main()
