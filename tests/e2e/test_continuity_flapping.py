"""A flapping downstream: every third SMTP connection to it is answered 421 (a real TCP proxy in
front of a real sink), so every third probe fails. The engine must never start an event, and
the admins must not get an alert per failed probe (the bug bench/continuity.py found: 42 alerts
a minute, as each normal <-> degraded transition had its own alert key)."""
import asyncio
import glob
import json
import subprocess
import sys
import threading
import time

from tests.conftest import config_toml
from tests.support.peers import ROOT, free_port, wait_for

REPLY_421 = b"421 4.3.2 flapping: one connection in three refused\r\n"
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


class EveryThird421:
    """Forwards to ``target`` but answers 421 and closes every third connection."""

    def __init__(self, target: int):
        self.port, self.target, self.n = free_port(), target, 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        assert ready.wait(5)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    async def _conn(self, r, w):
        self.n += 1
        if self.n % 3 == 0:
            w.write(REPLY_421)
            await w.drain()
            w.close()
            return
        r2, w2 = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(a, b):
            try:
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
            except OSError:
                pass
            finally:
                b.close()
        await asyncio.gather(pipe(r, w2), pipe(r2, w))


def test_one_probe_in_three_failing_starts_no_event_and_alerts_once(peers, tmp_path):
    hook, hook_dir = free_port(), tmp_path / "hooks"
    receiver = subprocess.Popen([sys.executable, str(ROOT / "tests/support/webhook.py"), "--port",
                                 str(hook), "--dir", str(hook_dir)])
    try:
        sink = peers.sink(name="exchange")
        proxy = EveryThird421(sink.port)
        port = free_port()
        gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                       smarthost=f"[127.0.0.1]:{proxy.port}",
                                       extra=CONF.format(hook=hook)), port)
        time.sleep(SECONDS)
        log = gw.log_text()
        failed = log.count("event='probe'") - log.count("ok=True")
        assert failed >= SECONDS // 3 - 2                      # the flapping really happened
        assert log.count("dst='degraded'") >= SECONDS // 3 - 2
        assert "dst='continuity'" not in log                   # never an event
        wait_for(lambda: glob.glob(str(hook_dir / "*.json")), 5, what="an alert")
        titles = [json.load(open(f)).get("title", "") for f in glob.glob(str(hook_dir / "*.json"))]
        assert titles.count("normal -> degraded") == 1, titles   # was one per failed probe
        assert titles.count("degraded -> normal") <= 1, titles
        proxy.loop.call_soon_threadsafe(proxy.loop.stop)
    finally:
        receiver.terminate()
        receiver.wait(5)
