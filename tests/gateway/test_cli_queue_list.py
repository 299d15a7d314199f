"""``mailgate queue list``'s text listing (gateway.cli_queue._print_list): the queue ID column
fits the longest ID shown (14 characters on one process, 16 on a cluster node or a SQLite worker,
18 for a worker on PostgreSQL), so the state is never glued to the ID."""
from __future__ import annotations

from types import SimpleNamespace as NS

from gateway.cli_queue import _print_list
from spool.states import QueueState, RcptState


def msg(qid: str, state=QueueState.DEFERRED):
    return NS(queue_id=qid, state=state, size=319, arrived_at=1_700_000_000.0,
              mail_from="alice@remote.test", last_error="",
              recipients=[NS(address="bob@example.com", state=RcptState.PENDING)])


def test_ids_of_every_length_keep_a_space_before_the_state(capsys):
    ids = ["5Y4LM3S18ZTN7P", "5Y4D0F2BK302RWQX", "5Y4CY5VD5J0102K6CB"]
    _print_list([msg(i) for i in ids], {"deferred": 3}, False)
    lines = capsys.readouterr().out.splitlines()
    heads = [ln for ln in lines if ln.startswith("5Y4")]
    assert [h.split()[:2] for h in heads] == [[i, "deferred"] for i in ids]
    assert len({h.index("deferred") for h in heads}) == 1          # one column for the state
    rcpt = [ln for ln in lines if "bob@example.com" in ln]
    assert all(ln.index("bob") == heads[0].index("deferred") + 10 for ln in rcpt)
    assert lines[-1] == "-- deferred: 3"
