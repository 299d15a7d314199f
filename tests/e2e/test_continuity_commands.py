"""Admin commands end to end (real gateway process, sink, CLI): a `mailgate continuity start`
typed while the gateway is down is not applied at the next start once older than
``continuity.command_ttl`` (2 s here): the CLI said until when it stays valid, the command is
marked expired and audited once, the state is unchanged; commands the gateway does pick up in
time are applied in order, each audited exactly once (continuity_audit.command_id)."""
import re
import sqlite3
import time

from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

TTL = 2.0
CONF = f"""
[continuity]
mode = "automatic"
tick = 0.2
command_ttl = {TTL}
[probes]
smtp_interval = 0.5
canary_rcpt = "postmaster@example.com"
"""


def spool(tmp_path):
    return sqlite3.connect(f"file:{tmp_path / 'data' / 'spool.db'}?mode=ro", uri=True)


def test_a_command_queued_while_the_gateway_is_down_expires(peers, tmp_path):
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                   smarthost=f"[127.0.0.1]:{sink.port}", extra=CONF), port)
    gw.stop()
    out = gw.cli("continuity", "start", "--reason", "typed on Friday", "--wait", "0.5", check=False)
    assert out.returncode == 1, out
    assert re.match(r"queued as command (\d+); the gateway has not applied it yet .* It stays valid until "
                    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(continuity.command_ttl 2 s\)", out.stdout), out.stdout
    status = gw.cli("continuity", "status").stdout
    assert re.search(r"command:\s+1 start by \S+, queued .*, pending, valid until", status), status
    time.sleep(TTL + 0.5)
    gw.start()
    db = spool(tmp_path)
    wait_for(lambda: db.execute("SELECT done_at FROM continuity_commands WHERE id=1").fetchone()[0], 10,
             what="the gateway picking the command up")
    assert db.execute("SELECT result FROM continuity_commands WHERE id=1").fetchone()[0] == \
        "expired: the gateway did not pick it up within 2 s"
    assert db.execute("SELECT mode FROM continuity_state").fetchone() in (None, ("normal",))
    assert db.execute("SELECT src, dst, command_id FROM continuity_audit").fetchall() == [
        ("normal", "normal", 1)]
    # picked up in time: applied, in order, each once
    assert gw.cli("continuity", "start").stdout.strip() == "ok: continuity"
    assert gw.cli("continuity", "start", check=False).stdout.startswith("refused: ")
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: gw.cli("continuity", "status").stdout.split()[1] == "normal", 10, what="normal")
    rows = db.execute("SELECT command_id, src, dst FROM continuity_audit ORDER BY id").fetchall()
    assert rows == [(1, "normal", "normal"), (2, "normal", "continuity"), (3, "continuity", "continuity"),
                    (4, "continuity", "recovering"), (None, "recovering", "normal")], rows
    status = gw.cli("continuity", "status").stdout
    assert "start expired: queued" in status and "command:" not in status, status
    db.close()
