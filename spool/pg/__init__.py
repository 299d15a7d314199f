"""The PostgreSQL spool backend (several gateways on one database): PgSpool, the queue core of
spool.api.QueueSpool with claims under fencing tokens, and leader leases with fenced writes.
Needs psycopg 3 and psycopg-pool; the SQLite spool (spool.Spool) does not import this package."""
from spool.pg.lease import Lease, LeaseLost
from spool.pg.store import LEASE_TTL, PgSpool

__all__ = ["PgSpool", "Lease", "LeaseLost", "LEASE_TTL"]
