"""The request of each channel kind, how answers are read, the backoff."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from riskctl.alerts.messages import backoff_s, email_message, http_request, read_http_answer
from riskctl.alerts.model import AlertItem, FiredRuleRef
from riskctl.alerts.settings import parse_config
from riskctl.errors import ConfigError

ITEM = AlertItem(
    "a1", "alert", "u1", 5, "rule_alert", "REJECT", (FiredRuleRef("r", 2, "REJECT", {"features": {"n": 1}}),)
)


def channels() -> dict:
    cfg = parse_config(
        {
            "channels": {
                "hook": {
                    "type": "webhook",
                    "url": "http://h/x",
                    "token": "tk",
                    "headers": {"X-Team": "risk"},
                },
                "ding": {
                    "type": "dingtalk",
                    "url": "https://oapi.dingtalk.com/robot/send?access_token=t",
                    "secret": "SECtest",
                },
                "plain": {"type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=t"},
                "slack": {"type": "slack", "url": "https://hooks.slack.com/services/x"},
                "mail": {"type": "email", "host": "h", "from": "a@b.example", "to": ["x@y", "z@w"]},
            },
            "default_channels": ["hook"],
        },
        {},
    )
    return dict(cfg.channels)


def test_webhook_sends_json_with_items_token_and_headers() -> None:
    req = http_request(channels()["hook"], "T", "body", "high", [ITEM], 0)
    body = orjson.loads(req.body)
    assert body["title"] == "T" and body["text"] == "body" and body["severity"] == "high"
    assert body["items"][0]["id"] == "a1" and body["items"][0]["rules"][0]["evidence"] == {
        "features": {"n": 1}
    }
    assert req.headers["Authorization"] == "Bearer tk" and req.headers["X-Team"] == "risk"


def test_dingtalk_sends_markdown_signed_when_a_secret_is_set() -> None:
    ch = channels()
    req = http_request(ch["ding"], "T", "**b**", "high", [ITEM], 1_700_000_000_000)
    assert orjson.loads(req.body) == {"msgtype": "markdown", "markdown": {"title": "T", "text": "**b**"}}
    q = parse_qs(urlsplit(req.url).query)
    assert q["timestamp"] == ["1700000000000"] and q["sign"] == [
        "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g="
    ]
    plain = http_request(ch["plain"], "T", "b", "high", [ITEM], 1)
    assert "sign=" not in plain.url


def test_slack_sends_text() -> None:
    assert orjson.loads(http_request(channels()["slack"], "T", "b", "low", [ITEM], 0).body) == {"text": "b"}


def test_email_is_plain_text_to_every_recipient() -> None:
    msg = email_message(channels()["mail"], "Subject here", "Body here")
    assert msg["Subject"] == "Subject here" and msg["To"] == "x@y, z@w" and msg["From"] == "a@b.example"
    assert msg.get_content().strip() == "Body here"
    assert msg["Message-ID"].endswith("@b.example>")


def test_an_email_is_built_for_a_record_with_a_line_separator_in_its_user_id() -> None:
    from riskctl.alerts.model import parse_item
    from riskctl.alerts.templates import context, message
    from tests.unit.alerts.conftest import alert_doc, raw

    ch = channels()["mail"]
    item = parse_item(raw(alert_doc(user_id="mallory\u2028x")))
    assert item is not None
    title, body = message(ch.template, context(item, "high", "", "text", "mail"))
    msg = email_message(ch, title, body)  # raised "Header values may not contain linefeed" before
    assert "mallory?x" in msg["Subject"]


@pytest.mark.parametrize(
    ("kind", "status", "body", "ok", "permanent", "reason"),
    [
        ("webhook", 200, b"", True, False, ""),
        ("webhook", 204, b"", True, False, ""),
        ("webhook", 500, b"boom", False, False, "HTTP 500: boom"),
        ("webhook", 503, b"", False, False, "HTTP 503"),
        ("webhook", 429, b"slow down", False, False, "HTTP 429"),
        ("webhook", 408, b"", False, False, "HTTP 408"),
        ("webhook", 400, b"bad", False, True, "HTTP 400: bad"),
        ("webhook", 404, b"", False, True, "HTTP 404"),
        ("webhook", 302, b"", False, False, "HTTP 302"),
        ("dingtalk", 200, b'{"errcode":0,"errmsg":"ok"}', True, False, ""),
        (
            "dingtalk",
            200,
            b'{"errcode":310000,"errmsg":"sign not match"}',
            False,
            False,
            "errcode 310000: sign not match",
        ),
        ("dingtalk", 200, b"<html>", False, False, "not JSON"),
        ("dingtalk", 200, b"[]", False, False, "errcode None"),
    ],
)
def test_answers_are_read_per_channel(
    kind: str, status: int, body: bytes, ok: bool, permanent: bool, reason: str
) -> None:
    outcome = read_http_answer(kind, status, body)
    assert (outcome.ok, outcome.permanent) == (ok, permanent)
    assert reason in outcome.reason


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(a, 500, 3000) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff_s(10_000, 500, 3000) == 3.0


def test_a_receiver_that_does_not_answer_or_a_bad_url_is_reported_without_the_url() -> None:
    import socket

    from riskctl.alerts.messages import HttpRequest
    from riskctl.alerts.senders import post

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = post("webhook", HttpRequest(f"http://127.0.0.1:{port}/x?token=SECRET", b"{}"), 2)
    assert not refused.ok and not refused.permanent
    assert "refused" in refused.reason.lower() and "SECRET" not in refused.reason
    bad = post("webhook", HttpRequest("http://127.0.0.1:notaport/x?token=SECRET", b"{}"), 2)
    assert not bad.ok and bad.permanent and "SECRET" not in bad.reason and "notaport" not in bad.reason


def _big(i: int, chars: int) -> AlertItem:
    rule = FiredRuleRef("r", 2, "REJECT", {"fields": {"city": "\u00e9" * chars}})
    return AlertItem(f"a{i}", "alert", "u" * 256, 5, "rule_alert", "REJECT", (rule,))


def test_a_webhook_digest_stays_within_its_body_limit() -> None:
    """A webhook digest carried every held item whole: 20 alerts with a 900,000-character field made an
    18 MB body (a digest holds up to max_backlog items: a gigabyte), which receivers refuse (nginx: 413 above
    1 MiB, a permanent failure: the whole digest dead-lettered). Now the first items that fit, in order, and
    items_omitted counts the others; the JSON is whole."""
    hook = channels()["hook"]
    assert hook.max_body_bytes == 1_048_576 and hook.describe()["max_body_bytes"] == 1_048_576
    items = [_big(i, 200_000) for i in range(20)]  # about 400 KB of JSON each
    req = http_request(hook, "T", "x" * 16_000, "high", items, 0)
    assert len(req.body) <= 1_048_576
    body = orjson.loads(req.body)
    assert [i["id"] for i in body["items"]] == ["a0", "a1"] and body["items_omitted"] == 18
    assert body["items"][0] == items[0].to_dict() and body["text"] == "x" * 16_000
    # an item alone larger than the limit: the message goes, the item is counted
    alone = orjson.loads(http_request(hook, "T", "t", "high", [_big(0, 900_000)], 0).body)
    assert alone["items"] == [] and alone["items_omitted"] == 1 and alone["title"] == "T"
    # small ones all fit, and say so
    assert orjson.loads(http_request(hook, "T", "b", "high", [ITEM] * 3, 0).body)["items_omitted"] == 0
    # the limit is the channel's
    cfg = {"type": "webhook", "url": "http://h/x", "max_body_bytes": 131_072}
    small = parse_config({"channels": {"h": cfg}, "default_channels": ["h"]}, {}).channels["h"]
    req = http_request(small, "T", "b", "high", [_big(i, 20_000) for i in range(10)], 0)
    assert len(req.body) <= 131_072 and orjson.loads(req.body)["items_omitted"] == 7
    for bad in (1000, 2**40, "1 MiB", True):
        with pytest.raises(ConfigError, match=r"channels\.h\.max_body_bytes"):
            parse_config({"channels": {"h": {**cfg, "max_body_bytes": bad}}, "default_channels": ["h"]}, {})


def test_slack_and_email_digests_stay_within_their_limits() -> None:
    """Slack cuts a text over 40,000 characters; an e-mail body is bounded too: a digest of many long values
    stays within both (16,000 characters), whatever each value's escaping adds."""
    from riskctl.alerts.settings import DIGEST_TEMPLATE
    from riskctl.alerts.templates import MAX_BODY_CHARS, digest_values, message

    evil = AlertItem(
        "a" * 256, "alert", "&<>" * 85, 5, "r", "REJECT", (FiredRuleRef("&" * 256, 2, "REJECT"),)
    )
    entries = [(evil, "high", "https://console.example/" + "%26" * 300)] * 1000
    for style in ("slack", "text"):
        title, text = message(DIGEST_TEMPLATE, digest_values(entries, style, "ch", 1000))
        assert len(text) <= MAX_BODY_CHARS <= 40_000 and len(title) <= 256


