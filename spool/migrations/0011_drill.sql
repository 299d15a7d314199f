-- 0011: continuity drills (`mailgate drill`). A drill holds, files and replays the mail of a few
-- drill recipients only, as a continuity event would, while everyone else's mail flows. One row
-- per drill; the running gateway owns its state (it applies the drill-start / drill-end commands
-- queued in continuity_commands). A message held by a drill has hold_reason 'drill' and is
-- released (replay_id = the drill's id) when the drill ends, or turned into a continuity hold
-- when a real event starts during the drill. Phases are audited in webmail_audit (drill_*).
CREATE TABLE drills (
    id          TEXT PRIMARY KEY,                 -- "DR-YYYYmmdd-HHMMSS-xxxx"
    recipients  TEXT NOT NULL,                    -- JSON list of mailbox keys held by the drill
    actor       TEXT NOT NULL DEFAULT '',         -- who asked for it ("cli" and the user)
    state       TEXT NOT NULL DEFAULT 'requested',-- requested | running | ended | refused
    requested_at REAL NOT NULL,                   -- unix seconds
    started_at  REAL,                             -- when the gateway began holding
    ended_at    REAL,                             -- when it stopped holding (and released)
    end_reason  TEXT NOT NULL DEFAULT '',         -- ended by the CLI, by drill_max_duration, superseded by an event, refused: why
    released    INTEGER NOT NULL DEFAULT 0        -- messages released at the end (or turned into a continuity hold)
);
CREATE UNIQUE INDEX drills_one_running ON drills (state) WHERE state = 'running';
