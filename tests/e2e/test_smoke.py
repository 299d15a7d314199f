"""Smoke: a message sent with swaks (a real SMTP client) to the gateway process arrives at a sink
process with our Received: header on top and the client's bytes after it."""
import json
import subprocess

from tests.conftest import assert_loop, config_toml
from tests.support.peers import free_port, wait_for


def test_swaks_message_is_relayed_to_the_smarthost(peers, tmp_path, event_loop_choice):
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data",
                                   smarthost=f"[127.0.0.1]:{sink.port}",
                                   event_loop=event_loop_choice), port)
    assert_loop(gw, event_loop_choice)
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", "alice@remote.test",
                          "--to", "bob@example.com", "--pipeline", "--header", "Subject: smoke"],
                         capture_output=True, text=True, timeout=60)
    assert "250 2.0.0 Ok: queued as" in out.stdout, out.stdout
    wait_for(lambda: sink.count() == 1, 15, what="delivery to the sink")
    env, data = sink.messages()[0]
    assert env["mail_from"] == "alice@remote.test"
    assert env["rcpt_tos"] == ["bob@example.com"]
    assert data.startswith(b"Received: from ")
    assert b"by gw.test (mailgate) with ESMTP id " in data
    assert b"Subject: smoke" in data
    # the spool's record of it, not a word in the log: delivered, its one recipient delivered
    qid = out.stdout.split("queued as ")[1].split()[0]
    [m] = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
    assert (m["queue_id"], m["state"], m["recipients"]) == \
        (qid, "delivered", [{"address": "bob@example.com", "state": "delivered"}]), m
