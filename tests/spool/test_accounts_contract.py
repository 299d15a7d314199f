"""The account verbs (spool.accounts_verbs.AccountVerbs, spool.pg.accounts.PgAccountVerbs) on both
backends: users, sessions, one-time secrets, the audit log, admin accounts and the multi-step
changes. Every assertion is on state read back through the verbs."""
from __future__ import annotations

import asyncio
import inspect
import time

import pytest

from spool import Spool
from spool.account_ops import Actor
from spool.accounts_verbs import AccountVerbs

A, B = "alice@example.com", "bob@example.com"
BY = Actor("admin:root", "192.0.2.7", "UA/1")


def test_both_backends_offer_the_same_verbs_with_the_same_parameters():
    from spool.pg import PgSpool
    from spool.pg.accounts import PgAccountVerbs
    verbs = {n for n in vars(AccountVerbs) if not n.startswith("_")}
    assert verbs == {n for n in vars(PgAccountVerbs) if not n.startswith("_")}
    assert verbs <= set(dir(PgSpool)) and verbs <= set(dir(Spool))
    for n in verbs:
        assert inspect.signature(getattr(AccountVerbs, n)) == \
            inspect.signature(getattr(PgAccountVerbs, n)), n


async def test_users_ensure_update_list(aspool):
    assert await aspool.get_user(A) is None
    before = time.time()
    row = await aspool.ensure_user(A)
    assert row["address"] == A and row["password_hash"] == "" and not row["disabled"]
    assert before - 5 < row["created_at"] < time.time() + 5
    assert (await aspool.ensure_user(A))["created_at"] == row["created_at"]   # not re-created
    assert await aspool.update_user(A, alt_email="a@other.test", phone="+4912345678", disabled=1,
                                    totp_last_step=7)
    got = await aspool.get_user(A)
    assert (got["alt_email"], got["phone"], bool(got["disabled"]), got["totp_last_step"]) == \
        ("a@other.test", "+4912345678", True, 7)
    await aspool.update_user(A, disabled=0)
    assert not (await aspool.get_user(A))["disabled"]
    assert await aspool.update_user(B)                   # creates the account
    assert [u["address"] for u in await aspool.list_users()] == [A, B]
    with pytest.raises(ValueError):
        await aspool.update_user(A, created_at=0.0)
    assert await aspool.get_user("x@example.com") is None


async def test_sessions_live_idle_revoked_replaced_disabled(aspool):
    await aspool.ensure_user(A)
    sid, csrf = await aspool.create_session(A, lifetime=100.0, client="c" * 300, user_agent="UA",
                                            mfa=True)
    row = await aspool.get_session(sid, idle=50.0)
    assert (row["address"], row["csrf_token"], bool(row["mfa"]), len(row["client"])) == \
        (A, csrf, True, 200)
    assert not row["disabled"] and "id_hash" in row and sid not in row.values()
    assert await aspool.get_session("no-such-session", idle=50.0) is None
    await asyncio.sleep(0.3)
    assert await aspool.get_session(sid, idle=0.1) is None            # idle
    await aspool.touch_session(sid, time.time())
    assert await aspool.get_session(sid, idle=0.2) is not None
    short, _ = await aspool.create_session(A, lifetime=0.2)
    await asyncio.sleep(0.3)
    assert await aspool.get_session(short, idle=50.0) is None         # absolute expiry
    new, _ = await aspool.create_session(A, lifetime=100.0, replacing=sid)
    assert await aspool.get_session(sid, idle=50.0) is None
    assert await aspool.revoke_session(sid) is False                  # already revoked
    assert await aspool.get_session(new, idle=50.0) is not None
    await aspool.update_user(A, disabled=1)
    assert await aspool.get_session(new, idle=50.0) is None           # account disabled
    await aspool.update_user(A, disabled=0)
    assert await aspool.revoke_session(new) is True
    assert await aspool.get_session(new, idle=50.0) is None
    admin, _ = await aspool.create_session("admin:root", lifetime=100.0)   # no account row
    got = await aspool.get_session(admin, idle=50.0)
    assert got["address"] == "admin:root" and got["disabled"] is None
    other, _ = await aspool.create_session(B, lifetime=100.0)
    assert await aspool.revoke_all_sessions(B) == 1
    assert await aspool.revoke_all_sessions(B) == 0
    assert await aspool.get_session(other, idle=50.0) is None


