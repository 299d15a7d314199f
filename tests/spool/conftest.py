"""Spool test fixtures: ``pg_cluster`` and ``pg_dsn`` (a PostgreSQL 15 cluster for the session and
a fresh, migrated database per test) live in tests/conftest.py, shared with the gateway's tests."""
