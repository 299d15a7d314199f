"""The drill's test message read in the real webmail (gateway process with the webmail, the
`mailgate drill` CLI as a process, HTTP as a browser sends it): with `available = "during_events"`
the login is closed, opens while the drill runs, the drill recipient sees the held test message in
the inbox, and the login closes again once the drill has ended and replayed it."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, fast_continuity
from tests.support.peers import wait_for
from tests.webmail.conftest import Client, set_password, spool_rows, start_webmail

DRILL = "drill@example.com"
PASSWORD = "correct horse battery staple 42"


def test_the_drill_recipient_reads_the_held_test_message_in_the_webmail(peers, tmp_path):
    exchange = peers.sink("127.0.0.1", None, "exchange")
    gw = start_webmail(peers, tmp_path, webmail_toml='available = "during_events"',
                       smarthost=f"[127.0.0.1]:{exchange.port}", continuity=None,
                       extra=fast_continuity("postmaster@example.com"))
    set_password(gw, DRILL, PASSWORD)
    assert Client(gw.base).get("/login")[0] == 503                 # closed: no event, no drill
    cli = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(gw.gw.config), "drill",
                            "--rcpt", DRILL, "--hold", "60", "--timeout", "120"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        wait_for(lambda: spool_rows(gw.spool_path, "SELECT 1 FROM messages WHERE hold_reason='drill'"), 30,
                 what="the drill's test message held")
        drill_id = spool_rows(gw.spool_path, "SELECT id FROM drills")[0]["id"]
        c = Client(gw.base)
        status, headers, _ = c.login(DRILL, PASSWORD)
        assert status == 303 and headers["location"] == "/mail/inbox", status
        status, _, page = c.get("/mail/inbox")
        assert status == 200 and f"[mailgate drill {drill_id}]" in page
        assert exchange.count() == 0                               # still held
        assert gw.gw.cli("drill", "stop").stdout.startswith(f"ok: drill {drill_id} ended")
        out, _ = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert "result: PASS" in out, out
    wait_for(lambda: exchange.count() == 1, 15, what="the replay")
    assert Client(gw.base).get("/login")[0] == 503                 # closed again
