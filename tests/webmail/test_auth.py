"""webmail.auth's pure decisions: the login address, codes, the rate-limit buckets and
windows, the pre-session token, TOTP steps (no replay), phones and passwords."""
from __future__ import annotations

import pyotp
import pytest

from webmail import auth


@pytest.mark.parametrize("raw,key", [
    (" Alice@Example.COM ", "alice@example.com"), ("a@BÜCHER.example", "a@bücher.example"),
    ("alice", None), ("", None), (None, None), (["a@b.c"], None), ("a\u0000@example.com", None),
    ("a\u202e@example.com", None), ("a@example.com\r\nBcc: x@y", None), ("x" * 250 + "@a.bc", None),
    ("@a,@b:alice@example.com", "alice@example.com"), ("a@[192.0.2.1]", None),
])
def test_the_login_address_is_trimmed_bounded_and_parsed(raw, key):
    assert auth.clean_address(raw) == key


def test_client_buckets_are_mox_prefixes():
    assert [p for _, p in auth.ip_buckets("192.0.2.77")] == ["192.0.2.77/32", "192.0.2.64/26", "192.0.0.0/21"]
    assert [p for _, p in auth.ip_buckets("::ffff:192.0.2.77")][0] == "192.0.2.77/32"
    assert [p for _, p in auth.ip_buckets("2001:db8:1:2::5")] == ["2001:db8:1:2::/64", "2001:db8:1::/48",
                                                                   "2001:db8::/32"]
    keys = auth.ip_keys("login", "192.0.2.77")
    assert sorted(limit for _, window, limit in keys if window == 60.0) == [10, 30, 90]
    assert sorted(limit for _, window, limit in keys if window == 86400.0) == [50, 150, 450]


def test_the_limiter_reserves_refunds_and_rolls_windows():
    now = [0.0]
    r = auth.RateLimiter(clock=lambda: now[0])
    keys = [("a", 60.0, 2), ("b", 3600.0, 3)]
    first, second = r.take(keys), r.take(keys)
    assert r.take(keys) is None                       # a: 2 of 2
    r.give_back(second)                               # a success does not count
    assert r.take(keys) is not None and r.take(keys) is None
    now[0] = 61.0                                     # a new minute: a is free, b has 2 of 3
    assert r.take(keys) is not None
    assert r.take(keys) is None                       # b: 3 of 3 this hour
    now[0] = 3601.0
    assert r.take(keys) is not None
    assert first is not None


def test_the_limiter_window_slides_across_a_minute_boundary():
    """Ten failures in the last seconds of a minute still block the eleventh just after it
    (fixed windows would give an attacker twice the limit, and made a login test flaky)."""
    now = [50.0]
    r = auth.RateLimiter(clock=lambda: now[0])
    keys = [("ip", 60.0, 10)]
    for i in range(10):
        now[0] = 50.0 + i
        assert r.take(keys) is not None
    now[0] = 61.0
    assert r.take(keys) is None
    now[0] = 110.5                     # the first failure (t=50) is a minute old
    assert r.take(keys) is not None and r.take(keys) is None


def test_the_pre_session_token_is_bound_to_its_cookie_and_secret():
    token = auth.pre_token(b"k" * 32, "123.abc")
    assert auth.pre_ok(b"k" * 32, "123.abc", token)
    assert not auth.pre_ok(b"k" * 32, "123.abd", token)
    assert not auth.pre_ok(b"j" * 32, "123.abc", token)
    assert not auth.pre_ok(b"k" * 32, None, token) and not auth.pre_ok(b"k" * 32, "123.abc", None)


def test_codes_and_totp():
    codes = {auth.new_code() for _ in range(200)}
    assert all(len(c) == 8 and c.isdigit() for c in codes) and len(codes) > 190
    assert auth.clean_code(" 1234-5678 ") == "12345678"
    assert auth.clean_code("1234567") is None and auth.clean_code("１２３４５６７８") is None
    secret = pyotp.random_base32()
    t = 1_700_000_000.0
    code = pyotp.TOTP(secret).at(t)
    step = auth.totp_step(secret, code, 0, now=t)
    assert step == int(t // 30)
    assert auth.totp_step(secret, code, step, now=t) is None            # once only
    assert auth.totp_step(secret, code, 0, now=t + 30) == step          # one step of drift
    assert auth.totp_step(secret, code, 0, now=t + 90) is None
    assert auth.totp_step("", code, 0, now=t) is None


def test_phones_and_passwords():
    assert auth.normalize_phone("+44 (1632) 960-961") == "+441632960961"
    assert auth.normalize_phone("01632 960961") is None and auth.normalize_phone("+12") is None
    assert auth.password_problem("short") and auth.password_problem("x" * 1025)
    assert auth.password_problem("ten chars\x00!") and auth.password_problem("a long password") is None
