"""Continuity mailboxes on a shared PostgreSQL spool, with two real gateway processes: mail
delivered before an outage is journaled into each member's mailbox and indexed by a node's
background indexer (searchable); during a continuity event, mail held by either node is filed
into its recipients' mailboxes in the hold's transaction; after the replay each mailbox still
holds each message once. Assertions are on the database's rows and on the spool's mailbox
verbs (a third PgSpool reading the same database)."""
from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import psycopg
import pytest

from tests.conftest import config_toml, fast_continuity
from tests.support import postgres as pg
from tests.support.peers import GatewayProc, free_port, wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")]

DIRECTORY = Path(__file__).resolve().parents[1] / "policies" / "data" / "directory.json"
ERIN, FRANK = "erin@example.org", "frank.miller@example.org"


def rows(dsn: str, sql: str, *args):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def verbs(dsn: str, fn):
    """``await fn(spool)`` on a PgSpool of its own (node "reader") over ``dsn``."""
    async def run():
        from spool.pg import PgSpool
        s = await PgSpool.open(dsn, node="reader")
        try:
            return await fn(s)
        finally:
            await s.close()
    return asyncio.run(run())


def send(port: int, rcpts: list[str], subject: str, body: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        assert c.sendmail("alice@remote.test", rcpts, (f"From: Alice <alice@remote.test>\r\n"
                                                       f"Subject: {subject}\r\n\r\n{body}\r\n").encode()) == {}


def subjects(dsn: str, owner: str) -> list[str]:
    return sorted(r[0] for r in rows(dsn, "SELECT subject FROM mailbox_messages WHERE mailbox=%s", owner))


def test_two_nodes_journal_and_file_held_mail_into_shared_mailboxes(peers, tmp_path, pg_dsn):
    dsn = pg_dsn
    sink = peers.sink(name="exchange")
    gws = []
    for node in ("gw1", "gw2"):
        port = free_port()
        toml = config_toml(port=port, data_dir=tmp_path / node / "data", accepted=("example.org",),
                           smarthost=f"[127.0.0.1]:{sink.port}", directory=DIRECTORY, continuity=None,
                           minimal_backoff=1.0, maximal_backoff=2.0,
                           extra=fast_continuity(ERIN, journal="all"))
        toml = toml.replace('hostname = "gw.test"', f'hostname = "{node}.test"')
        toml += f'[spool]\nbackend = "postgresql"\ndsn = "{dsn}"\nnode = "{node}"\n'
        gw = GatewayProc(tmp_path / node, toml, port)
        peers.procs.append(gw)
        gw.start()
        gws.append(gw)

    # before the outage: delivered mail is journaled (pending), then indexed by a node
    send(gws[0].port, ["team@example.org"], "Team offsite", "agenda for the offsite in Oxford")
    send(gws[1].port, [ERIN], "Quarterly zeppelin forecast", "the airship budget")
    wait_for(lambda: sink.count() == 2, 20, what="normal delivery")
    wait_for(lambda: rows(dsn, "SELECT count(*) FROM mailbox_messages WHERE NOT indexed") == [(0,)]
             and rows(dsn, "SELECT count(*) FROM mailbox_messages") == [(3,)], 20, what="indexed")
    assert subjects(dsn, ERIN) == ["Quarterly zeppelin forecast", "Team offsite"]
    assert subjects(dsn, FRANK) == ["Team offsite"]              # the group, nested: once
    found = verbs(dsn, lambda s: s.search_messages(FRANK, "oxford"))
    assert [r["subject"] for r in found["rows"]] == ["Team offsite"]
    assert verbs(dsn, lambda s: s.search_messages(FRANK, "airship"))["rows"] == []   # erin's only

    sink.stop()                                                  # Exchange dies
    wait_for(lambda: rows(dsn, "SELECT mode FROM continuity_state") == [("continuity",)], 30,
             interval=0.1, what="continuity")
    send(gws[0].port, [ERIN], "Held by gw1", "the kangaroo report")
    send(gws[1].port, ["team@example.org"], "Held by gw2", "the wombat report")
    wait_for(lambda: rows(dsn, "SELECT count(*) FROM messages WHERE state='hold'") == [(2,)], 30,
             what="2 held")
    held = rows(dsn, "SELECT m.mailbox, m.subject, m.indexed, m.event_id <> '', b.queue_id IS NOT NULL"
                     " FROM mailbox_messages m LEFT JOIN mailbox_bodies b USING (queue_id)"
                     " WHERE m.subject LIKE 'Held%%' ORDER BY m.mailbox, m.subject")
    assert held == [(ERIN, "Held by gw1", True, True, True), (ERIN, "Held by gw2", True, True, True),
                    (FRANK, "Held by gw2", True, True, True)]
    page = verbs(dsn, lambda s: s.folder_page(ERIN, "inbox"))
    assert page["total"] == 4 and page["rows"][0]["subject"].startswith("Held by")
    hit = verbs(dsn, lambda s: s.search_messages(ERIN, "kangaroo"))["rows"]
    assert [r["subject"] for r in hit] == ["Held by gw1"]
    msg = verbs(dsn, lambda s: s.get_mailbox_message(ERIN, hit[0]["id"]))
    assert b"the kangaroo report" in msg["data"]

    sink.start()                                                 # back: the leader replays
    wait_for(lambda: sink.count() == 4, 60, what="the replay")
    wait_for(lambda: rows(dsn, "SELECT mode FROM continuity_state") == [("normal",)], 60,
             what="normal again")
    # filed when held, delivered on replay: still once per mailbox (the journal adds nothing)
    assert subjects(dsn, ERIN) == ["Held by gw1", "Held by gw2", "Quarterly zeppelin forecast",
                                   "Team offsite"]
    assert subjects(dsn, FRANK) == ["Held by gw2", "Team offsite"]
