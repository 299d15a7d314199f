-- 0008 (PostgreSQL): server secrets of the webmail, as SQLite's 0015: one row per name
-- (spool.pg.account_rows.shared_secret), made on first use by whichever node asks first, then
-- the same for every node: the key that signs the pre-login form tokens ("webmail-pre"), so a
-- login form served by one node is accepted by another (a balancer without stickiness).
-- value: 32 random bytes; created_at: unix seconds, database clock.
CREATE TABLE webmail_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL CHECK (length(value) = 32),
    created_at double precision NOT NULL
);
