-- 0005: continuity webmail accounts, server-side sessions and the append-only audit log.
-- Accounts are keyed by the mailbox key (policies.rcpt_address: local part case-folded, domain
-- in its IDNA normal form), the same key as mailbox_messages.mailbox.
CREATE TABLE webmail_users (
    address          TEXT PRIMARY KEY,            -- mailbox key of the user
    password_hash    TEXT NOT NULL DEFAULT '',    -- argon2id PHC string; '' = no password set
    totp_secret      TEXT NOT NULL DEFAULT '',    -- base32 TOTP secret; '' = no second factor
    disabled         INTEGER NOT NULL DEFAULT 0,
    alt_email        TEXT NOT NULL DEFAULT '',    -- alternate address outside the company (login codes)
    phone            TEXT NOT NULL DEFAULT '',    -- E.164 number for SMS login codes
    created_at       REAL NOT NULL,               -- unix seconds
    password_changed_at REAL NOT NULL DEFAULT 0
);

-- The cookie carries a random id; only its SHA-256 is stored (a copy of the database cannot be
-- replayed as a login). A session ends at expires_at (absolute), after session_idle without use,
-- or when revoked (logout, password change, admin).
CREATE TABLE webmail_sessions (
    id_hash     TEXT PRIMARY KEY,                 -- hex SHA-256 of the cookie value
    address     TEXT NOT NULL,
    csrf_token  TEXT NOT NULL,                    -- synchronizer token for state-changing requests
    created_at  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    expires_at  REAL NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    client      TEXT NOT NULL DEFAULT '',         -- client address at login
    user_agent  TEXT NOT NULL DEFAULT '',
    mfa         INTEGER NOT NULL DEFAULT 0        -- 1 once a required second factor was given
);
CREATE INDEX webmail_sessions_address ON webmail_sessions (address);

-- Append-only: rows are never updated or deleted (the triggers refuse it).
CREATE TABLE webmail_audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,                    -- unix seconds
    address     TEXT NOT NULL DEFAULT '',         -- the account concerned ('' if unknown)
    actor       TEXT NOT NULL DEFAULT '',         -- who did it: the user, "admin:NAME", "cli"
    action      TEXT NOT NULL,                    -- login, login_failed, code_issued, code_used, send, download, ...
    result      TEXT NOT NULL DEFAULT 'ok',
    client      TEXT NOT NULL DEFAULT '',
    user_agent  TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX webmail_audit_address ON webmail_audit (address, at);
CREATE TRIGGER webmail_audit_no_update BEFORE UPDATE ON webmail_audit
BEGIN SELECT RAISE(ABORT, 'webmail_audit is append-only'); END;
CREATE TRIGGER webmail_audit_no_delete BEFORE DELETE ON webmail_audit
BEGIN SELECT RAISE(ABORT, 'webmail_audit is append-only'); END;

-- Folders for the webmail: a user's continuity mailbox holds "inbox" (filed inbound mail) and
-- "sent" (what they sent from the webmail); "deleted" hides a row from the user's views only.
-- None of these touch the queue: what is replayed to Exchange is never changed by a user.
-- The table is rebuilt to make (mailbox, queue_id, folder) the unique key (a message a user
-- sends to themselves is in their Sent and their Inbox); ids are kept (mailbox_fts rowid).
CREATE TABLE mailbox_messages_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox         TEXT    NOT NULL,
    queue_id        TEXT    NOT NULL,
    event_id        TEXT    NOT NULL DEFAULT '',
    filed_at        REAL    NOT NULL,
    envelope_from   TEXT    NOT NULL DEFAULT '',
    envelope_rcpt   TEXT    NOT NULL DEFAULT '',
    from_header     TEXT    NOT NULL DEFAULT '',
    to_header       TEXT    NOT NULL DEFAULT '',
    cc_header       TEXT    NOT NULL DEFAULT '',
    subject         TEXT    NOT NULL DEFAULT '',
    date_header     TEXT    NOT NULL DEFAULT '',
    message_id      TEXT    NOT NULL DEFAULT '',
    size            INTEGER NOT NULL DEFAULT 0,
    has_attachments INTEGER NOT NULL DEFAULT 0,
    seen            INTEGER NOT NULL DEFAULT 0,
    folder          TEXT    NOT NULL DEFAULT 'inbox',   -- inbox | sent
    deleted         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (mailbox, queue_id, folder)
);
INSERT INTO mailbox_messages_new (id, mailbox, queue_id, event_id, filed_at, envelope_from,
    envelope_rcpt, from_header, to_header, cc_header, subject, date_header, message_id, size,
    has_attachments, seen)
  SELECT id, mailbox, queue_id, event_id, filed_at, envelope_from, envelope_rcpt, from_header,
    to_header, cc_header, subject, date_header, message_id, size, has_attachments, seen
  FROM mailbox_messages;
DROP TABLE mailbox_messages;
ALTER TABLE mailbox_messages_new RENAME TO mailbox_messages;
CREATE INDEX mailbox_messages_owner ON mailbox_messages (mailbox, folder, deleted, filed_at);
