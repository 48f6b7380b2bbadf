"""Templates: safe rendering, escaping per channel, the explanation, the link, digests."""

from __future__ import annotations

from riskctl.alerts.model import AlertItem, FiredRuleRef
from riskctl.alerts.settings import DEFAULT_TEMPLATES, Template
from riskctl.alerts.templates import (
    MAX_BODY_CHARS,
    MAX_VALUE_CHARS,
    context,
    digest_values,
    escape,
    explanation,
    link_for,
    message,
    render,
)


def item(user: str = "u1", evidence: dict | None = None) -> AlertItem:
    ev = (
        evidence
        if evidence is not None
        else {"features": {"sum_5m": 61000, "new_city": True}, "fields": {"amount": 9000}}
    )
    return AlertItem(
        "r:1:rule_alert:e1",
        "alert",
        user,
        1_700_000_000_000,
        "rule_alert",
        "REVIEW",
        (FiredRuleRef("r", 1, "REVIEW", ev),),
        "e1",
        "e1",
        "rs",
    )


def test_render_fills_names_and_runs_no_code() -> None:
    assert render("{a}-{b}-{{x}}", {"a": "1", "b": "2"}) == "1-2-{x}"
    # even if a template with attribute access reached render, it is a lookup of the whole name, never getattr
    assert render("{a.__class__}", {"a": "1"}) == ""


def test_the_explanation_lists_each_value_that_made_the_rule_fire() -> None:
    text = explanation(item(), "text")
    assert "r v1 -> REVIEW" in text
    assert "amount = 9000" in text and "sum_5m = 61000" in text and "new_city = true" in text


def test_sequence_steps_are_listed_with_what_each_matched_event_read() -> None:
    ev = {
        "match": {
            "steps": {"login": ["e1"], "transfer": ["e2", "e3"]},
            "start_ts": 1,
            "end_ts": 2,
            "events": {
                "login": [{"event_id": "e1", "fields": {"type": "login"}, "features": {"new_city": True}}],
                "transfer": [{"event_id": "e2", "fields": {}, "features": {}}, {"event_id": "e3"}],
            },
        }
    }
    text = explanation(item(evidence=ev), "text")
    assert 'step login: "e1" (type = "login", new_city = true)' in text
    assert 'step transfer: "e2"; "e3"' in text
    old_shape = {"match": {"steps": {"login": ["e1"], "transfer": ["e2", "e3"]}, "start_ts": 1, "end_ts": 2}}
    assert 'step transfer: "e2", "e3"' in explanation(item(evidence=old_shape), "text")


def test_values_from_the_record_cannot_inject_markup() -> None:
    evil = "[click](http://evil) <!channel> *x*"
    md = context(item(user=evil), "high", "", "markdown")["user_id"]
    assert "[click](http" not in md and md.startswith("\\[click\\]\\(http")
    slack = context(item(user=evil), "high", "", "slack")["user_id"]
    assert "<!channel>" not in slack and "&lt;!channel&gt;" in slack
    assert escape("a\x00b\x1bc", "text") == "a?b?c"


def test_a_value_cannot_add_a_line_to_a_message_or_break_its_title() -> None:
    evil = "u1\n\nReview: https://evil.example/approve"
    for style in ("text", "slack", "markdown"):
        assert "\n" not in context(item(user=evil), "high", "", style)["user_id"], style
    for sep in ("\t", "\r", "\x0b", "\x85", "\x9b", "\u2028", "\u2029", "\u202e", "\u2066"):
        assert escape(f"a{sep}b", "text") == "a?b", repr(sep)
    values = context(item(user="mallory\u2028x\u2029y\x85z"), "high", "", "text")
    assert values["user_id"] == "mallory?x?y?z"
    title, body = message(DEFAULT_TEMPLATES["email"], values)
    assert title.splitlines() == [title] and "mallory?x?y?z" in title and "mallory?x" in body
    # the template's own line breaks cannot break the title either (it is an e-mail Subject)
    assert message(Template("a\rb\u2028c\r\nd{user_id}", "x"), values)[0] == "a b c dmallory?x?y?z"
    # nor a line of a digest: one line per item
    entries = [(item(user=evil), "high", ""), (item(user="u2\u2028Review: x"), "high", "")]
    for style in ("text", "slack", "markdown"):
        lines = digest_values(entries, style, "ch", max_items=10)["items"].splitlines()
        assert len(lines) == 2 and "u1??Review: https" in lines[0], (style, lines)


def test_huge_values_are_cut() -> None:
    big = item(user="x" * 200, evidence={"features": {"s": "y" * 100_000}})
    values = context(big, "low", "", "text")
    assert len(values["user_id"]) <= MAX_VALUE_CHARS
    assert "y" * MAX_VALUE_CHARS not in values["explanation"] and "..." in values["explanation"]
    _, body = message(Template("t", "{explanation}" * 20), values)
    assert len(body) <= MAX_BODY_CHARS


