"""SMS: segment arithmetic (GSM-7 and UCS-2), the cut to max_segments, Twilio's requests."""

from __future__ import annotations

import base64
import http.server
import json
import random
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from riskctl.alerts.dispatcher import network_sender
from riskctl.alerts.settings import Channel, parse_config
from riskctl.alerts.sms import fit, segments, twilio_requests
from riskctl.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("gsm7", 1)),
        ("a" * 160, ("gsm7", 1)),
        ("a" * 161, ("gsm7", 2)),
        ("a" * 306, ("gsm7", 2)),
        ("a" * 307, ("gsm7", 3)),
        ("€" * 80, ("gsm7", 1)),  # an extension character takes two septets
        ("€" * 81, ("gsm7", 2)),
        ("é" * 160, ("gsm7", 1)),  # in the basic set
        ("ê" * 70, ("ucs2", 1)),  # not: the whole text is UCS-2
        ("ê" * 71, ("ucs2", 2)),
        ("a" * 159 + "中", ("ucs2", 3)),
        ("😀" * 35, ("ucs2", 1)),  # outside the BMP: two code units each
        ("😀" * 36, ("ucs2", 2)),
    ],
)
def test_segments_count_as_phones_do(text: str, expected: tuple[str, int]) -> None:
    assert segments(text) == expected


def test_a_text_that_fits_is_unchanged_and_a_cut_one_fits_and_ends_with_dots() -> None:
    rng = random.Random(5)
    alphabet = "abc XYZ 0123 €[]^ é ü 中文 😀 ê \n"
    for _ in range(2_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 900)))
        n = rng.randrange(1, 11)
        out = fit(text, n)
        assert segments(out)[1] <= n
        if segments(text)[1] <= n:
            assert out == text
        else:
            assert out.endswith("...") and text.startswith(out[:-3])


def test_an_attacker_s_long_value_costs_at_most_the_channel_s_segments() -> None:
    text = "[riskctl high] brute_force_login REJECT user " + "中" * 5_000
    assert segments(text) == ("ucs2", 76)
    assert segments(fit(text, 2)) == ("ucs2", 2) and len(fit(text, 2)) == 134
    assert segments(fit("a" * 5_000, 1)) == ("gsm7", 1) and len(fit("a" * 5_000, 1)) == 160


def test_twilio_requests_one_per_recipient_form_encoded_with_basic_auth() -> None:
    reqs = twilio_requests(
        "",
        "AC0123456789abcdef",
        "tok&en=1",
        "+15005550006",
        ("+4915112345678", "+8613800138000"),
        "x & y=1 中",
    )
    assert [to for to, _ in reqs] == ["+4915112345678", "+8613800138000"]
    to, req = reqs[0]
    assert req.url == "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
    assert parse_qs(req.body.decode()) == {"To": [to], "From": ["+15005550006"], "Body": ["x & y=1 中"]}
    assert (
        req.headers["Authorization"] == "Basic " + base64.b64encode(b"AC0123456789abcdef:tok&en=1").decode()
    )
    assert req.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    other = twilio_requests("http://127.0.0.1:9/", "AC/../x", "t", "+1", ("+2",), "b")[0][1]
    assert other.url == "http://127.0.0.1:9/2010-04-01/Accounts/AC%2F..%2Fx/Messages.json"


# -- the channel: its configuration and its delivery to a local Twilio-like receiver ------------------------
SID = "AC" + "0" * 32


def sms_doc(**over: Any) -> dict[str, Any]:
    channel = {"type": "sms", "account_sid": SID, "auth_token": {"env": "TOKEN"}, "from": "+15005550006"}
    channel.update({"to": ["+4915112345678", "+8613800138000"], **over})
    return {"channels": {"phone": channel}, "routes": [{"match": {}, "channels": ["phone"]}]}


def test_an_sms_channel_loads_and_describes_itself_without_its_token() -> None:
    config = parse_config(sms_doc(max_segments=1), {"TOKEN": "secret-token"})
    phone = config.channels["phone"]
    assert (phone.username, phone.password, phone.max_segments) == (SID, "secret-token", 1)
    assert phone.digest_template.body.startswith("[riskctl] {count} more alerts")
    described = str(config.describe())
    assert "secret-token" not in described and "+4915112345678" in described


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"to": []}, "phone.to"),
        ({"to": ["004915112345678"]}, "phone.to"),
        ({"to": ["+49 151 1234"]}, "phone.to"),
        ({"to": [f"+4915112345{i:03d}" for i in range(11)]}, "phone.to"),
        ({"from": "+1\n+2"}, "phone.from"),
        ({"from": "ALERTS-TOO-LONG"}, "phone.from"),
        ({"from": "12345"}, "phone.from"),  # digits alone are not a sender ID
        ({"account_sid": "AC/../x"}, "phone.account_sid"),
        ({"auth_token": "tok\r\nX: y"}, "phone.auth_token"),
        ({"max_segments": 11}, "phone.max_segments"),
        ({"max_segments": 0}, "phone.max_segments"),
        ({"url": "ftp://twilio.example"}, "phone.url"),
        ({"secret": "x"}, "phone.secret"),
    ],
)
def test_a_bad_sms_channel_is_refused_with_its_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(sms_doc(**over), {"TOKEN": "secret-token"})
    assert f"channels.{field}" in str(info.value)
    assert "secret-token" not in str(info.value)


