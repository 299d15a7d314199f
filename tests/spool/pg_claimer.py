"""A claiming node for tests/spool/test_pg_cluster.py, run as its own OS process:

    python3 -m tests.spool.pg_claimer DSN NODE TASKS WORKDIR

Opens a PgSpool as NODE, writes WORKDIR/ready-NODE, waits for WORKDIR/go, then runs TASKS tasks
that each claim batches of due messages and record each one delivered under its token, until
nothing is due. Writes WORKDIR/claims-NODE.json: {"claims": [[queue_id, token], ...],
"stale": n, "batches": n}.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from spool import RcptState
from spool.pg import PgSpool
from spool.transitions import RcptOutcome

BATCH = 20


async def main(dsn: str, node: str, tasks: int, workdir: Path) -> None:
    spool = await PgSpool.open(dsn, node=node, max_size=tasks + 2)
    (workdir / f"ready-{node}").touch()
    while not (workdir / "go").exists():
        await asyncio.sleep(0.01)
    claims: list[tuple[str, int]] = []

    async def worker():
        while True:
            got = await spool.claim_due(BATCH, ttl=600)
            if not got:
                return
            claims.extend((c.queue_id, c.token) for c in got)
            await asyncio.gather(*(spool.record_attempt(
                c.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok", node)],
                time.time(), token=c.token) for c in got))

    await asyncio.gather(*(worker() for _ in range(tasks)))
    out = {"claims": claims, "stale": spool.stale_claims, "batches": spool.batches}
    await spool.close()
    (workdir / f"claims-{node}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