async def test_tokens_single_use_kinds_expiry_tries(aspool):
    t = await aspool.issue_token(A, "link", ttl=60.0, detail="d")
    row = await aspool.peek_token(t, "link")
    assert (row["address"], row["kind"], row["detail"], row["used_at"], row["tries"]) == \
        (A, "link", "d", 0, 0)
    assert await aspool.peek_token(t, "enrol") is None                # another kind
    assert await aspool.peek_token("nope", "link") is None
    used = await aspool.use_token(t, "link")
    assert used["id"] == row["id"] and used["used_at"] == 0           # the row as it was
    assert await aspool.use_token(t, "link") is None
    assert await aspool.peek_token(t, "link") is None
    # concurrent uses: one wins
    t2 = await aspool.issue_token(A, "mfa", ttl=60.0)
    got = await asyncio.gather(*(aspool.use_token(t2, "mfa") for _ in range(5)))
    assert sum(g is not None for g in got) == 1
    gone = await aspool.issue_token(A, "enrol", ttl=0.1)
    await asyncio.sleep(0.25)
    assert await aspool.peek_token(gone, "enrol") is None and await aspool.use_token(gone, "enrol") is None
    assert await aspool.count_token_try(gone, "enrol", max_tries=3) == 0
    m = await aspool.issue_token(A, "mfa", ttl=60.0)
    assert [await aspool.count_token_try(m, "mfa", max_tries=3) for _ in range(4)] == [1, 2, 3, 0]
    assert await aspool.peek_token(m, "mfa") is None                   # spent at max_tries
    for bad in ("code", "nonsense"):
        with pytest.raises(ValueError):
            await aspool.issue_token(A, bad, ttl=60.0)
    live = [await aspool.issue_token(B, k, ttl=60.0) for k in ("link", "enrol")]
    assert await aspool.revoke_tokens(B) == 2
    assert [await aspool.peek_token(x, k) for x, k in zip(live, ("link", "enrol"))] == [None, None]


async def test_login_codes(aspool):
    assert await aspool.use_code(A, "12345678", max_tries=3) == "none"
    await aspool.issue_code(A, "11111111", ttl=60.0)
    assert (await aspool.get_user(A))["address"] == A                  # the account is created
    await aspool.issue_code(A, "12345678", ttl=60.0)                   # replaces the first
    assert await aspool.use_code(A, "11111111", max_tries=3) == "wrong"
    assert await aspool.use_code(A, "12345678", max_tries=3) == "ok"
    assert await aspool.use_code(A, "12345678", max_tries=3) == "none"  # single use
    await aspool.issue_code(A, "22222222", ttl=60.0)
    assert [await aspool.use_code(A, "00000000", max_tries=2) for _ in range(2)] == ["wrong"] * 2
    assert await aspool.use_code(A, "22222222", max_tries=2) == "none"  # spent by the tries
    await aspool.issue_code(A, "33333333", ttl=0.1)
    await asyncio.sleep(0.25)
    assert await aspool.use_code(A, "33333333", max_tries=3) == "expired"
    assert await aspool.use_code(A, "33333333", max_tries=3) == "none"
    await aspool.issue_code(B, "44444444", ttl=60.0)
    assert await aspool.use_code(A, "44444444", max_tries=3) == "none"  # another account's
    await aspool.issue_code(B, "55555555", ttl=60.0)
    got = await asyncio.gather(*(aspool.use_code(B, "55555555", max_tries=3) for _ in range(4)))
    assert sorted(got) == ["none", "none", "none", "ok"]                # one winner at once


async def test_one_totp_step_passes_once_under_concurrent_logins(aspool):
    await aspool.ensure_admin("root")
    tokens = [await aspool.issue_token("admin:root", "admin_mfa", ttl=60.0) for _ in range(3)]
    got = await asyncio.gather(*(aspool.accept_admin_totp(t, 500) for t in tokens))
    assert sorted(got) == [False, False, True]
    assert (await aspool.get_admin("root"))["totp_last_step"] == 500


async def test_audit_is_newest_first_cut_and_filtered(aspool):
    ids = [await aspool.append_audit("login", address=A, actor=A, client="c" * 300,
                                     user_agent="u" * 600, detail="d" * 3000),
           await aspool.append_audit("send", address=B, actor=B, result="failed"),
           await aspool.append_audit("logout", address=A, actor=A)]
    assert ids == sorted(ids)
    rows = await aspool.list_audit()
    assert [r["id"] for r in rows] == ids[::-1]
    assert [r["action"] for r in await aspool.list_audit(A)] == ["logout", "login"]
    first = (await aspool.list_audit(A))[1]
    assert (len(first["client"]), len(first["user_agent"]), len(first["detail"]),
            first["result"]) == (200, 500, 2000, "ok")
    assert time.time() - 30 < first["at"] < time.time() + 30
    assert [r["action"] for r in await aspool.list_audit(limit=1)] == ["logout"]
    assert await aspool.list_audit("nobody@example.com") == []