def test_an_encoded_word_in_a_value_cannot_add_an_email_header() -> None:
    """A user id '=?utf-8?q?x=0D=0AReply-To:_a@evil=2Eexample?=' reached the Subject unchanged (no control
    character in it), and the e-mail library read it as an RFC 2047 encoded word and wrote the decoded line
    break raw: the message had the attacker's Reply-To and Content-Type: text/html headers (the same carried
    U+202E, which values are cleaned of, into the Subject). Now '=?' in the Subject shows as '=[?]'."""
    import email
    import email.policy

    from riskctl.alerts.model import parse_item
    from riskctl.alerts.templates import context, message
    from tests.unit.alerts.conftest import alert_doc, raw

    ch = channels()["mail"]
    for user in (
        "=?utf-8?q?x=0D=0AReply-To:_a@evil=2Eexample=0D=0AContent-Type:_text/html?=",
        "=?utf-8?b?4oCuZXhlLnBkZg==?=",  # U+202E 'exe.pdf'
        "=?utf-8?q?=E2=80=A8line?=",
    ):
        item = parse_item(raw(alert_doc(user_id=user)))
        assert item is not None
        title, body = message(ch.template, context(item, "high", "", "text", "mail"))
        data = email_message(ch, title, body).as_bytes()
        names = [line.split(b":")[0] for line in data.split(b"\n\n", 1)[0].splitlines() if line[:1] != b" "]
        assert sorted(names) == sorted(
            [
                b"Subject",
                b"From",
                b"To",
                b"Message-ID",
                b"Content-Type",
                b"Content-Transfer-Encoding",
                b"MIME-Version",
            ]
        ), names
        got = email.message_from_bytes(data, policy=email.policy.default)
        assert got["Reply-To"] is None and got.get_content_type() == "text/plain"
        subject = got["Subject"].strip()  # folded before a long word: a leading blank
        assert subject == title.replace("=?", "=[?]") and user.replace("=?", "=[?]") in subject
        assert not {"\u202e", "\u2028", "\r", "\n"} & set(got["Subject"])