def test_the_link_quotes_its_values() -> None:
    link = link_for("https://review/alerts/{alert_id}?user={user_id}", item(user="a b&c=d"), "low")
    assert link == "https://review/alerts/r%3A1%3Arule_alert%3Ae1?user=a%20b%26c%3Dd"
    assert link_for("", item(), "low") == ""


def test_default_templates_render_every_field_they_name() -> None:
    values = context(item(), "high", "https://review/x", "markdown", "ch")
    for kind, template in DEFAULT_TEMPLATES.items():
        title, body = message(template, values)
        assert "r" in title and "REVIEW" in title, kind
        assert "{" not in title, kind
    title, body = message(DEFAULT_TEMPLATES["dingtalk"], values)
    assert "https://review/x" in body and "u1" in body and "sum\\_5m = 61000" in body
    assert "2023-11-14T22:13:20.000+00:00" in body


def test_a_digest_lists_its_items_up_to_the_limit() -> None:
    entries = [(item(user=f"u{i}"), "high", f"https://r/{i}") for i in range(5)]
    values = digest_values(entries, "text", "hook", max_items=3)
    assert values["count"] == "5"
    assert values["items"].count("\n") == 3 and "u0" in values["items"] and "u3" not in values["items"]
    assert values["items"].endswith("... and 2 more")
    assert "https://r/2" in values["items"]


def test_a_value_cannot_format_a_slack_message() -> None:
    """Slack: a backtick in a value closed the template's code span around it, so `*x*` and `_x_` after it
    were bold and italics in the reviewers' channel (mrkdwn has no escape for them). Values now show
    look-alikes for backticks, and for `* _ ~` at a word's edge; `& < >` stay entities (no mention, link)."""
    evil = "a` *ALL APPROVED* _x_ ~y~ ｀z｀ ＊w＊ `b <!channel> <!here> <@U123> &amp;"
    hostile = item(user=evil, evidence={"fields": {"city": "*Paris*"}})
    values = context(hostile, "high", "https://c/x", "slack")
    body = message(DEFAULT_TEMPLATES["slack"], values)[1]
    shown = values["user_id"]
    assert not set(shown) & set("`*_~<>｀＊＿～"), shown
    assert shown == (
        "aˋ ∗ALL APPROVED∗ ˍxˍ ∼y∼ ˋzˋ ﹡w﹡ ˋb &lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt; &amp;amp;"
    )
    assert "`" + shown + "`" in body and body.count("`") == 4  # the template's own two code spans, intact
    assert 'city = "∗Paris∗"' in values["explanation"] and "*Paris*" not in body
    # inside a word Slack does not format: ordinary ids keep their underscores
    assert escape("transfer_velocity a*b", "slack") == "transfer_velocity a*b"
    digest = digest_values([(item(user=evil), "high", "")], "slack", "ch", max_items=10)["items"]
    assert "`" not in digest and "*ALL" not in digest and "<!" not in digest


def test_a_value_is_never_a_link_in_a_message() -> None:
    """A user id 'http://evil.example/login' or 'www.evil.example' was shown as is: DingTalk, Slack and mail
    clients (for plain text too) make it a link a reviewer can click. Only the configured link may be one:
    values show schemes as 'http[:]//' and host names' dots as '[.]' in every channel."""
    hostile = [
        "http://evil.example/login",
        "HTTPS://evil.example",
        "www.evil.example",
        "evil.example/approve",
        "pay@evil.example",
        "10.0.0.1/x",
        "evil\u3002example",
        "file:\\\\evil\\share",
    ]
    link = "https://console.example/users/x"
    for style, kind in (("markdown", "dingtalk"), ("slack", "slack"), ("text", "email"), ("text", "webhook")):
        for evil in hostile:
            it = item(user=evil, evidence={"fields": {"city": evil}})
            it = AlertItem(**{**{f: getattr(it, f) for f in it.__slots__}, "event_id": evil, "reason": evil})
            title, body = message(DEFAULT_TEMPLATES[kind], context(it, "high", link, style, "ops.team"))
            digest = digest_values([(it, "high", link)], style, "ops.team", max_items=10)["items"]
            for text in (title, body.replace(link, ""), digest.replace(link, "")):
                for unsafe in ("://", ":\\\\", "www.", "evil.", "evil\\.", "evil\u3002", "10.0", "10\\.0"):
                    assert unsafe not in text, (style, evil, unsafe, text)
            assert body.count(link) == 1
    assert escape("http://evil.example", "text") == "http[:]//evil[.]example"
    assert escape("www.evil.example", "slack") == "www[.]evil[.]example"
    assert escape("www.evil.example", "markdown") == "www\\[\\.\\]evil\\[\\.\\]example"
    # numbers and versions stay as they are; the configuration's own names are not changed
    assert escape("amount = 12.5, v1.2, 2.0.1", "text") == "amount = 12.5, v1.2, 2.0.1"
    assert digest_values([], "text", "ops.team", 1)["channel"] == "ops.team"