async def test_enrol_user_uses_the_link_once_and_logs_everyone_out(aspool):
    sid, _ = await aspool.create_session(A, lifetime=100.0)
    t = await aspool.issue_token(A, "enrol", ttl=60.0)
    assert await aspool.enrol_user("wrong", password_hash="$argon2id$x") is False
    assert await aspool.enrol_user(t, password_hash="$argon2id$x") is True
    row = await aspool.get_user(A)
    assert row["password_hash"] == "$argon2id$x" and row["password_changed_at"] > time.time() - 30
    assert await aspool.get_session(sid, idle=50.0) is None
    assert await aspool.enrol_user(t, password_hash="$argon2id$y") is False
    assert (await aspool.get_user(A))["password_hash"] == "$argon2id$x"
    link = await aspool.issue_token(A, "link", ttl=60.0)
    assert await aspool.enrol_user(link, password_hash="$argon2id$z") is False   # not an enrol link
    assert await aspool.peek_token(link, "link") is not None


async def test_accept_totp_login_and_change_password(aspool):
    t = await aspool.issue_token(A, "mfa", ttl=60.0, detail="password")
    assert await aspool.accept_totp_login(t, 1234) is True
    assert (await aspool.get_user(A))["totp_last_step"] == 1234
    assert await aspool.accept_totp_login(t, 1235) is False
    assert (await aspool.get_user(A))["totp_last_step"] == 1234
    keep, _ = await aspool.create_session(A, lifetime=100.0)
    others = [(await aspool.create_session(A, lifetime=100.0))[0] for _ in range(2)]
    assert await aspool.change_password(A, password_hash="h2", keep_session_id=keep) == 2
    assert (await aspool.get_user(A))["password_hash"] == "h2"
    assert await aspool.get_session(keep, idle=50.0) is not None
    assert [await aspool.get_session(o, idle=50.0) for o in others] == [None, None]


async def test_admin_changes_to_a_user_are_audited(aspool):
    sid, _ = await aspool.create_session(A, lifetime=100.0)
    link = await aspool.issue_token(A, "link", ttl=60.0)
    assert await aspool.set_user_disabled(A, True, by=BY) == 1
    assert (await aspool.get_user(A))["disabled"] and await aspool.get_session(sid, idle=50) is None
    assert await aspool.peek_token(link, "link") is None
    assert await aspool.issue_user_link(A, "link", ttl=3600.0, by=BY) is None    # disabled
    assert await aspool.set_user_disabled(A, False, by=BY) == 0
    token = await aspool.issue_user_link(A, "enrol", ttl=3600.0, by=BY)
    assert (await aspool.peek_token(token, "enrol"))["address"] == A
    with pytest.raises(ValueError):
        await aspool.issue_user_link(A, "mfa", ttl=3600.0, by=BY)
    await aspool.update_user(A, password_hash="h", totp_secret="S", totp_last_step=9)
    s2, _ = await aspool.create_session(A, lifetime=100.0)
    assert await aspool.set_user_password(A, "", by=BY, action="password_reset") == 1
    assert (await aspool.get_user(A))["password_hash"] == ""
    await aspool.reset_user_totp(A, by=BY)
    row = await aspool.get_user(A)
    assert (row["totp_secret"], row["totp_last_step"]) == ("", 0)
    assert await aspool.set_contacts([(A, {"alt_email": "a@x.test"}), (B, {"phone": "+123456"})],
                                     by=BY) == 2
    assert (await aspool.get_user(B))["phone"] == "+123456"
    with pytest.raises(ValueError):
        await aspool.set_contacts([(A, {"alt_email": "b@x.test"}), (B, {"disabled": 1})], by=BY)
    assert (await aspool.get_user(A))["alt_email"] == "a@x.test"                 # nothing written
    trail = await aspool.list_audit(A)
    assert [(r["action"], r["detail"]) for r in trail] == [
        ("contacts_set", "alt_email=a@x.test"), ("totp_reset", "by admin"),
        ("password_reset", "by admin; sessions_revoked=1"), ("enrol_link_issued", "ttl=3600"),
        ("user_enabled", ""), ("user_disabled", "sessions_revoked=1")]
    assert {(r["actor"], r["client"], r["user_agent"]) for r in trail} == \
        {("admin:root", "192.0.2.7", "UA/1")}


