"""Spool test fixtures: a PostgreSQL 15 cluster for the session (tests/support/postgres.py) and a
fresh, migrated database per test."""
from __future__ import annotations

import pytest

from tests.support import postgres as pg


@pytest.fixture(scope="session")
def pg_cluster():
    if not pg.available():
        pytest.skip(f"PostgreSQL server binaries not found in {pg.PG_BIN} (postgresql-15)")
    cluster = pg.started_cluster()
    try:
        pg.make_template(cluster)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_dsn(pg_cluster):
    """The DSN of a new database cloned from the migrated template, dropped afterwards."""
    name, dsn = pg.fresh_database(pg_cluster)
    yield dsn
    pg_cluster.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