class Twilio:
    """Twilio's Messages endpoint on 127.0.0.1: checks the account, the basic auth and the form; answers each
    recipient with ``answers[to]`` (default 201 and the message's JSON)."""

    def __init__(self, token: str = "secret-token") -> None:
        self.token = token
        self.answers: dict[str, int] = {}
        self.sent: list[dict[str, list[str]]] = []
        twilio = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                expected = "Basic " + base64.b64encode(f"{SID}:{twilio.token}".encode()).decode()
                if self.path != f"/2010-04-01/Accounts/{SID}/Messages.json":
                    status = 404
                elif self.headers.get("Authorization") != expected:
                    status = 401
                else:
                    status = twilio.answers.get(form["To"][0], 201)
                    if status == 201:
                        twilio.sent.append(form)
                body = json.dumps({"sid": "SM1"} if status == 201 else {"code": 21211, "status": status})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def twilio() -> Iterator[Twilio]:
    server = Twilio()
    yield server
    server.close()


def phone(twilio: Twilio, token: str = "secret-token", **over: Any) -> Channel:
    return parse_config(sms_doc(url=twilio.url, **over), {"TOKEN": token}).channels["phone"]


def test_an_alert_reaches_every_number_cut_to_its_segments(twilio: Twilio) -> None:
    send = network_sender(5.0)
    long_text = "[riskctl high] brute_force_login REJECT user " + "x" * 400 + " https://review.example/a/1"
    outcome = send(phone(twilio, max_segments=1), "title", long_text, "high", [])
    assert outcome.ok
    assert sorted(f["To"][0] for f in twilio.sent) == ["+4915112345678", "+8613800138000"]
    body = twilio.sent[0]["Body"][0]
    # one segment: 160 septets, '[' and ']' take two each
    assert segments(body) == ("gsm7", 1) and len(body) == 158 and body.endswith("...")
    assert body.startswith("[riskctl high] brute_force_login")
    assert twilio.sent[0]["From"] == ["+15005550006"]


def test_reaching_one_number_is_delivered_none_is_a_failure_permanent_only_if_every_one_was(
    twilio: Twilio, caplog: pytest.LogCaptureFixture
) -> None:
    send = network_sender(5.0)
    twilio.answers = {"+8613800138000": 400}
    assert send(phone(twilio), "t", "text", "high", []).ok  # the other got it: not sent again
    assert "1 of 2 recipient(s) failed" in caplog.text and "+8613800138000: HTTP 400" in caplog.text
    twilio.answers = {"+8613800138000": 400, "+4915112345678": 400}
    out = send(phone(twilio), "t", "text", "high", [])
    assert not out.ok and out.permanent and "no recipient got the SMS" in out.reason
    twilio.answers = {"+8613800138000": 400, "+4915112345678": 503}
    out = send(phone(twilio), "t", "text", "high", [])
    assert not out.ok and not out.permanent  # one may succeed on a retry
    out = send(phone(twilio, token="wrong-token"), "t", "text", "high", [])
    assert not out.ok and out.permanent and "HTTP 401" in out.reason and "wrong-token" not in out.reason


def test_an_sms_receiver_that_is_down_is_retried() -> None:
    server = Twilio()
    channel = phone(server)
    server.close()
    out = network_sender(2.0)(channel, "t", "text", "high", [])
    assert not out.ok and not out.permanent and "cannot reach the receiver" in out.reason


def test_the_default_sms_keeps_its_review_link_whatever_the_user_id(twilio: Twilio) -> None:
    from riskctl.alerts.model import load_record, parse_alert
    from riskctl.alerts.templates import STYLE, context, link_for, message
    from tests.unit.alerts.conftest import alert_doc

    config = parse_config(
        {**sms_doc(url=twilio.url), "link": "https://review.example/a/{alert_id}"}, {"TOKEN": "t"}
    )
    channel = config.channels["phone"]
    item = parse_alert(load_record(json.dumps(alert_doc(user_id="中" * 250)).encode()))
    link = link_for(config.link, item, "high")
    _title, text = message(channel.template, context(item, "high", link, STYLE["sms"]))
    twilio.token = "t"
    assert network_sender(5.0)(channel, "t", text, "high", [item]).ok
    body = twilio.sent[0]["Body"][0]
    assert segments(body)[1] <= 2 and "https://review.example/a/" in body


def test_one_character_beyond_gsm7_after_the_link_does_not_cut_the_link() -> None:
    """The encoding was the whole text's: a Cyrillic user id (or one emoji) after the review link made the
    text UCS-2, 131 characters in two segments, and the cut fell inside the link, though the text up to the
    user id, link included, fits in GSM-7. The cut keeps the longest prefix in its own encoding."""
    from riskctl.alerts.model import AlertItem, FiredRuleRef
    from riskctl.alerts.settings import DEFAULT_TEMPLATES
    from riskctl.alerts.templates import context, link_for, message

    event = "9f1c2e1a-5b7d-4c1e-9a51-3d2b7c0e8f44"
    for user in ("ж" * 30, "u1" + "😀" * 200, "x" * 40 + "ё"):
        item = AlertItem(
            f"card_velocity:3:rule_alert:{event}",
            "alert",
            user,
            1,
            "rule_alert",
            "REJECT",
            (FiredRuleRef("card_velocity", 3, "REJECT"),),
            event,
        )
        link = link_for("https://review.example.com/alerts/{alert_id}", item, "high")
        _title, text = message(DEFAULT_TEMPLATES["sms"], context(item, "high", link, "text"))
        for n in (2, 3):
            out = fit(text, n)
            assert segments(out)[1] <= n, out
            assert f" {link} user" in out and out.endswith("..."), (user[:3], n, out)
    # the UCS-2 prefix is kept when it is the longer one
    text = "[riskctl high] brute_force_login REJECT user " + "中" * 5_000
    assert fit(text, 2) == text[:131] + "..."
