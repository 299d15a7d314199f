-- 0010: admin console accounts. Separate from webmail_users: an admin is not a mailbox, and an
-- admin account always needs a password (argon2id) and a TOTP secret before it can log in.
-- Admin sessions live in webmail_sessions with address 'admin:NAME' (no '@', so they can never
-- name a mailbox); admin actions go to webmail_audit with actor 'admin:NAME'.
CREATE TABLE admin_users (
    name             TEXT PRIMARY KEY,            -- login name, case-folded
    password_hash    TEXT NOT NULL DEFAULT '',    -- argon2id PHC string; '' = not enrolled
    totp_secret      TEXT NOT NULL DEFAULT '',    -- base32; '' = not enrolled (login refused)
    disabled         INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,               -- unix seconds
    password_changed_at REAL NOT NULL DEFAULT 0
);
