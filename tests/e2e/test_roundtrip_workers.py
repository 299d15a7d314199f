"""The round-trip probe with ``server.workers = 2``, end to end: a real gateway (supervisor and two
intake workers) submits its token mail to a real "Exchange" process (tests/support/forwarder.py,
also the smarthost) that forwards it back to the gateway's SMTP port, where whichever worker
the kernel hands the connection consumes it and reports it to the supervisor's probe.

Asserted on the probe history in the spool (`mailgate probes --history`) and the workers' log
lines (``probe_consumed ... worker=K``): consecutive checks pass; each worker consumes returns
(one worker at a time is SIGSTOPped so the kernel hands every return to the other); a worker
killed with ``kill -9`` and restarted gets the awaited tokens (a check it consumed passes); a
bounce to the return address fails the check with its Subject, whichever worker takes it."""
from __future__ import annotations

import os
import re
import signal
from collections import Counter

from tests.e2e.test_roundtrip_probe import RETURN, probe_messages, queue_all, roundtrip_results
from tests.e2e.test_roundtrip_probe import start as roundtrip_start
from tests.e2e.test_workers import workers_of
from tests.support.peers import wait_for



FIELD = re.compile(r"(\w+)=(?:'([^']*)'|(\S+))")


def fields(event: str, text: str) -> list[dict[str, str]]:
    """The key=value fields of every log line of ``event`` (in any order)."""
    return [{k: a or b for k, a, b in FIELD.findall(line)}
            for line in text.splitlines() if f"event='{event}'" in line]


def start(peers, tmp_path, *forwarder_args, deadline=5.0):
    """(gateway with 2 workers, forwarder, other sink): test_roundtrip_probe's set-up (the
    forwarder is the smarthost and the submission target; example.net mail goes to a sink that
    must stay empty) with server.workers = 2, both workers running."""
    gw, fwd, other = roundtrip_start(peers, tmp_path, *forwarder_args, deadline=deadline, workers=2)
    wait_for(lambda: len(workers_of(gw)) == 2, 20, what="two workers")
    return gw, fwd, other


def consumed(gw, outcome: str = "returned") -> Counter:
    """{worker number: probe messages consumed with ``outcome``}, from the gateway's log."""
    return Counter(int(f["worker"]) for f in fields("probe_consumed", gw.log_text())
                   if f.get("outcome") == outcome)


def worker_pids(gw) -> dict[int, int]:
    """{worker number: pid of its latest process}, from the supervisor's worker_started lines."""
    return {int(f["worker_number"]): int(f["pid"])
            for f in fields("worker_started", gw.log_text())}


def oks(gw) -> int:
    return sum(1 for r in roundtrip_results(gw) if r[0] == "ok")


def a_check_consumed_by(gw, number: int, what: str) -> None:
    """Wait for worker ``number`` to consume a return and for a passed check after it."""
    before_k, before_ok = consumed(gw)[number], oks(gw)
    wait_for(lambda: consumed(gw)[number] > before_k, 20, what=f"a return consumed by {what}")
    wait_for(lambda: oks(gw) > before_ok, 20, what=f"a passed check after {what} consumed")


def test_consecutive_checks_pass_and_each_worker_consumes(peers, tmp_path):
    gw, fwd, other = start(peers, tmp_path)
    first = wait_for(lambda: (lambda r: r if len(r) >= 6 else None)(roundtrip_results(gw)), 40,
                     what="six round-trip checks")
    assert [r[0] for r in first[:6]] == ["ok"] * 6, first        # consecutive passes
    for _status, latency, detail in first[:6]:
        assert latency > 0 and detail.startswith("returned after "), detail
    natural = consumed(gw)
    print(f"\nreturns consumed per worker, both serving: {dict(natural)}")
    assert sum(natural.values()) >= 6 and set(natural) <= {1, 2}

    # each worker consumes: with the other one stopped, the kernel hands it every connection
    pids = worker_pids(gw)
    assert sorted(pids.values()) == workers_of(gw)
    for serving, stopped in ((1, 2), (2, 1)):
        os.kill(pids[stopped], signal.SIGSTOP)
        try:
            a_check_consumed_by(gw, serving, f"worker {serving}")
        finally:
            os.kill(pids[stopped], signal.SIGCONT)
    assert consumed(gw)[1] >= 1 and consumed(gw)[2] >= 1

    # probe mail is consumed, never queued nor delivered; no report came late or unread
    assert queue_all(gw) == [] and other.count() == 0
    assert consumed(gw, "unknown") == Counter() and consumed(gw, "forged") == Counter()
    assert "worker_wire_error" not in gw.log_text()
    assert all(line == f"{RETURN} 250 2.0.0 Ok: probe consumed" for line in fwd.forwarded())


def test_a_worker_restarted_after_kill_9_gets_the_token_awaited_before(peers, tmp_path):
    """The forwarder returns each probe 3 s late; right after a submission worker 1 is killed
    with kill -9 and worker 2 stopped: the return waits in the accept queue for the restarted
    worker 1, which only knows the token from the set the supervisor gave it at its start."""
    gw, fwd, _other = start(peers, tmp_path, "--delay", "3", deadline=12.0)
    wait_for(lambda: oks(gw) >= 1, 30, what="a first passed check")
    pids = worker_pids(gw)
    submitted = len(probe_messages(fwd))
    wait_for(lambda: len(probe_messages(fwd)) > submitted, 20, what="the next submission")
    os.kill(pids[2], signal.SIGSTOP)
    try:
        os.kill(pids[1], signal.SIGKILL)
        before_ok = oks(gw)
        wait_for(lambda: worker_pids(gw).get(1) not in (None, pids[1]), 20,
                 what="worker 1 restarted")
        wait_for(lambda: oks(gw) > before_ok, 20, what="the check awaiting since before the kill")
    finally:
        os.kill(pids[2], signal.SIGCONT)
    results = roundtrip_results(gw)
    assert [r[0] for r in results] == ["ok"] * len(results), results   # no check failed
    latest = results[0]                                   # newest first
    assert latest[0] == "ok" and latest[1] > 3000, latest  # the 3 s late return passed
    text = gw.log_text()
    restarted = worker_pids(gw)[1]
    assert restarted in workers_of(gw) and restarted != pids[1] and "signal='SIGKILL'" in text
    since = text[text.index(f"pid={restarted}"):]           # the restarted worker's lines
    assert [f["worker"] for f in fields("probe_consumed", since)
            if f["outcome"] == "returned"][:1] == ["1"]      # it consumed that return
    assert consumed(gw, "unknown") == Counter()           # and knew the token


def test_a_bounce_fails_the_check_with_its_subject(peers, tmp_path):
    gw, fwd, other = start(peers, tmp_path, "--bounce")
    fails = wait_for(lambda: (lambda r: r if len(r) >= 3 else None)(
        [r for r in roundtrip_results(gw) if r[0] == "FAIL"]), 40, what="three failed checks")
    for _status, _latency, detail in fails:
        assert re.match(r"bounced: Undeliverable: mailgate round-trip probe [0-9a-f]{32} "
                        r"\(submitted via ", detail), detail
    assert not [r for r in roundtrip_results(gw) if r[0] == "ok"]
    assert sum(consumed(gw, "bounced").values()) >= 3
    print(f"\nbounces consumed per worker: {dict(consumed(gw, 'bounced'))}")
    assert queue_all(gw) == [] and other.count() == 0
