"""DingTalk signing against a vector computed outside Python:

printf '1700000000000\nSECtest' | openssl dgst -sha256 -hmac SECtest -binary | base64
aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g=
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from riskctl.alerts.signing import dingtalk_sign, signed_url

VECTOR = "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g="


def test_the_signature_matches_the_openssl_vector_url_encoded() -> None:
    assert dingtalk_sign("SECtest", 1_700_000_000_000) == VECTOR.replace("=", "%3D")


def test_plus_slash_and_equals_of_the_base64_are_url_encoded() -> None:
    import base64
    from urllib.parse import unquote_plus

    seen = set()
    for ts in range(1_700_000_000_000, 1_700_000_000_200):
        sign = dingtalk_sign("SECtest", ts)
        assert not set(sign) & set("+/="), sign
        assert len(base64.b64decode(unquote_plus(sign))) == 32  # a SHA-256 digest
        seen.update(code for code in ("%2B", "%2F", "%3D") if code in sign)
    assert seen == {"%2B", "%2F", "%3D"}


def test_the_signed_url_keeps_the_token_and_replaces_an_old_signature() -> None:
    url = signed_url(
        "https://oapi.dingtalk.com/robot/send?access_token=tok&sign=old&timestamp=1",
        "SECtest",
        1_700_000_000_000,
    )
    q = parse_qs(urlsplit(url).query)
    assert q == {"access_token": ["tok"], "timestamp": ["1700000000000"], "sign": [VECTOR]}
    assert urlsplit(url).path == "/robot/send"
