"""`mailgate cluster status` run as a process against a config naming the test PostgreSQL: the
rows and JSON it prints for nodes made by PgSpool, that asking registers no node, the SQLite
single-node line, and the one-line error (no password) when the database cannot be reached."""
from __future__ import annotations

import asyncio
import json
import re
import time

from spool import NewMessage
from spool.pg import PgSpool
from tests.support.cli import mailgate, pg_config
from tests.support.peers import free_port


def msg(i: int) -> NewMessage:
    return NewMessage(mail_from=f"s{i}@remote.test", rcpt_tos=("bob@example.com",),
                      data=f"Subject: {i}\r\n\r\n{i}\r\n".encode())


async def two_nodes(dsn: str) -> None:
    """gw-a: version 1.0, leader (epoch 1), 2 accepted, 1 claim; gw-b: version 1.1, 1 accepted,
    1 claim, its heartbeat 40 s old."""
    a = await PgSpool.open(dsn, node="gw-a")
    b = await PgSpool.open(dsn, node="gw-b")
    try:
        await a.heartbeat("1.0")
        await b.heartbeat("1.1")
        for i in range(2):
            await a.commit(msg(i))
        await b.commit(msg(2))
        assert await a.acquire_lease(ttl=60) == 1
        assert len(await a.claim_due(1, ttl=60)) == 1
        assert len(await b.claim_due(1, ttl=60)) == 1
        await b.transaction(lambda c: c.execute(
            "UPDATE nodes SET last_seen = clock_timestamp() - interval '40 seconds'"
            " WHERE name = 'gw-b'"))
    finally:
        await a.close()
        await b.close()


def test_status_lists_each_node_with_heartbeat_version_leader_claims_queued(pg_dsn, tmp_path):
    asyncio.run(two_nodes(pg_dsn))
    cfg = pg_config(tmp_path, pg_dsn)
    out = mailgate(cfg, "cluster", "status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    cells = [re.split(r"\s{2,}", line) for line in lines[:3]]      # columns: 2+ spaces apart
    assert cells[0] == ["node", "last heartbeat", "version", "leader (epoch)", "claims held",
                        "queued"]
    rows = {r[0]: r for r in cells[1:]}
    assert rows["gw-a"][2:] == ["1.0", "yes (1)", "1", "2"]
    assert rows["gw-b"][2:] == ["1.1", "-", "1", "1"]
    age_a, age_b = (int(rows[n][1].removesuffix(" s ago")) for n in ("gw-a", "gw-b"))
    assert 0 <= age_a < 10 and 40 <= age_b < 50
    assert "2 node(s)" in lines[3] and "leader: gw-a (epoch 1)" in lines[3]

    js = mailgate(cfg, "cluster", "status", "--json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["backend"] == "postgresql" and doc["database"].startswith("127.0.0.1:")
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert set(nodes) == {"gw-a", "gw-b"}          # asking twice registered no "cli.test" node
    assert {k: nodes["gw-a"][k] for k in ("version", "leader", "lease_epoch", "claims_held",
                                          "queued")} == {"version": "1.0", "leader": True,
                                                         "lease_epoch": 1, "claims_held": 1,
                                                         "queued": 2}
    assert {k: nodes["gw-b"][k] for k in ("version", "leader", "lease_epoch", "claims_held",
                                          "queued")} == {"version": "1.1", "leader": False,
                                                         "lease_epoch": None, "claims_held": 1,
                                                         "queued": 1}
    assert 40 <= nodes["gw-b"]["seconds_since_seen"] < 50
    assert abs(nodes["gw-a"]["last_seen"] - time.time()) < 10
    assert not (tmp_path / "data" / "spool.db").exists()


def test_sqlite_spool_is_a_single_node(tmp_path):
    f = tmp_path / "sqlite.toml"
    f.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    out = mailgate(f, "cluster", "status")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1 and "single node" in out.stdout
    assert "SQLite" in out.stdout
    js = json.loads(mailgate(f, "cluster", "status", "--json").stdout)
    assert js["backend"] == "sqlite" and js["nodes"] is None


def test_unreachable_database_is_one_line_naming_it_without_the_password(tmp_path):
    port = free_port()                                 # nothing listens there
    cfg = pg_config(tmp_path, f"host=127.0.0.1 port={port} dbname=mail user=gw password=s3cret-pw")
    for argv in (("cluster", "status"), ("cluster", "status", "--json"), ("queue", "list")):
        out = mailgate(cfg, *argv)
        assert out.returncode == 1, (argv, out.stdout, out.stderr)
        assert out.stdout == ""
        assert len(out.stderr.strip().splitlines()) == 1
        assert f"127.0.0.1:{port}/mail" in out.stderr
        assert "s3cret-pw" not in out.stderr and "password" not in out.stderr
