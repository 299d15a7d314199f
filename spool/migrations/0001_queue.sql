-- 0001: the queue. One row per message, one row per (message, recipient), the bytes apart.
CREATE TABLE messages (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,   -- arrival order
    queue_id        TEXT    NOT NULL UNIQUE,
    state           TEXT    NOT NULL,                    -- spool.states.QueueState
    mail_from       TEXT    NOT NULL,                    -- '' is the null sender <>
    client_addr     TEXT    NOT NULL DEFAULT '',
    client_helo     TEXT    NOT NULL DEFAULT '',
    size            INTEGER NOT NULL,                    -- bytes stored, Received: included
    smtputf8        INTEGER NOT NULL DEFAULT 0,
    body_8bit       INTEGER NOT NULL DEFAULT 0,
    is_dsn          INTEGER NOT NULL DEFAULT 0,          -- a bounce we made: never bounced itself
    arrived_at      REAL    NOT NULL,                    -- unix seconds
    next_attempt_at REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    updated_at      REAL    NOT NULL
);
CREATE INDEX messages_due ON messages (state, next_attempt_at);

CREATE TABLE recipients (
    queue_id    TEXT    NOT NULL REFERENCES messages (queue_id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,                        -- order of RCPT TO in the envelope
    address     TEXT    NOT NULL,
    state       TEXT    NOT NULL,                        -- spool.states.RcptState
    attempts    INTEGER NOT NULL DEFAULT 0,
    reply_code  INTEGER,
    reply_text  TEXT    NOT NULL DEFAULT '',
    remote_host TEXT    NOT NULL DEFAULT '',
    updated_at  REAL    NOT NULL,
    PRIMARY KEY (queue_id, idx)
);

CREATE TABLE bodies (
    queue_id TEXT PRIMARY KEY REFERENCES messages (queue_id) ON DELETE CASCADE,
    data     BLOB NOT NULL
);
