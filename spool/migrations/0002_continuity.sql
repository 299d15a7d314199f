-- 0002: continuity events. Why a message is on hold, the engine's persisted state, its audit
-- trail, and admin commands handed from the CLI to the running gateway.
ALTER TABLE messages ADD COLUMN hold_reason TEXT NOT NULL DEFAULT '';   -- '' | 'operator' | 'continuity'
ALTER TABLE messages ADD COLUMN held_at REAL;                           -- when it went on hold
ALTER TABLE messages ADD COLUMN held_seconds REAL NOT NULL DEFAULT 0;   -- time spent on continuity hold (not counted against the queue lifetime)
CREATE INDEX messages_hold ON messages (hold_reason, seq) WHERE state = 'hold';

CREATE TABLE continuity_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    mode             TEXT    NOT NULL,
    since            REAL    NOT NULL,
    origin           TEXT    NOT NULL DEFAULT '',
    reason           TEXT    NOT NULL DEFAULT '',
    awaiting_confirm INTEGER NOT NULL DEFAULT 0,
    event_id         TEXT    NOT NULL DEFAULT '',
    updated_at       REAL    NOT NULL
);

CREATE TABLE continuity_audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    src      TEXT NOT NULL,
    dst      TEXT NOT NULL,
    actor    TEXT NOT NULL,          -- 'engine' or the admin
    reason   TEXT NOT NULL,
    event_id TEXT NOT NULL DEFAULT ''
);

CREATE TABLE continuity_commands (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    command TEXT NOT NULL,           -- start | stop | confirm | maintenance-start | maintenance-stop
    reason  TEXT NOT NULL DEFAULT '',
    actor   TEXT NOT NULL DEFAULT '',
    done_at REAL,
    result  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE probe_results (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    probe    TEXT    NOT NULL,
    ok       INTEGER NOT NULL,
    at       REAL    NOT NULL,
    latency  REAL    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT '',
    critical INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX probe_results_at ON probe_results (probe, at);