async def test_admin_accounts_enrolment_and_totp(aspool):
    assert await aspool.get_admin("Root") is None
    assert await aspool.update_admin("root", disabled=1) is False
    row = await aspool.ensure_admin("Root")
    assert row["name"] == "root" and row["password_hash"] == "" and not row["disabled"]
    assert await aspool.update_admin("ROOT") is True
    with pytest.raises(ValueError):
        await aspool.update_admin("root", alt_email="x")
    t = await aspool.admin_enrol_link("root", reset=False, ttl=3600.0, by=Actor("cli", "cli"))
    assert (await aspool.peek_token(t, "admin_enrol"))["address"] == "admin:root"
    assert await aspool.admin_enrol_link("ghost", reset=True, ttl=60.0, by=BY) is None
    assert await aspool.get_admin("ghost") is None
    sid, _ = await aspool.create_session("admin:root", lifetime=100.0, mfa=True)
    assert await aspool.enrol_admin(t, password_hash="ph", totp_secret="SECRET") is True
    assert await aspool.enrol_admin(t, password_hash="p2", totp_secret="S2") is False
    row = await aspool.get_admin("root")
    assert (row["password_hash"], row["totp_secret"], row["totp_last_step"]) == ("ph", "SECRET", 0)
    assert await aspool.get_session(sid, idle=50.0) is None
    assert await aspool.admin_enrol_link("root", reset=False, ttl=60.0, by=BY) == ""   # enrolled
    m = await aspool.issue_token("admin:root", "admin_mfa", ttl=60.0, detail="/admin")
    assert await aspool.accept_admin_totp(m, 100) is True
    assert (await aspool.get_admin("root"))["totp_last_step"] == 100
    m2 = await aspool.issue_token("admin:root", "admin_mfa", ttl=60.0)
    assert await aspool.accept_admin_totp(m2, 100) is False          # the same step again
    assert await aspool.peek_token(m2, "admin_mfa") is None          # ... spends the token
    assert await aspool.accept_admin_totp("nope", 200) is False
    await aspool.ensure_admin("ops")
    assert [a["name"] for a in await aspool.list_admins()] == ["ops", "root"]
    s2, _ = await aspool.create_session("admin:root", lifetime=100.0, mfa=True)
    assert await aspool.set_admin_password("root", "ph2", by=BY) == 1
    assert (await aspool.get_admin("root"))["password_hash"] == "ph2"
    assert await aspool.set_admin_password("ghost", "x", by=BY) is None
    assert await aspool.set_admin_disabled("root", True, by=BY) == 0
    assert (await aspool.get_admin("root"))["disabled"]
    assert await aspool.set_admin_disabled("ghost", True, by=BY) is None
    r = await aspool.admin_enrol_link("root", reset=True, ttl=60.0, by=BY)
    row = await aspool.get_admin("root")
    assert (row["password_hash"], row["totp_secret"]) == ("", "")
    assert await aspool.peek_token(r, "admin_enrol") is not None
    assert [x["action"] for x in await aspool.list_audit("admin:root")] == [
        "admin_totp_reset", "admin_disabled", "admin_password_set", "admin_added"]


async def test_a_shared_secret_is_made_once_and_then_the_same(aspool):
    first = await aspool.shared_secret("webmail-pre")
    assert isinstance(first, bytes) and len(first) == 32
    assert await aspool.shared_secret("webmail-pre") == first
    other = await aspool.shared_secret("something-else")
    assert len(other) == 32 and other != first


async def test_every_node_and_process_gets_the_same_shared_secret(tmp_path, request):
    """Two SQLite spools on one file (the CLI beside the gateway), then four PostgreSQL nodes
    asking at once on a fresh database: one value each time."""
    a = await Spool.open(tmp_path / "spool.db")
    try:
        b = await Spool.open(tmp_path / "spool.db", recover=False)
        try:
            assert await a.shared_secret("webmail-pre") == await b.shared_secret("webmail-pre")
        finally:
            await b.close()
    finally:
        await a.close()
    from spool.pg import PgSpool
    dsn = request.getfixturevalue("pg_dsn")
    nodes = [await PgSpool.open(dsn, node=f"node-{i}") for i in range(4)]
    try:
        got = await asyncio.gather(*(n.shared_secret("webmail-pre") for n in nodes))
        assert len(set(got)) == 1 and len(got[0]) == 32
    finally:
        for n in nodes:
            await n.close()
