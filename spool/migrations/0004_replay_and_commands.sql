-- 0004: which replay released a message, so that a replay counts only its own releases as in
-- flight (not leftovers of earlier events, not new mail); and admin commands linked to the one
-- audit record each gets (applied, refused or expired).
ALTER TABLE messages ADD COLUMN replay_id TEXT NOT NULL DEFAULT '';    -- spool.continuity.replay_id() of the replay that released it
ALTER TABLE messages ADD COLUMN released_at REAL;                      -- when that replay released it (unix seconds)
CREATE INDEX messages_replay ON messages (replay_id, state) WHERE replay_id <> '';

ALTER TABLE continuity_audit ADD COLUMN command_id INTEGER;            -- continuity_commands.id, NULL for the engine's own decisions
CREATE UNIQUE INDEX continuity_audit_command ON continuity_audit (command_id) WHERE command_id IS NOT NULL;
