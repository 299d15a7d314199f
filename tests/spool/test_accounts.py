"""spool.accounts on a real spool file: sessions (revocation, idle and absolute expiry, a
disabled account), one-time login codes (hash only, single use, tries, expiry, one live code per
account), link tokens (single use, expiry, kinds) and the append-only audit log."""
from __future__ import annotations

import sqlite3

import pytest

from spool import accounts, db

A = "alice@example.com"


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "spool.db")
    yield c
    c.close()


def tx(conn, fn, *args, **kw):
    return db.transaction(conn, lambda: fn(conn, *args, **kw))


def test_sessions_end_on_revoke_idle_absolute_expiry_and_disable(conn):
    tx(conn, accounts.ensure_user, A)
    sid, csrf = tx(conn, accounts.create_session, A, lifetime=100.0, now=1000.0)
    assert accounts.get_session(conn, sid, idle=50.0, now=1010.0)["csrf_token"] == csrf
    assert accounts.get_session(conn, sid, idle=50.0, now=1051.0) is None          # idle
    tx(conn, accounts.touch_session, sid, now=1040.0)
    assert accounts.get_session(conn, sid, idle=50.0, now=1080.0) is not None
    assert accounts.get_session(conn, sid, idle=500.0, now=1100.0) is None         # absolute
    other, _ = tx(conn, accounts.create_session, A, lifetime=100.0)
    third, _ = tx(conn, accounts.create_session, A, lifetime=100.0)
    assert tx(conn, accounts.revoke_other_sessions, A, third) == 2
    assert accounts.get_session(conn, other, idle=50.0) is None
    assert accounts.get_session(conn, third, idle=50.0) is not None
    tx(conn, accounts.update_user, A, disabled=1)
    assert accounts.get_session(conn, third, idle=50.0) is None
    # only hashes are stored
    assert not conn.execute("SELECT 1 FROM webmail_sessions WHERE id_hash IN (?,?,?)",
                            (sid, other, third)).fetchall()


def test_a_code_is_stored_hashed_used_once_spent_after_tries_and_refused_when_expired(conn):
    tx(conn, accounts.issue_code, A, "12345678", ttl=600.0, now=1000.0)
    [row] = conn.execute("SELECT * FROM webmail_tokens").fetchall()
    assert "12345678" not in tuple(str(v) for v in row)
    assert tx(conn, accounts.use_code, "bob@example.com", "12345678", max_tries=5, now=1001.0) == "none"
    assert tx(conn, accounts.use_code, A, "00000000", max_tries=5, now=1001.0) == "wrong"
    assert tx(conn, accounts.use_code, A, "12345678", max_tries=5, now=1002.0) == "ok"
    assert tx(conn, accounts.use_code, A, "12345678", max_tries=5, now=1003.0) == "none"    # once
    # five wrong tries spend it
    tx(conn, accounts.issue_code, A, "22222222", ttl=600.0, now=2000.0)
    assert [tx(conn, accounts.use_code, A, "00000000", max_tries=5, now=2001.0) for _ in range(5)] \
        == ["wrong"] * 5
    assert tx(conn, accounts.use_code, A, "22222222", max_tries=5, now=2002.0) == "none"
    # expiry
    tx(conn, accounts.issue_code, A, "33333333", ttl=600.0, now=3000.0)
    assert tx(conn, accounts.use_code, A, "33333333", max_tries=5, now=3600.0) == "expired"
    # a new code replaces the live one
    tx(conn, accounts.issue_code, A, "44444444", ttl=600.0, now=4000.0)
    tx(conn, accounts.issue_code, A, "55555555", ttl=600.0, now=4001.0)
    assert tx(conn, accounts.use_code, A, "44444444", max_tries=5, now=4002.0) == "wrong"
    assert tx(conn, accounts.use_code, A, "55555555", max_tries=5, now=4003.0) == "ok"


def test_link_tokens_are_single_use_per_kind_and_expire(conn):
    token = tx(conn, accounts.issue_token, A, "link", ttl=60.0, now=1000.0)
    assert conn.execute("SELECT token_hash FROM webmail_tokens").fetchone()[0] == accounts.token_hash(token)
    assert accounts.peek_token(conn, token, "enrol", now=1001.0) is None        # another kind
    assert accounts.peek_token(conn, token, "link", now=1001.0)["address"] == A
    assert accounts.peek_token(conn, token, "link", now=1001.0) is not None     # peeking uses nothing
    assert tx(conn, accounts.use_token, token, "link", now=1002.0)["address"] == A
    assert tx(conn, accounts.use_token, token, "link", now=1003.0) is None
    late = tx(conn, accounts.issue_token, A, "enrol", ttl=60.0, now=1000.0)
    assert tx(conn, accounts.use_token, late, "enrol", now=1060.0) is None
    mfa = tx(conn, accounts.issue_token, A, "mfa", ttl=60.0, now=5000.0)
    assert [tx(conn, accounts.count_token_try, mfa, "mfa", max_tries=3, now=5001.0) for _ in range(4)] \
        == [1, 2, 3, 0]
    assert accounts.peek_token(conn, mfa, "mfa", now=5002.0) is None
    with pytest.raises(ValueError):
        accounts.issue_token(conn, A, "code", ttl=1.0)
    live = tx(conn, accounts.issue_token, A, "link", ttl=600.0)
    assert tx(conn, accounts.revoke_tokens, A) == 1
    assert accounts.peek_token(conn, live, "link") is None


def test_the_audit_log_is_append_only(conn):
    rid = tx(conn, accounts.audit, "login", address=A, actor=A, result="failed", client="192.0.2.1",
             user_agent="x" * 900)
    [row] = accounts.list_audit(conn, A)
    assert (row["id"], row["result"], len(row["user_agent"])) == (rid, "failed", 500)
    for sql in ("UPDATE webmail_audit SET result='ok'", "DELETE FROM webmail_audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
