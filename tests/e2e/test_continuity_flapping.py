"""A flapping downstream: every third SMTP connection to it is answered 421 (tests/support/flakyproxy.py
in front of a real sink), so every third probe fails. The engine must never start an event, and
the admins must not get an alert per failed probe (the bug bench/continuity.py found: 42 alerts
a minute, as each normal <-> degraded transition had its own alert key)."""
import glob
import json
import sqlite3
import time

from tests.conftest import config_toml
from tests.support.flakyproxy import FlakyProxy
from tests.support.peers import free_port, wait_for

SECONDS = 15
CONF = """
[continuity]
mode = "automatic"
enter_after = 5.0
hold_down = 5.0
tick = 0.5
alert_urls = ["json://127.0.0.1:{hook}/alert"]
[probes]
smtp_interval = 1.0
smtp_timeout = 1.0
canary_rcpt = "postmaster@example.com"
"""


def test_one_probe_in_three_failing_starts_no_event_and_alerts_once(peers, tmp_path, webhook):
    hook, hook_dir = webhook
    sink = peers.sink(name="exchange")
    proxy = FlakyProxy(sink.port)
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                   smarthost=f"[127.0.0.1]:{proxy.port}",
                                   extra=CONF.format(hook=hook)), port)
    time.sleep(SECONDS)
    db = sqlite3.connect(f"file:{tmp_path / 'data' / 'spool.db'}?mode=ro", uri=True)
    failed = db.execute("SELECT count(*) FROM probe_results WHERE ok=0").fetchone()[0]
    assert failed >= SECONDS // 3 - 2                      # the flapping really happened
    dsts = [r[0] for r in db.execute("SELECT dst FROM continuity_audit ORDER BY id")]
    assert dsts.count("degraded") >= SECONDS // 3 - 2, dsts
    assert set(dsts) <= {"normal", "degraded"}, dsts       # never an event
    assert db.execute("SELECT mode FROM continuity_state").fetchone()[0] in ("normal", "degraded")
    db.close()
    wait_for(lambda: glob.glob(str(hook_dir / "*.json")), 5, what="an alert")
    titles = [json.load(open(f)).get("title", "") for f in glob.glob(str(hook_dir / "*.json"))]
    assert titles.count("normal -> degraded") == 1, titles   # was one per failed probe
    assert titles.count("degraded -> normal") <= 1, titles
    proxy.close()
