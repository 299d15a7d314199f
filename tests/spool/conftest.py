"""Spool test fixtures: ``pg_cluster`` and ``pg_dsn`` (a PostgreSQL 15 cluster for the session and
a fresh, migrated database per test) live in tests/conftest.py, shared with the gateway's tests."""

import pytest

from spool import Spool


def _on_both_backends(name: str):
    """A fixture ``name``: a real SQLite spool in tmp_path, then a PgSpool (node "node-a") on a
    fresh PostgreSQL database (``pg_dsn``); the contract suites run every test on each."""
    @pytest.fixture(params=["sqlite", "postgresql"], name=name)
    async def fixture(request, tmp_path):
        if request.param == "sqlite":
            s = await Spool.open(tmp_path / "spool.db")
        else:
            from spool.pg import PgSpool
            s = await PgSpool.open(request.getfixturevalue("pg_dsn"), node="node-a")
        yield s
        await s.close()
    return fixture


#: queue, accounts, mailbox and console contract suites (test_*contract.py)
qspool_fixture, aspool_fixture, mspool_fixture, cspool_fixture = (
    _on_both_backends(n) for n in ("qspool", "aspool", "mspool", "cspool"))
