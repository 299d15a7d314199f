"""The ``spool`` check of `mailgate doctor` on a PostgreSQL spool (spool.backend, issue 9):
what would make a 250 given by any gateway of the cluster less than durable, or the gateway
unable to start. On the SQLite spool there is nothing here (the disk check covers the file).

Through one read-only connection (gateway.cli_backend.on_postgresql, never a PgSpool: asking
registers no node), it reads:

- the schema version against this mailgate's migrations (older: the next gateway start
  migrates it; newer: this mailgate is older than a node that already migrated it);
- ``pg_is_in_recovery()``: a standby cannot take writes, so every commit would fail (451);
- ``fsync`` and ``synchronous_commit``: off means a 250 can be lost in a crash of the database
  server; ``local`` or ``remote_write`` with a synchronous standby means a fail-over can lose it;
- ``synchronous_standby_names``: without a synchronous standby, a fail-over to an asynchronous
  replica (Patroni without ``synchronous_mode``) can lose acknowledged mail; said in the OK
  line's detail, not a warning, since a single database server without replicas is a valid
  choice (docs/cluster.md);
- the nodes registered and how many beat within the last 15 s.
"""
from __future__ import annotations

from gateway.cli_backend import PgUnavailable, is_postgresql, on_postgresql, where
from gateway.config import Config
from gateway.doctor import Check

__all__ = ["check_spool", "ALIVE_WITHIN"]

ALIVE_WITHIN = 15.0     # seconds: a node whose heartbeat is younger counts as running


async def _read(conn) -> dict:
    async def one(sql: str):
        return (await (await conn.execute(sql)).fetchone())[0]
    out = {"in_recovery": await one("SELECT pg_is_in_recovery()"),
           "fsync": await one("SHOW fsync"),
           "synchronous_commit": await one("SHOW synchronous_commit"),
           "standbys": await one("SHOW synchronous_standby_names")}
    exists = await one("SELECT to_regclass('schema_version') IS NOT NULL")
    out["version"] = await one("SELECT coalesce(max(version), 0) FROM schema_version") \
        if exists else 0
    nodes = await one("SELECT to_regclass('nodes') IS NOT NULL")
    out["nodes"] = (await (await conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE last_seen > clock_timestamp() - %s *"
        " interval '1 second') FROM nodes", (ALIVE_WITHIN,))).fetchone()) if nodes else (0, 0)
    return out


def check_spool(cfg: Config) -> list[Check]:
    """The spool check ([] on SQLite). Never raises for what it finds."""
    if not is_postgresql(cfg):
        return []
    from spool.pg.db import migrations
    latest = migrations()[-1][0]
    at = where(cfg.spool.dsn)
    try:
        r = on_postgresql(cfg, _read)
    except PgUnavailable as e:
        return [Check("FAIL", "spool", str(e), "start PostgreSQL or correct spool.dsn; meanwhile "
                      "every gateway answers 451 4.3.0 (or waits at start-up)")]
    name = "spool"
    if r["in_recovery"]:
        return [Check("FAIL", name, f"{at} is a standby in recovery: it takes no writes",
                      "point spool.dsn at the primary (with Patroni: its leader endpoint)")]
    if r["fsync"] != "on" or r["synchronous_commit"] == "off":
        return [Check("FAIL", name, f"{at}: fsync = {r['fsync']}, synchronous_commit = "
                      f"{r['synchronous_commit']}: a 250 can be lost in a crash of the database",
                      "set fsync = on and synchronous_commit = on in postgresql.conf (or remove "
                      "the per-database/role override)")]
    if r["version"] > latest:
        return [Check("FAIL", name, f"{at}: schema {r['version']} is newer than this mailgate's "
                      f"({latest})", "upgrade this gateway to the version the others run")]
    total, alive = r["nodes"]
    standby = (f"synchronous standby {r['standbys']!r}" if r["standbys"] else
               "no synchronous standby (a fail-over to an asynchronous replica can lose "
               "acknowledged mail)")
    detail = (f"PostgreSQL at {at}, synchronous_commit = {r['synchronous_commit']}, {standby}; "
              f"{total} node(s) registered, {alive} beating within {ALIVE_WITHIN:.0f} s")
    if r["standbys"] and r["synchronous_commit"] in ("local", "remote_write"):
        return [Check("WARN", name, detail, "set synchronous_commit = on (or remote_apply): with "
                      f"{r['synchronous_commit']} a fail-over can lose what was acknowledged")]
    if r["version"] < latest:
        return [Check("WARN", name, f"{detail}; schema {r['version']}, this mailgate migrates it "
                      f"to {latest} when it starts", "start this gateway (it migrates under a "
                      "lock, other nodes keep running); older nodes should be upgraded too")]
    return [Check("OK", name, f"{detail}; schema {latest}")]
