-- 0003: continuity mailboxes. During a continuity event each held message is filed into the
-- mailbox of each local recipient (groups expanded to members) for the webmail: one row per
-- (mailbox, message) with its metadata, one copy of the bytes per message, and a full-text index.
CREATE TABLE mailbox_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox         TEXT    NOT NULL,             -- case-folded mailbox address (the owner)
    queue_id        TEXT    NOT NULL,
    event_id        TEXT    NOT NULL DEFAULT '',
    filed_at        REAL    NOT NULL,             -- unix seconds
    envelope_from   TEXT    NOT NULL DEFAULT '',
    envelope_rcpt   TEXT    NOT NULL DEFAULT '',  -- the envelope recipient that reached this mailbox (a group, alias or itself)
    from_header     TEXT    NOT NULL DEFAULT '',
    to_header       TEXT    NOT NULL DEFAULT '',
    cc_header       TEXT    NOT NULL DEFAULT '',
    subject         TEXT    NOT NULL DEFAULT '',
    date_header     TEXT    NOT NULL DEFAULT '',
    message_id      TEXT    NOT NULL DEFAULT '',
    size            INTEGER NOT NULL DEFAULT 0,   -- bytes
    has_attachments INTEGER NOT NULL DEFAULT 0,
    seen            INTEGER NOT NULL DEFAULT 0,
    UNIQUE (mailbox, queue_id)
);
CREATE INDEX mailbox_messages_owner ON mailbox_messages (mailbox, filed_at);

CREATE TABLE mailbox_bodies (
    queue_id TEXT PRIMARY KEY,
    data     BLOB NOT NULL
);

CREATE VIRTUAL TABLE mailbox_fts USING fts5 (subject, sender, recipients, body, tokenize = 'unicode61 remove_diacritics 2');
