-- 0007 (PostgreSQL): continuity drills on a shared spool, as SQLite's 0011. One row per drill;
-- the continuity leader applies the drill-start / drill-end commands queued in
-- continuity_commands and writes these rows fenced by its lease epoch; every node's queue
-- manager holds the running drill's recipients (hold_reason 'drill'). Times are unix seconds
-- from the database's clock; recipients is the JSON list of mailbox keys. Phases are audited in
-- webmail_audit (0005, actions drill_*). probe_results and continuity_audit (the timeline) are
-- 0004's.
CREATE TABLE drills (
    id           text PRIMARY KEY,                    -- "DR-YYYYmmdd-HHMMSS-xxxx"
    recipients   jsonb NOT NULL,
    actor        text NOT NULL DEFAULT '',
    state        text NOT NULL DEFAULT 'requested'
                 CHECK (state IN ('requested', 'running', 'ended', 'refused')),
    requested_at double precision NOT NULL,
    started_at   double precision,
    ended_at     double precision,
    end_reason   text NOT NULL DEFAULT '',
    released     integer NOT NULL DEFAULT 0,
    node         text NOT NULL DEFAULT ''             -- the leader that started it
);
CREATE UNIQUE INDEX drills_one_running ON drills (state) WHERE state = 'running';
CREATE INDEX drills_requested ON drills (requested_at);
