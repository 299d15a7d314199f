-- 0006 (PostgreSQL): continuity mailboxes, the webmail's Sent copies and the journal (SQLite's
-- 0003, 0005 (folders), 0008 and 0009). One row per (mailbox, message, folder) with its metadata;
-- one copy of a held message's bytes in mailbox_bodies (a journal entry uses the queue's own,
-- bodies); the searchable text in ``search`` (a tsvector of words already folded by
-- spool.pg.fts, built with array_to_tsvector: PostgreSQL's parser is not used, so a query finds
-- what SQLite's FTS5 unicode61 finds) and the body text kept for snippets. Times are unix seconds.
CREATE TABLE mailbox_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox         text    NOT NULL,             -- case-folded mailbox key (the owner)
    queue_id        text    NOT NULL,
    event_id        text    NOT NULL DEFAULT '',
    filed_at        double precision NOT NULL,    -- unix seconds, database clock
    envelope_from   text    NOT NULL DEFAULT '',
    envelope_rcpt   text    NOT NULL DEFAULT '',  -- the envelope recipient that reached this mailbox
    from_header     text    NOT NULL DEFAULT '',
    to_header       text    NOT NULL DEFAULT '',
    cc_header       text    NOT NULL DEFAULT '',
    subject         text    NOT NULL DEFAULT '',
    date_header     text    NOT NULL DEFAULT '',
    message_id      text    NOT NULL DEFAULT '',
    size            bigint  NOT NULL DEFAULT 0,   -- bytes
    has_attachments boolean NOT NULL DEFAULT false,
    seen            boolean NOT NULL DEFAULT false,
    folder          text    NOT NULL DEFAULT 'inbox' CHECK (folder IN ('inbox', 'sent')),
    deleted         boolean NOT NULL DEFAULT false,
    indexed         boolean NOT NULL DEFAULT true,  -- false: a journal entry, headers and search pending
    body_text       text    NOT NULL DEFAULT '',    -- the text searched and shown in snippets
    search          tsvector,                       -- NULL until indexed
    UNIQUE (mailbox, queue_id, folder)
);
CREATE INDEX mailbox_messages_owner ON mailbox_messages (mailbox, folder, deleted, filed_at);
CREATE INDEX mailbox_messages_pending ON mailbox_messages (id) WHERE NOT indexed;
CREATE INDEX mailbox_messages_queue ON mailbox_messages (queue_id);    -- who refers to a message's bytes
CREATE INDEX mailbox_messages_filed ON mailbox_messages (filed_at);    -- retention purge in bounded batches
CREATE INDEX mailbox_messages_search ON mailbox_messages USING gin (search);

CREATE TABLE mailbox_bodies (
    queue_id text  PRIMARY KEY,
    data     bytea NOT NULL
);

-- One row per Sent item copied to its owner's Exchange mailbox after its event: the copy is
-- queued and this row written in one transaction; the primary key makes each copied once even
-- when several nodes look at the same time.
CREATE TABLE webmail_sent_copies (
    sent_id        bigint PRIMARY KEY,            -- mailbox_messages.id of the Sent item
    queue_id       text NOT NULL,
    copy_queue_id  text NOT NULL,
    copied_at      double precision NOT NULL      -- unix seconds, database clock
);

-- A send's audit row goes to webmail_audit (0005_accounts), in the send's own transaction; its
-- index on (address, at) serves the hourly send count.
