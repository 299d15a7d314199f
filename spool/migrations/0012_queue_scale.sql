-- 0012: a large queue (100,000 deferred behind a dead downstream, 1,000,000 finished rows kept
-- for `queue show`) must not slow intake and delivery of new mail (bench/large_queue.py).
-- 1. Claiming due mail walks this partial index in order and stops at the LIMIT: without it
--    SQLite read every due row of both states and sorted them for each claim of 100.
CREATE INDEX messages_due_order ON messages (next_attempt_at, seq)
    WHERE state IN ('incoming', 'deferred');
-- 2. The hourly purge of finished records reads its candidates, oldest first, from this
--    partial index and deletes them in batches (spool.transitions.purge_finished).
CREATE INDEX messages_finished ON messages (updated_at)
    WHERE state IN ('delivered', 'bounced');
-- 3. Messages per state, kept by triggers in the same transaction as every change, so counts
--    (health checks, /metrics, the console) read a few rows instead of counting every message.
CREATE TABLE queue_counts (
    state TEXT PRIMARY KEY,
    n     INTEGER NOT NULL
);
INSERT INTO queue_counts (state, n) SELECT state, count(*) FROM messages GROUP BY state;
CREATE TRIGGER messages_count_insert AFTER INSERT ON messages
BEGIN
    INSERT INTO queue_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER messages_count_delete AFTER DELETE ON messages
BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER messages_count_update AFTER UPDATE OF state ON messages
    WHEN OLD.state IS NOT NEW.state
BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO queue_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
