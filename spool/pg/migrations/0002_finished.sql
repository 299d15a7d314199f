-- 0002 (PostgreSQL): finished messages by age, for the retention purge
-- (spool.pg.queue.purge_finished; SQLite's migration 0012 has the same index).
CREATE INDEX messages_finished ON messages (updated_at) WHERE state IN ('delivered','bounced');
