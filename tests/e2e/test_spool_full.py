"""A full disk under the spool, end to end: a real size-limited tmpfs as the gateway's data_dir,
filled with a filler file while mail is flowing.

The gateway must stay up (the process alive, port answering 220) and answer 452 4.3.1 at DATA
while the spool cannot write; once the filler is deleted it must take new mail again by itself
(250, delivered), and mail whose outcome could not be recorded while the disk was full must be
recorded once space is back, so even a restart afterwards sends nothing twice (tokens counted at
the sink). A message deferred every couple of seconds (its recipient gets 451) keeps the queue
manager writing throughout: before the fix its claim raised SpoolError out of the TaskGroup.
"""
from __future__ import annotations

import json
import re
import smtplib
import socket
import time
import uuid

import pytest

from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for
from tests.support.smalldisk import SmallDisk

pytestmark = pytest.mark.skipif(not SmallDisk.available(), reason="mounting a tmpfs needs root")

INSUFFICIENT_STORAGE = (452, "4.3.1")
SLOW = 4.0          # seconds the sink waits after the final dot (deliveries in flight at the fill)


@pytest.fixture
def disk(peers, tmp_path):
    with SmallDisk(tmp_path / "data", "8M") as d:
        yield d
        peers.close()                # the gateway holds files on it: stop it before unmounting


def send(port: int, token: str, rcpts=("bob@example.com",)) -> tuple[int, str]:
    """(code, text) of the reply to DATA (250 when queued)."""
    msg = (f"From: alice@remote.test\r\nTo: {', '.join(rcpts)}\r\nSubject: token {token}\r\n"
           f"Message-ID: <{token}@remote.test>\r\n\r\n{token}\r\n" + "filler line\r\n" * 200)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        c.mail("alice@remote.test")
        for r in rcpts:
            c.rcpt(r)
        code, text = c.data(msg.encode())
    return code, text.decode()


def greets(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.recv(512).startswith(b"220")


def tokens_at(sink) -> list[str]:
    out = []
    for _env, data in sink.messages():
        m = re.search(rb"Subject: token (\w+)", data)
        if m:
            out.append(m.group(1).decode())
    return out


def states(gw) -> dict[str, str]:
    listing = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
    return {m["queue_id"]: m["state"] for m in listing}


def test_a_full_disk_answers_452_keeps_the_gateway_up_and_it_recovers_sending_nothing_twice(
        peers, disk):
    sink = peers.sink("127.0.0.51", None, "exchange", "--data-delay", str(SLOW),
                      "--rcpt-reply", "later@example.com=451")
    port = free_port()
    toml = config_toml(port=port, data_dir=disk.path, smarthost=f"[127.0.0.51]:{sink.port}",
                       minimal_backoff=1.0, maximal_backoff=2.0)
    gw = peers.gateway(toml, port)
    accepted: list[str] = []
    code, _ = send(port, "deferred0", ("later@example.com",))      # retried every 1-2 s
    assert code == 250
    for _ in range(5):                 # in flight at the sink (slow) when the disk fills
        token = uuid.uuid4().hex[:12]
        code, text = send(port, token)
        assert code == 250, text
        accepted.append(token)
    wait_for(lambda: list(states(gw).values()).count("active") >= 5, 10, interval=0.2,
             what="the five messages claimed")
    disk.fill()

    refused = None
    for _ in range(50):                # the first commits may still fit in the WAL's last page
        token = uuid.uuid4().hex[:12]
        code, text = send(port, token)
        if code == 250:
            accepted.append(token)
            continue
        refused = (code, text)
        break
    assert refused is not None, "the disk is full but every message was queued"
    print(f"queued after the fill before the first refusal: {len(accepted) - 5}")
    assert refused[:1] == INSUFFICIENT_STORAGE[:1] and refused[1].startswith("4.3.1"), refused

    # the five deliveries finish at the sink, their outcomes cannot be written; the deferred
    # message comes due again (a claim on a full disk): give both time to happen
    wait_for(lambda: len(tokens_at(sink)) >= 5, 3 * SLOW + 10, what="the slow deliveries")
    time.sleep(5.0)
    assert gw.running, gw.log_text()[-3000:]
    assert greets(port)
    # still full: refused with 452 4.3.1. A commit that still fits (a WAL frame another
    # process's checkpoint or rollback gave back: with workers each has its own connection) is
    # durable, so its 250 is right; it must then be delivered once like the others
    got = []
    for _ in range(5):
        token = uuid.uuid4().hex[:12]
        code, text = send(port, token)
        got.append((code, text[:5]))
        if code == 250:
            accepted.append(token)
        else:
            break
    assert got[-1] == (452, "4.3.1"), got

    disk.free()
    token = uuid.uuid4().hex[:12]
    code, text = send(port, token)
    assert code == 250, text                          # no restart needed
    accepted.append(token)
    wait_for(lambda: token in tokens_at(sink), 30, what="the new message at the sink")
    wait_for(lambda: sum(1 for s in states(gw).values() if s == "delivered") >= len(accepted), 40,
             interval=0.3, what="every accepted message recorded delivered")
    assert gw.running

    gw.stop()                                          # a restart must not send anything again
    gw.start()
    time.sleep(3.0)
    at_sink = tokens_at(sink)
    assert sorted(at_sink) == sorted(accepted), (len(at_sink), len(accepted))
    assert len(set(at_sink)) == len(at_sink)           # exactly once each
    print(f"accepted {len(accepted)}, at the sink {len(at_sink)}, distinct {len(set(at_sink))}")
