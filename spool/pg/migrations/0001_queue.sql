-- 0001 (PostgreSQL): the queue, claims with fencing tokens, nodes, leases.
-- Every time is a timestamptz set from the database's clock (clock_timestamp(), now()).
CREATE TABLE nodes (
    id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- gives the node's tag in queue IDs
    name      text        NOT NULL UNIQUE,
    started_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL
);

CREATE SEQUENCE claim_seq;   -- claim tokens: only ever grow, across every node

CREATE TABLE messages (
    seq             bigint GENERATED ALWAYS AS IDENTITY,       -- arrival order
    queue_id        text        PRIMARY KEY,
    state           text        NOT NULL CHECK (state IN
                        ('incoming','active','deferred','hold','delivered','bounced','corrupt')),
    mail_from       text        NOT NULL,                      -- '' is the null sender <>
    client_addr     text        NOT NULL DEFAULT '',
    client_helo     text        NOT NULL DEFAULT '',
    size            integer     NOT NULL,                      -- bytes stored, Received: included
    smtputf8        boolean     NOT NULL DEFAULT false,
    body_8bit       boolean     NOT NULL DEFAULT false,
    is_dsn          boolean     NOT NULL DEFAULT false,
    node            text        NOT NULL DEFAULT '',           -- the node that accepted it
    arrived_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL,
    hold_reason     text        NOT NULL DEFAULT '',           -- '' | 'operator' | 'continuity'
    held_at         timestamptz,
    held_seconds    double precision NOT NULL DEFAULT 0,
    claim_owner     text,                                      -- node holding the claim
    claim_token     bigint,                                    -- current claim (state 'active')
    claim_expires   timestamptz
);
CREATE INDEX messages_due ON messages (next_attempt_at, seq) WHERE state IN ('incoming','deferred');
CREATE INDEX messages_claims ON messages (claim_expires) WHERE state = 'active';
CREATE INDEX messages_state ON messages (state);

CREATE TABLE recipients (
    queue_id    text        NOT NULL REFERENCES messages (queue_id) ON DELETE CASCADE,
    idx         integer     NOT NULL,                          -- order of RCPT TO
    address     text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('pending','delivered','bounced')),
    attempts    integer     NOT NULL DEFAULT 0,
    reply_code  integer,
    reply_text  text        NOT NULL DEFAULT '',
    remote_host text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (queue_id, idx)
);

CREATE TABLE bodies (
    queue_id text  PRIMARY KEY REFERENCES messages (queue_id) ON DELETE CASCADE,
    data     bytea NOT NULL
);

-- Leader leases (CLUSTER-NOTES.md): epoch is the fencing token, strictly increasing per name.
CREATE TABLE leases (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
