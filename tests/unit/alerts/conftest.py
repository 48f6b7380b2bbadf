from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest


def alert_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "alert",
        "alert_id": "transfer_velocity:3:rule_alert:e1",
        "user_id": "u1",
        "reason": "rule_alert",
        "ts": 1_700_000_000_000,
        "rule": {
            "id": "transfer_velocity",
            "version": 3,
            "action": "REVIEW",
            "evidence": {"features": {"sum_5m": 61000}, "fields": {"amount": 9000}},
        },
        "shadow": False,
        "event_id": "e1",
        "trigger_event_id": "e1",
        "ruleset_version": "rs-1",
    }
    doc.update(over)
    return doc


def raw(doc: Any) -> bytes:
    return orjson.dumps(doc)


@pytest.fixture
def env() -> dict[str, str]:
    return {
        "RISKCTL_DINGTALK_URL": "https://oapi.dingtalk.com/robot/send?access_token=tok",
        "RISKCTL_DINGTALK_SECRET": "SECtest",
        "RISKCTL_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
        "RISKCTL_CASES_TOKEN": "case-token",
        "RISKCTL_SMTP_PASSWORD": "smtp-pw",
        "RISKCTL_TWILIO_AUTH_TOKEN": "twilio-token",
    }


class SmtpServer:
    """Just enough SMTP on 127.0.0.1 (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) for the real ``smtplib``:
    ``rcpt`` maps an address to the answer to its RCPT (default ``250 ok``); ``sessions`` counts connections
    and ``messages`` holds (recipients accepted, data) of each message received.
    """

    def __init__(self, rcpt: dict[str, bytes] | None = None) -> None:
        import socketserver
        import threading

        self.rcpt = rcpt or {}
        self.sessions = 0
        self.messages: list[tuple[list[str], bytes]] = []
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                server.sessions += 1
                self.wfile.write(b"220 test ESMTP\r\n")
                accepted: list[str] = []
                while line := self.rfile.readline(4096):
                    cmd = line.decode("ascii", "replace").strip()
                    verb = cmd[:4].upper()
                    if verb == "RCPT":
                        addr = cmd.partition(":")[2].strip(" <>")
                        answer = server.rcpt.get(addr, b"250 ok")
                        if answer.startswith(b"25"):
                            accepted.append(addr)
                        self.wfile.write(answer + b"\r\n")
                    elif verb == "MAIL":
                        accepted = []
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == "DATA":
                        self.wfile.write(b"354 go on\r\n")
                        data = b""
                        while not data.endswith(b"\r\n.\r\n") and (chunk := self.rfile.readline(65536)):
                            data += chunk
                        server.messages.append((accepted, data))
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:  # EHLO, HELO, RSET, NOOP
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    started: list[SmtpServer] = []

    def start(rcpt: dict[str, bytes] | None = None) -> SmtpServer:
        started.append(SmtpServer(rcpt))
        return started[-1]

    yield start
    for s in started:
        s.close()
