"""`mailgate alerts test`'s alert mail on a PostgreSQL spool: the CLI commits the alert's very
message into the shared queue on a plain connection of its own (not a node), a real gateway on
that database delivers it by the MX of the alternate domain (tests/support/dnsserver.py) to an
aiosmtpd sink, and the CLI reports it delivered."""
from __future__ import annotations

import re

import psycopg
import pytest

from tests.conftest import config_toml
from tests.support import postgres as pg
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")]

ALT_MX = "127.0.0.62"


def test_alert_mail_is_queued_in_postgresql_and_delivered_by_a_gateway(peers, tmp_path, pg_dsn):
    alt = peers.sink(ALT_MX, free_port(), "alt-mx")
    with DnsServer(mx={"alt.test": [(10, "mx.alt.test")]}, a={"mx.alt.test": ALT_MX}) as dns:
        port = free_port()
        extra = '[continuity]\nmode = "off"\nalert_mail_to = ["oncall@alt.test"]\n'
        toml = config_toml(port=port, data_dir=tmp_path / "data", smarthost="[127.0.0.1]:9",
                           dns_port=dns.port, mx_port=alt.port, continuity=None, extra=extra)
        gw = peers.gateway(toml + f'[spool]\nbackend = "postgresql"\ndsn = "{pg_dsn}"\nnode = "gw1"\n', port)
        p = gw.cli("alerts", "test", "--wait", "20", check=False)
    print(p.stdout)
    assert p.returncode == 0, (p.stdout, p.stderr)
    qid = re.search(r"queued as (\S+);", p.stdout).group(1)
    assert re.search(r"^OK +continuity\.alert_mail_to oncall@alt\.test  delivered \(250 ", p.stdout, re.MULTILINE)
    [(env, data)] = alt.messages()
    assert (env["mail_from"], env["rcpt_tos"]) == ("mailgate@gw.test", ["oncall@alt.test"])
    assert b"Subject: [mailgate] test alert from mailgate on gw.test" in data
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT state, node FROM messages WHERE queue_id=%s", (qid,)).fetchall() == [
            ("delivered", "cli")]
    assert not (tmp_path / "data" / "spool.db").exists()