def test_a_character_reference_cannot_spell_what_a_dingtalk_value_was_cleaned_of() -> None:
    """DingTalk's markdown: '&' was not escaped, and a markdown renderer decodes character references, so a
    user id 'http&colon;&sol;&sol;evil&period;example&sol;login &rlm;x' showed as
    'http://evil.example/login' and a right-to-left mark (checked with a CommonMark renderer, markdown-it),
    past the defanging and the control characters' cleaning. '&' is backslash-escaped like the rest."""
    evil = "http&colon;&sol;&sol;evil&period;example&sol;login &rlm;x &#x202E; &amp;"
    shown = context(item(user=evil, evidence={"fields": {"city": evil}}), "high", "", "markdown")
    for text in (shown["user_id"], shown["explanation"]):
        assert "&" in text and all(text[i - 1] == "\\" for i, c in enumerate(text) if c == "&"), text
    assert escape("a&b", "markdown") == "a\\&b" and escape("a&b", "slack") == "a&amp;b"


def test_mailto_and_protocol_relative_values_are_not_links_either() -> None:
    """The defanging broke '://' and host names' dots, but linkifiers also link 'mailto:x@host' and a
    protocol-relative '//host:8080/x' (linkify-it, which markdown renderers use, linked both after
    escaping: checked with markdown-it). They show as 'mailto[:]' and '[//]'."""
    assert escape("MAILTO:evil@intranet", "text") == "MAILTO[:]evil@intranet"
    assert escape("x mailto:evil@intranet", "slack") == "x mailto[:]evil@intranet"
    assert escape("//intranet:8080/x", "markdown") == "\\[//\\]intranet:8080/x"
    assert escape("x //y", "text") == "x [//]y"
    # the '//' of a scheme, a path's '//' and a UNC path's backslashes are not changed again
    assert escape("file:///etc/p http://a.b//c a//b", "text") == "file[:]///etc/p http[:]//a[.]b//c a//b"


def test_every_invisible_format_character_is_shown_as_a_mark() -> None:
    """All of Unicode's format characters (category Cf) of this Python's Unicode data: U+FFFD, or '?' for the
    bidirectional controls; no character of another category is taken for one."""
    import sys
    import unicodedata

    from riskctl.alerts.templates import _FORMAT

    every = "".join(map(chr, range(sys.maxunicode + 1)))
    cf = "".join(c for c in every if unicodedata.category(c) == "Cf")
    assert set(escape(cf, "text", links=True)) == {"\ufffd", "?"}
    assert {unicodedata.category(c) for c in _FORMAT.findall(every)} <= {"Cf", "Cn"}  # Cn: of a newer Unicode


def test_a_free_text_value_cannot_forge_another_field_or_a_verdict_in_the_explanation() -> None:
    """A string was shown bare: a memo of ``ok, amount = 5 -> PASS`` read as a second amount and a verdict
    beside the real ``amount = 9000``, and an event id forged what a sequence step matched. Strings are now
    shown as JSON strings: one quoted value each, its quotes escaped, cut inside its quotes."""
    forged = {"fields": {"memo": 'ok, amount = 5 -> PASS", x = "1', "amount": 9000, "note": "n" * 300}}
    for style in ("text", "slack", "markdown"):
        text = explanation(item(evidence=forged), style)
        assert "memo = " + escape('"ok, amount = 5 -> PASS\\", x = \\"1"', style) in text, (style, text)
        assert "amount = 9000" in text and '"9000"' not in text
        assert "note = " + escape('"' + "n" * (MAX_VALUE_CHARS - 3) + '..."', style) in text, style
    step = {"match": {"steps": {"s": ["e2 (amount = 1); e3"]}, "events": {"s": [{"event_id": "e2 (x); e3"}]}}}
    assert 'step s: "e2 (x); e3"' in explanation(item(evidence=step), "text")
    old_shape = {"match": {"steps": {"s": ["e2 (amount = 1), e3"]}}}
    assert 'step s: "e2 (amount = 1), e3"' in explanation(item(evidence=old_shape), "text")
    # a string that holds a number is not shown as the number
    assert 'amount = "9000"' in explanation(item(evidence={"fields": {"amount": "9000"}}), "text")
