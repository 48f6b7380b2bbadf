"""Password hashing, permissions, CSRF token comparison and the login rate limiter (no I/O)."""

from __future__ import annotations

import pytest

from riskctl.console.security import (
    DUMMY_HASH,
    MAX_PASSWORD_CHARS,
    PERMISSIONS,
    ROLES,
    PasswordError,
    RateLimiter,
    allowed,
    hash_password,
    new_token,
    same_token,
    token_hash,
    verify_password,
)

PASSWORD = "correct horse battery"  # noqa: S105


def test_hash_verifies_and_is_salted() -> None:
    one, two = hash_password(PASSWORD), hash_password(PASSWORD)
    assert one != two and one.startswith("scrypt$16384$8$1$")
    assert verify_password(PASSWORD, one) and verify_password(PASSWORD, two)
    assert not verify_password(PASSWORD + "x", one)
    assert PASSWORD not in one


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "bcrypt$x",
        "scrypt$1$8$1$AA==$AA==",
        "scrypt$16384$8$1$!!$AA==",
        "scrypt$99999999$8$1$AA==$AA==",
        DUMMY_HASH,
    ],
)
def test_malformed_or_dummy_hashes_never_verify_nor_raise(stored: str) -> None:
    assert verify_password(PASSWORD, stored) is False


def test_password_length_limits() -> None:
    with pytest.raises(PasswordError, match="too short"):
        hash_password("short")
    with pytest.raises(PasswordError, match="too long"):
        hash_password("x" * (MAX_PASSWORD_CHARS + 1))
    assert verify_password("x" * 10_000_000, hash_password(PASSWORD)) is False


def test_permission_table_each_role_each_action() -> None:
    expected = {
        "viewer": {"view"},
        "analyst": {"view", "draft", "label"},
        "approver": {"view", "draft", "label", "publish", "set_status", "rollback"},
    }
    for role in ROLES:
        assert {action for action in PERMISSIONS if allowed(role, action)} == expected[role]
    assert not allowed("admin", "view") and not allowed("approver", "delete_everything")


def test_tokens() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) == 43
    assert same_token(a, a) and not same_token(a, b)
    assert not same_token(None, a) and not same_token("", "") and not same_token(a, None)
    assert len(token_hash(a)) == 64 and token_hash(a) != a
    assert not same_token("\udcff", a)  # a lone surrogate from a form does not raise


def test_rate_limiter_window() -> None:
    limiter = RateLimiter(max_failures=3, window_s=60)
    for t in (0, 1, 2):
        assert limiter.retry_after("u", t) == 0
        limiter.failed("u", t)
    assert limiter.retry_after("u", 3) == pytest.approx(57)
    assert limiter.retry_after("other", 3) == 0
    assert limiter.retry_after("u", 60.5) == 0  # the first failure left the window
    limiter.succeeded("u")
    assert limiter.retry_after("u", 3) == 0


def test_rate_limiter_attempt_counts_before_the_outcome() -> None:
    limiter = RateLimiter(max_failures=2, window_s=60)
    keys = ("user:u", "ip:a")
    assert limiter.attempt(keys, 0) == 0 and limiter.attempt(keys, 1) == 0  # two in flight
    assert limiter.attempt(keys, 2) == pytest.approx(58)  # the third waits, though none has failed yet
    limiter.forgive("ip:a", 1)  # the second one succeeded
    assert limiter.retry_after("ip:a", 2) == 0 and limiter.retry_after("user:u", 2) > 0
    limiter.forgive("ip:a", 0)
    limiter.forgive("ip:a", 0)  # nothing left to take back: no error
    assert "ip:a" not in limiter._failures


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(max_failures=1, window_s=60, max_keys=100)
    for i in range(1000):
        limiter.failed(f"name{i}", 0)
    assert len(limiter._failures) == 100
    assert limiter.retry_after("name999", 1) > 0


def test_a_locked_name_is_not_evicted_by_a_flood_of_other_keys() -> None:
    """When the table was full the oldest key was dropped, and the name under attack is the oldest: 5 wrong
    passwords for ann locked her name, then one attempt with a made-up name from each of 50 other addresses
    (100 keys) dropped the lock, and the attacker had 5 more guesses, again and again. Now a full table drops
    keys whose failures left the window first, then keys under their limit, a locked key last."""
    limiter = RateLimiter(max_failures=5, window_s=300, max_keys=100)
    for t in range(5):
        assert limiter.attempt(("user:ann", f"ip:10.0.0.{t}"), t) == 0
    assert limiter.attempt(("user:ann", "ip:10.0.1.1"), 5) > 0  # locked
    for i in range(50):
        assert limiter.attempt((f"user:junk{i}", f"ip:10.1.0.{i}"), 10 + i) == 0
    assert len(limiter._failures) <= 100
    assert limiter.attempt(("user:ann", "ip:10.0.1.2"), 100) > 0, "the lock was dropped"
    # keys whose failures left the window go first, even a lock that has ended
    later = RateLimiter(max_failures=1, window_s=60, max_keys=3)
    later.failed("old", 0)
    later.failed("a", 100)
    later.failed("b", 100)
    later.failed("c", 101)
    assert set(later._failures) == {"a", "b", "c"}


def test_console_table_names_fit_mysql() -> None:
    from riskctl.store.migrations import check_identifier, table_names

    assert table_names("rules").console()["users"] == "console_users"
    assert table_names("t1_rules").console()["sessions"] == "t1_console_sessions"
    assert table_names("policies").console()["audit"] == "policies_console_audit"
    for name in ("a" * 52 + "rules", "b" * 56, "c" * 40):  # the longest names the rules store takes
        names = table_names(name).console()
        assert all(check_identifier(n) for n in names.values())
        assert len(set(names.values())) == 4
    assert table_names("x" * 56).console() != table_names("y" * 56).console()
