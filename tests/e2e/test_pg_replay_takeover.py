"""A continuity replay of 1,000 held messages on PostgreSQL, the leader killed half-way (issue 9).

Two real gateway processes share one real PostgreSQL; Exchange is a real sink. Exchange dies,
the pair holds 1,000 messages (half accepted by each node), Exchange comes back and the leader
(gw1) replays them at ``replay_rate`` msg/s. When half has been released, gw1 gets kill -9:
gw2 takes the lease at a higher epoch within lease TTL + renew interval and finishes the
replay. Asserted on the database's rows and the sink's messages:

- 0 lost: every message that got a 250 reaches the sink; duplicates at most the claims gw1 held
  at the kill (their final dot may have gone out before our commit, RFC 5321 §6.1);
- the cluster's replay rate (releases per second, stamped with PostgreSQL's clock in
  ``released_at``) is within 10 % of ``replay_rate`` before the kill and after the takeover:
  the leader alone releases, so the rate promised to Exchange holds for the cluster, not per
  node (a second node does not double it);
- every state change is the leader's at its epoch: gw1 at 1 until the kill, gw2 at 2 after.

Measured here (printed): takeover time, the rate of each part of the replay, claims in flight
at the kill and duplicates.
"""
from __future__ import annotations

import threading
import time

import pytest

from tests.e2e.test_pg_continuity import (LEASE_TTL, RENEW, CLAIM_TTL, at_sink, mode, one, rows,
                                          send, start_pair)
from tests.support import postgres as pg
from tests.support.peers import wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")]

N = 1000
RATE = 40.0                 # msg/s: 1,000 take 25 s of replay, the kill falls near 12 s in
SESSIONS_PER_NODE = 4
CONCURRENCY = 100          # replay_concurrency: high enough that the rate, not it, is the bound


def inject(gws) -> list[str]:
    """N messages over SESSIONS_PER_NODE concurrent sessions to each node; the tags acked."""
    acked, errors, lock = [], [], threading.Lock()
    per = N // (2 * SESSIONS_PER_NODE)

    def session(node, k):
        try:
            got = send(gws[node].port, [f"{node}-{k}-{i}" for i in range(per)])
            with lock:
                acked.extend(got)
        except Exception as e:               # reported by the assert below
            errors.append(repr(e))

    threads = [threading.Thread(target=session, args=(node, k))
               for node in ("gw1", "gw2") for k in range(SESSIONS_PER_NODE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors[:3]
    assert len(acked) == N
    return acked


def rate_of(stamps: list[float]) -> float:
    """Releases per second over one uninterrupted part of the replay (unix s, sorted): the
    releases after the first, over the time from the first to the last."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def test_replay_of_1000_held_survives_the_leaders_kill_at_the_configured_rate(peers, tmp_path, pg_dsn):
    dsn = pg_dsn
    sink, gws = start_pair(peers, tmp_path, dsn, replay_rate=RATE, replay_concurrency=CONCURRENCY)
    sink.stop()                                           # Exchange dies
    wait_for(lambda: mode(dsn) == "continuity", 30, interval=0.1, what="continuity")
    wait_for(lambda: "continuity_state_adopted" in gws["gw2"].log_text()
             and "mode='continuity'" in gws["gw2"].log_text(), 10, what="gw2 follows")
    t0 = time.monotonic()
    acked = inject(gws)
    injected = time.monotonic() - t0
    wait_for(lambda: one(dsn, "SELECT count(*) FROM messages WHERE state='hold'"
                              " AND hold_reason='continuity'")[0] == N, 60, what=f"{N} held")
    assert dict(rows(dsn, "SELECT node, count(*) FROM messages GROUP BY node")) == \
        {"gw1": N // 2, "gw2": N // 2}

    sink.start()                                          # Exchange is back: gw1 replays
    wait_for(lambda: one(dsn, "SELECT count(*) FROM messages WHERE released_at IS NOT NULL")[0]
             >= N // 2, 120, interval=0.02, what="the replay half-way")
    gws["gw1"].kill()                                     # kill -9 of the leader
    killed = time.monotonic()
    in_flight = one(dsn, "SELECT count(*) FROM messages WHERE state='active' AND claim_owner='gw1'")[0]
    released_at_kill = one(dsn, "SELECT count(*) FROM messages WHERE released_at IS NOT NULL")[0]
    assert released_at_kill < N
    wait_for(lambda: one(dsn, "SELECT holder, epoch FROM leases WHERE name='continuity'")
             == ("gw2", 2), LEASE_TTL + RENEW + 5, interval=0.1, what="gw2 takes the lease")
    takeover = time.monotonic() - killed
    assert takeover <= LEASE_TTL + RENEW, takeover

    wait_for(lambda: mode(dsn) == "normal", 120, interval=0.2, what="replay finished by gw2")
    got = wait_for(lambda: (c := at_sink(sink)) and set(acked) <= set(c) and c, CLAIM_TTL * 2 + 30,
                   what="every acknowledged message at the sink")
    lost = set(acked) - set(got)
    dups = sum(n - 1 for n in got.values() if n > 1)
    assert not lost and dups <= in_flight, (len(lost), dups, in_flight)
    assert dict(rows(dsn, "SELECT state, count(*) FROM messages GROUP BY state")) == {"delivered": N}

    # the cluster's replay rate, on PostgreSQL's clock: the takeover is the one long gap
    stamps = sorted(r[0] for r in rows(
        dsn, "SELECT extract(epoch FROM released_at)::float8 FROM messages"))
    assert len(stamps) == N
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    cut = max(range(len(gaps)), key=gaps.__getitem__) + 1
    before, after = stamps[:cut], stamps[cut:]
    assert abs(len(before) - released_at_kill) <= 1, (len(before), released_at_kill)
    r_before, r_after = rate_of(before), rate_of(after)
    per_second = [sum(1 for t in stamps if s <= t - stamps[0] < s + 1)
                  for s in range(int(stamps[-1] - stamps[0]) + 1)]
    for r in (r_before, r_after):
        assert abs(r - RATE) <= 0.10 * RATE, (r_before, r_after, per_second)
    audit = rows(dsn, "SELECT dst, node, epoch FROM continuity_audit ORDER BY id")
    assert {(n, e) for _d, n, e in audit} == {("gw1", 1), ("gw2", 2)}, audit
    assert [d for d, n, _e in audit if n == "gw2"] == ["normal"], audit
    print(f"\n{N} held (injected in {injected:.1f} s); replay at {RATE:g} msg/s: {r_before:.1f} msg/s "
          f"before the kill ({len(before)} released), {r_after:.1f} msg/s after the takeover "
          f"({len(after)}); takeover {takeover:.1f} s (lease TTL {LEASE_TTL:g} s + renew {RENEW:g} s); "
          f"gap in releases {gaps[cut - 1]:.1f} s; {in_flight} claims of gw1 in flight at the kill, "
          f"{dups} duplicates, 0 lost")
