"""delivery.max_inflight_bytes bounds the message bytes the gateway's deliveries hold at once,
seen from a real downstream: the gateway as a process, a sink that holds each DATA reply for a
while (``--data-delay``) and records the most sessions it had inside DATA at once
(``--concurrency-file``). With a budget of two messages, several large messages queued together
are delivered at most two at a time, one larger than the whole budget alone, and each exactly
once (spool rows all ``delivered``, one copy each at the sink)."""
from __future__ import annotations

import json
import smtplib
import sqlite3
from email.message import EmailMessage

from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

SIZE = 300_000                 # bytes per message (about)
BUDGET = 2 * SIZE + 100_000    # two of them fit, a third does not
SMALL, BIG = 6, 1              # BIG is 4 × SIZE: more than the whole budget


def message(n: int, size: int) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@remote.test", "user@example.com", f"budget {n}"
    m["Message-ID"] = f"<budget-{n}@remote.test>"
    line = ("x" * 75 + "\n")
    m.set_content(line * (size // len(line)))
    return m.as_bytes()


def test_deliveries_hold_at_most_the_byte_budget(peers, tmp_path):
    conc = tmp_path / "in-data.json"
    sink = peers.sink("127.0.0.1", None, "exchange", "--data-delay", "1.0",
                      "--concurrency-file", str(conc))
    port = free_port()
    toml = config_toml(port=port, data_dir=tmp_path / "data", smarthost=f"[127.0.0.1]:{sink.port}")
    toml = toml.replace("[delivery]\n", f"[delivery]\nmax_inflight_bytes = {BUDGET}\n", 1)
    peers.gateway(toml, port)
    sizes = [SIZE] * 3 + [4 * SIZE] * BIG + [SIZE] * (SMALL - 3)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        for n, size in enumerate(sizes):
            c.sendmail("a@remote.test", ["user@example.com"], message(n, size))
    total = len(sizes)
    db = sqlite3.connect(f"file:{tmp_path / 'data' / 'spool.db'}?mode=ro", uri=True)

    def delivered():
        rows = db.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall()
        return dict(rows) == {"delivered": total}

    wait_for(delivered, 120, what=f"{total} messages delivered")
    got = [body for _env, body in sink.messages()]
    ids = sorted(b.split(b"Message-ID: ", 1)[1].split(b"\n", 1)[0].strip() for b in got)
    assert ids == sorted(f"<budget-{n}@remote.test>".encode() for n in range(total))
    top = json.loads(conc.read_text())["max_in_data"]
    assert 1 <= top <= 2, f"{top} deliveries inside DATA at once with a budget of two messages"
