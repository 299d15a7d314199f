-- 0015: server secrets of the webmail, one row per name (spool.accounts.shared_secret), made on
-- first use: the key that signs the pre-login form tokens ("webmail-pre"). Kept in the spool so
-- that every process of the gateway signs and checks with the same key (and on PostgreSQL,
-- 0008, every node). value: 32 random bytes; created_at: unix seconds.
CREATE TABLE webmail_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at REAL NOT NULL
);
