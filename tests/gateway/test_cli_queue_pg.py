"""`mailgate queue hold|release|delete|flush` on a PostgreSQL spool, as processes, with no gateway
running: every verb on every kind of message gives the same exit status, output and resulting
state as on the SQLite spool (both seeded through the verbs they share, spool.api.QueueSpool);
then the rows on PostgreSQL (database-clock times, held_seconds, recipients and bytes deleted,
an active message's claim untouched, no node registered) and the race with a node's claim."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time

import psycopg
import pytest

from spool import NewMessage, QueueState, RcptState, Spool
from spool.pg import PgSpool
from spool.transitions import RcptOutcome
from tests.support.cli import ROOT, mailgate, pg_config

OK, REFUSED = 0, 1                          # exit statuses documented in gateway/cli.py
KINDS = ("incoming", "deferred", "active", "delivered", "continuity")
SOFT = RcptOutcome(0, RcptState.PENDING, 451, "4.4.1 try later", "mx.example.com")
DONE = RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "mx.example.com")
UNKNOWN = "NOSUCHID00000000"


async def seed(spool) -> dict[str, str]:
    """One message of each KIND (``active``: claimed for an hour and left so, as by a live
    node; ``continuity``: on continuity hold), through QueueSpool verbs. Returns {kind: ID}."""
    ids = {k: await spool.commit(NewMessage(mail_from="alice@remote.test",
                                            rcpt_tos=(f"{k}@example.com",),
                                            data=f"Subject: {k}\r\n\r\nx\r\n".encode()))
           for k in KINDS}
    claims = {c.queue_id: c for c in await spool.claim_due(10, ttl=3600)}
    tok = {k: claims[q].token for k, q in ids.items()}
    await spool.record_attempt(ids["deferred"], [SOFT], time.time() + 3600, token=tok["deferred"])
    await spool.record_attempt(ids["continuity"], [SOFT], time.time() + 3600, hold=True,
                               token=tok["continuity"])
    await spool.record_attempt(ids["delivered"], [DONE], time.time(), token=tok["delivered"])
    await spool.move(ids["incoming"], QueueState.ACTIVE, QueueState.INCOMING, token=tok["incoming"])
    return ids


async def seeded(backend: str, where: str) -> dict[str, str]:
    """seed() on the spool of ``backend`` at ``where`` (a DSN, or a spool.db path)."""
    spool = await (PgSpool.open(where, node="gw-a") if backend == "pg" else Spool.open(where))
    try:
        return await seed(spool)
    finally:
        await spool.close()


def state_of(backend: str, where: str, queue_id: str) -> tuple[str, str] | None:
    """(state, hold_reason) of ``queue_id`` read from the database itself, or None."""
    sql = "SELECT state, hold_reason FROM messages WHERE queue_id="
    if backend == "pg":
        got = rows(where, sql + "%s", queue_id)
    else:
        with sqlite3.connect(where) as conn:
            got = conn.execute(sql + "?", (queue_id,)).fetchall()
    return tuple(got[0]) if got else None


def rows(dsn: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def sqlite_config(tmp_path):
    f = tmp_path / "sqlite.toml"
    f.write_text(f'[server]\nhostname = "cli.test"\ndata_dir = "{tmp_path / "sq"}"\n'
                 '[continuity]\nmode = "off"\n')
    return f


#: (verb, kind) -> (exit status, the one line printed, state after, hold_reason after); the
#: line names the message as ID. The SQLite spool's behaviour, which PostgreSQL must match.
EXPECTED = {
    ("hold", "incoming"): (OK, "ID: held (hold)", "hold", "operator"),
    ("hold", "deferred"): (OK, "ID: held (hold)", "hold", "operator"),
    ("hold", "active"): (REFUSED, "mailgate: ID: cannot hold: message is active", "active", ""),
    ("hold", "delivered"): (REFUSED, "mailgate: ID: cannot hold: message is delivered", "delivered", ""),
    ("hold", "continuity"): (OK, "ID: held (hold)", "hold", "operator"),
    ("release", "incoming"): (REFUSED, "mailgate: ID: cannot release: message is incoming", "incoming", ""),
    ("release", "deferred"): (REFUSED, "mailgate: ID: cannot release: message is deferred", "deferred", ""),
    ("release", "active"): (REFUSED, "mailgate: ID: cannot release: message is active", "active", ""),
    ("release", "delivered"): (REFUSED, "mailgate: ID: cannot release: message is delivered",
                               "delivered", ""),
    ("release", "continuity"): (OK, "ID: released (incoming)", "incoming", ""),
    ("delete", "incoming"): (OK, "ID: deleted", None, None),
    ("delete", "deferred"): (OK, "ID: deleted", None, None),
    ("delete", "active"): (REFUSED, "mailgate: ID: being delivered right now; try again in a moment",
                           "active", ""),
    ("delete", "delivered"): (OK, "ID: deleted", None, None),
    ("delete", "continuity"): (OK, "ID: deleted", None, None),
    ("flush", "incoming"): (OK, "flushed 1 message(s)", "incoming", ""),
    ("flush", "deferred"): (OK, "flushed 1 message(s)", "deferred", ""),
    ("flush", "active"): (REFUSED, "flushed 0 message(s)", "active", ""),
    ("flush", "delivered"): (REFUSED, "flushed 0 message(s)", "delivered", ""),
    ("flush", "continuity"): (REFUSED, "flushed 0 message(s)", "hold", "continuity"),
}
UNKNOWN_ID = {"hold": (REFUSED, "mailgate: ID: no such message"),
              "release": (REFUSED, "mailgate: ID: no such message"),
              "delete": (REFUSED, "mailgate: ID: no such message"),
              "flush": (REFUSED, "flushed 0 message(s)")}


@pytest.mark.parametrize("verb", ["hold", "release", "delete", "flush"])
def test_each_verb_on_each_kind_of_message_as_on_sqlite(verb, pg_dsn, tmp_path):
    (tmp_path / "sq").mkdir()
    spools = {"pg": (pg_config(tmp_path, pg_dsn), pg_dsn),
              "sqlite": (sqlite_config(tmp_path), str(tmp_path / "sq" / "spool.db"))}
    for backend, (cfg, where) in spools.items():
        ids = asyncio.run(seeded(backend, where))
        for kind in KINDS:
            out = mailgate(cfg, "queue", verb, ids[kind])
            line = (out.stdout + out.stderr).strip().replace(ids[kind], "ID")
            got = (out.returncode, line, *(state_of(backend, where, ids[kind]) or (None, None)))
            assert got == EXPECTED[verb, kind], (backend, verb, kind, out)
        out = mailgate(cfg, "queue", verb, UNKNOWN)
        assert (out.returncode, (out.stdout + out.stderr).strip().replace(UNKNOWN, "ID")) \
            == UNKNOWN_ID[verb], (backend, out)
    assert not (tmp_path / "data").exists()          # no SQLite spool beside the cluster


def test_rows_after_hold_release_delete_flush(pg_dsn, tmp_path):
    ids = asyncio.run(seeded("pg", pg_dsn))
    cfg = pg_config(tmp_path, pg_dsn)
    active_before = rows(pg_dsn, "SELECT state, claim_owner, claim_token, claim_expires, updated_at"
                         " FROM messages WHERE queue_id=%s", ids["active"])

    # hold: operator hold from the database's clock; a continuity hold keeps its start
    cont_held_at = rows(pg_dsn, "SELECT held_at FROM messages WHERE queue_id=%s", ids["continuity"])[0][0]
    for kind in ("incoming", "deferred", "continuity"):
        assert mailgate(cfg, "queue", "hold", ids[kind]).returncode == OK
    [(state, reason, age)] = rows(pg_dsn, "SELECT state, hold_reason, extract(epoch FROM"
                                  " clock_timestamp() - held_at) FROM messages WHERE queue_id=%s",
                                  ids["incoming"])
    assert (state, reason) == ("hold", "operator") and 0 <= age < 30
    assert rows(pg_dsn, "SELECT held_at, hold_reason FROM messages WHERE queue_id=%s",
                ids["continuity"]) == [(cont_held_at, "operator")]
    again = mailgate(cfg, "queue", "hold", ids["incoming"])
    assert again.returncode == REFUSED and "cannot hold: message is hold" in again.stderr

    # release: due now, the time on hold added to held_seconds, held_at cleared
    rows(pg_dsn, "UPDATE messages SET held_at = held_at - interval '40 seconds' WHERE queue_id=%s"
         " RETURNING 1", ids["incoming"])
    assert mailgate(cfg, "queue", "release", ids["incoming"]).returncode == OK
    [(state, reason, held_at, held_s, due)] = rows(
        pg_dsn, "SELECT state, hold_reason, held_at, held_seconds, next_attempt_at <= clock_timestamp()"
        " FROM messages WHERE queue_id=%s", ids["incoming"])
    assert (state, reason, held_at, due) == ("incoming", "", None, True)
    assert 40 <= held_s < 70

    # flush: deferred mail due now; flush without ID touches deferred messages only
    assert mailgate(cfg, "queue", "release", ids["deferred"]).returncode == OK
    rows(pg_dsn, "UPDATE messages SET state = CASE WHEN queue_id=%s THEN 'deferred' ELSE state END,"
         " next_attempt_at = clock_timestamp() + interval '1 hour' WHERE queue_id = ANY(%s)"
         " RETURNING 1", ids["deferred"], [ids["deferred"], ids["incoming"]])
    out = mailgate(cfg, "queue", "flush")
    assert (out.returncode, out.stdout.strip()) == (OK, "flushed 1 message(s)"), out
    assert rows(pg_dsn, "SELECT queue_id, state FROM messages WHERE next_attempt_at <= clock_timestamp()"
                " AND queue_id = ANY(%s)", [ids["deferred"], ids["incoming"]]) \
        == [(ids["deferred"], "deferred")]
    out = mailgate(cfg, "queue", "flush", ids["incoming"])      # one ID: incoming too
    assert (out.returncode, out.stdout.strip()) == (OK, "flushed 1 message(s)"), out
    assert rows(pg_dsn, "SELECT next_attempt_at <= clock_timestamp() FROM messages WHERE queue_id=%s",
                ids["incoming"]) == [(True,)]

    # delete: the row, its recipients and its bytes
    assert mailgate(cfg, "queue", "delete", ids["delivered"]).returncode == OK
    assert mailgate(cfg, "queue", "delete", ids["continuity"]).returncode == OK
    for table in ("messages", "recipients", "bodies"):
        assert rows(pg_dsn, f"SELECT count(*) FROM {table} WHERE queue_id = ANY(%s)",
                    [ids["delivered"], ids["continuity"]]) == [(0,)], table

    # the active message was refused by every verb and its claim is untouched
    for verb in ("hold", "release", "delete", "flush"):
        assert mailgate(cfg, "queue", verb, ids["active"]).returncode == REFUSED
    assert rows(pg_dsn, "SELECT state, claim_owner, claim_token, claim_expires, updated_at"
                " FROM messages WHERE queue_id=%s", ids["active"]) == active_before

    # no gateway ran, and the CLI registered no node
    assert rows(pg_dsn, "SELECT name FROM nodes") == [("gw-a",)]
    assert not (tmp_path / "data").exists()


def test_released_and_flushed_mail_is_claimed_by_a_node_at_once(pg_dsn, tmp_path):
    ids = asyncio.run(seeded("pg", pg_dsn))
    cfg = pg_config(tmp_path, pg_dsn)
    assert mailgate(cfg, "queue", "release", ids["continuity"]).returncode == OK
    assert mailgate(cfg, "queue", "flush", ids["deferred"]).returncode == OK

    async def claim():
        b = await PgSpool.open(pg_dsn, node="gw-b")
        try:
            return {c.queue_id for c in await b.claim_due(10)}
        finally:
            await b.close()
    assert asyncio.run(claim()) == {ids["continuity"], ids["deferred"], ids["incoming"]}


def test_hold_waits_for_a_claim_in_progress_and_then_refuses(pg_dsn, tmp_path):
    """A node's claim transaction holds the row: the CLI waits for it (it never moves a row
    under a claim), then sees ``active`` and refuses; the claim stands."""
    ids = asyncio.run(seeded("pg", pg_dsn))
    cfg = pg_config(tmp_path, pg_dsn)
    with psycopg.connect(pg_dsn) as node:         # a transaction, as in spool.pg.queue.claim
        node.execute("UPDATE messages SET state='active', claim_owner='gw-a', claim_token=nextval"
                     "('claim_seq'), claim_expires = clock_timestamp() + interval '1 minute'"
                     " WHERE queue_id=%s", (ids["deferred"],))
        cli = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(cfg), "queue",
                                "hold", ids["deferred"]], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while rows(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                       " 'mailgate-cli' AND wait_event_type = 'Lock'") != [(1,)]:
                assert cli.poll() is None and time.monotonic() < deadline, "CLI never waited"
                time.sleep(0.1)
            node.commit()
            out, err = cli.communicate(timeout=30)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
    assert cli.returncode == REFUSED and "cannot hold: message is active" in err, (out, err)
    assert rows(pg_dsn, "SELECT state, hold_reason FROM messages WHERE queue_id=%s",
                ids["deferred"]) == [("active", "")]


@pytest.mark.parametrize("argv", [("hold", "X"), ("release", "X"), ("delete", "X"), ("flush",)],
                         ids=lambda a: a[0])
def test_changes_exit_1_when_the_database_cannot_be_reached(argv, tmp_path):
    cfg = pg_config(tmp_path, "host=127.0.0.1 port=1 dbname=mail user=gw password=s3cret")
    out = mailgate(cfg, "queue", *argv)
    assert out.returncode == 1, (out.stdout, out.stderr)
    [line] = out.stderr.strip().splitlines()
    assert "cannot reach the PostgreSQL spool at 127.0.0.1:1/mail" in line and "s3cret" not in line
    assert not (tmp_path / "data").exists()
