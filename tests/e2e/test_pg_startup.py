"""A gateway and its PostgreSQL spool at start-up (issue 9): started before the database it
waits (logging once per distinct error, no SMTP listener) and comes up by itself when the
database answers; SIGTERM while it waits is a clean stop (exit 0). A real PostgreSQL 15 of this
module's own (stopped and started by the tests), real gateway processes, a real sink."""
from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.test_pg_relay import dsn, gateway_toml, pg_server, send, subjects  # noqa: F401
from tests.support import postgres as pg
from tests.support.peers import GatewayProc, free_port, wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")]


def test_a_gateway_started_before_postgresql_waits_for_it_and_comes_up_by_itself(
        peers, tmp_path, dsn, pg_server):
    sink = peers.sink(name="exchange")
    pg_server.stop("immediate")
    port = free_port()
    gw = GatewayProc(tmp_path / "gw1", gateway_toml("gw1", port, sink.port, tmp_path / "gw1", dsn,
                                                    connect_timeout=1.0), port)
    peers.procs.append(gw)
    super(GatewayProc, gw).start()          # not GatewayProc.start: it waits for the listener
    try:
        wait_for(lambda: "event='spool_unavailable'" in gw.log_text(), 30,
                 what="the wait for PostgreSQL logged")
        time.sleep(3)                       # a few retries: still waiting, still alive
        assert gw.p.poll() is None, gw.log_text()[-2000:]
        assert send(port, 1) == -1          # no listener until the spool is open
        assert gw.log_text().count("event='spool_unavailable'") == 1   # once per distinct error
    finally:
        pg_server.start()
    wait_for(lambda: send(port, 2) == 250, 60, what="250 once PostgreSQL is up")
    wait_for(lambda: subjects(sink).get("2"), 30, what="the message delivered")
    assert "event='listening'" in gw.log_text()


def test_sigterm_while_waiting_for_postgresql_stops_the_gateway_cleanly(
        peers, tmp_path, dsn, pg_server):
    pg_server.stop("immediate")
    try:
        port = free_port()
        gw = GatewayProc(tmp_path / "gw1", gateway_toml("gw1", port, 9, tmp_path / "gw1", dsn,
                                                        connect_timeout=1.0), port)
        peers.procs.append(gw)
        super(GatewayProc, gw).start()
        wait_for(lambda: "event='spool_unavailable'" in gw.log_text(), 30, what="waiting")
        gw.p.send_signal(signal.SIGTERM)
        rc = gw.p.wait(15)
    finally:
        pg_server.start()
    assert "Traceback" not in gw.log_text(), gw.log_text()[-2000:]
    assert rc == 0, (rc, gw.log_text()[-1500:])           # asked to stop: not a failure
    assert "event='stopped' node='gw1' reason='stopped while waiting for the spool'" in \
        gw.log_text(), gw.log_text()[-1500:]
