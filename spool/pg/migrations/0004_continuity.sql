-- 0004 (PostgreSQL): continuity events on a shared spool (issue 9 item 4), as SQLite's 0002 and
-- 0004: the engine's persisted state (one row, written by the continuity leader only, fenced by
-- its lease epoch), its audit trail, admin commands for the leader, probe results, and which
-- replay released a message. since/at are the engine's unix seconds (what it shows); every
-- updated_at/done_at/released_at is the database's clock.
CREATE TABLE continuity_state (
    id               integer PRIMARY KEY CHECK (id = 1),
    mode             text    NOT NULL,
    since            double precision NOT NULL,
    origin           text    NOT NULL DEFAULT '',
    reason           text    NOT NULL DEFAULT '',
    awaiting_confirm boolean NOT NULL DEFAULT false,
    event_id         text    NOT NULL DEFAULT '',
    updated_at       timestamptz NOT NULL,
    node             text    NOT NULL DEFAULT '',       -- the leader that wrote it
    epoch            bigint  NOT NULL DEFAULT 0         -- at this lease epoch
);

CREATE TABLE continuity_audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         double precision NOT NULL,
    src        text NOT NULL,
    dst        text NOT NULL,
    actor      text NOT NULL,                          -- 'engine' or the admin
    reason     text NOT NULL,
    event_id   text NOT NULL DEFAULT '',
    command_id bigint,                                 -- continuity_commands.id, NULL for the engine
    node       text NOT NULL DEFAULT '',
    epoch      bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX continuity_audit_command ON continuity_audit (command_id) WHERE command_id IS NOT NULL;

CREATE TABLE continuity_commands (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      double precision NOT NULL,                 -- unix seconds, database clock
    command text NOT NULL,
    reason  text NOT NULL DEFAULT '',
    actor   text NOT NULL DEFAULT '',
    done_at timestamptz,
    result  text NOT NULL DEFAULT ''
);
CREATE INDEX continuity_commands_pending ON continuity_commands (id) WHERE done_at IS NULL;

CREATE TABLE probe_results (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node     text    NOT NULL DEFAULT '',
    probe    text    NOT NULL,
    ok       boolean NOT NULL,
    at       double precision NOT NULL,
    latency  double precision NOT NULL,
    detail   text    NOT NULL DEFAULT '',
    critical boolean NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()   -- database clock: freshness across nodes
);
CREATE INDEX probe_results_at ON probe_results (node, probe, at);
CREATE INDEX probe_results_recorded ON probe_results (recorded_at);

ALTER TABLE messages ADD COLUMN replay_id text NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN released_at timestamptz;
CREATE INDEX messages_replay ON messages (replay_id, state) WHERE replay_id <> '';
CREATE INDEX messages_hold ON messages (hold_reason, seq) WHERE state = 'hold';