#: invisible format characters of each kind (zero-width space and joiners, LRM/RLM, word joiner and the
#: invisible operators, BOM, soft hyphen, a tag character), and the bidirectional controls
FORMAT = tuple("\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\U000e0041")
BIDI = tuple("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: the full-width and ideographic dots that IDNA reads as dots
DOTS = (".", "\uff0e", "\u3002", "\uff61")


def _shown(kind: str, user: str) -> tuple[list[str], dict]:
    """What each channel's real request shows a person for an alert about ``user`` (its title and text as
    sent), and the webhook's JSON body."""
    from riskctl.alerts.settings import DEFAULT_TEMPLATES
    from riskctl.alerts.sms import twilio_requests
    from riskctl.alerts.templates import STYLE, context, digest_values, message

    it = AlertItem(
        "a1", "alert", user, 5, user, "REJECT", (FiredRuleRef("r", 2, "REJECT", {"fields": {"c": user}}),)
    )
    link = "https://console.example/u"
    title, body = message(DEFAULT_TEMPLATES[kind], context(it, "high", link, STYLE[kind], "ops"))
    digest = digest_values([(it, "high", link)], STYLE[kind], "ops", max_items=5)["items"]
    texts = [digest.replace(link, "")]
    doc: dict = {}
    if kind == "email":
        msg = email_message(channels()["mail"], title, body)
        texts += [str(msg["Subject"]), msg.get_content()]
    elif kind == "sms":
        ((_, req),) = twilio_requests("", "AC1", "tok", "+1", ("+2",), body)
        texts += parse_qs(req.body.decode())["Body"]
    else:
        channel = channels()[{"webhook": "hook", "dingtalk": "ding"}.get(kind, kind)]
        doc = orjson.loads(http_request(channel, title, body, "high", [it], 0).body)
        shown = doc.get("markdown") or doc
        texts += [shown.get("title", ""), shown["text"]]
    return [t.replace(link, "") for t in texts], doc


@pytest.mark.parametrize("kind", ["webhook", "dingtalk", "slack", "email", "sms"])
def test_an_invisible_character_or_another_dot_does_not_make_a_value_a_link(kind: str) -> None:
    """'evil\\u200b.example' or 'http:\\u200b//evil' slipped past the defanging (no letter next to the dot, no
    '//' after the colon); chat clients drop the invisible character and made a link. Each such character is
    U+FFFD in a message (a bidirectional control '?', as before); the full-width and ideographic dots are
    dots. The webhook's items carry the exact value (data for a program, not text for a person)."""
    import unicodedata

    for c in FORMAT + BIDI:
        for dot in DOTS:
            user = f"http:{c}//evil{c}{dot}example/x www{dot}{c}evil{dot}example 10{dot}66{c}{dot}77{dot}1"
            texts, doc = _shown(kind, user)
            for text in texts:
                assert not [ch for ch in text if unicodedata.category(ch) == "Cf"], (kind, user, text)
                # a linkifier takes U+FFFD for a letter of a host name (linkify-it: any non-punctuation);
                # '?' (a control's mark) is punctuation and ends one
                visible = text.replace("\ufffd", "").replace("\\", "")
                for unsafe in ("://", f"evil{dot}example", f"{dot}evil", f"10{dot}66{dot}77{dot}1"):
                    assert unsafe not in visible, (kind, user, unsafe, text)
            mark = "?" if c in BIDI else "\ufffd"  # shows the reviewer that the value held one
            assert any(mark in text for text in texts), (kind, user, texts)
            if kind == "webhook":
                assert doc["items"][0]["user_id"] == user
