-- 0009: the journal (continuity.journal = "all"). Every message delivered to a local mailbox is
-- filed at delivery with its owners only (indexed = 0: pending); a background task fills in the
-- headers and the full-text row later (indexed = 1). Journal entries share the queue's copy of
-- the bytes (bodies) instead of copying them into mailbox_bodies: the body of a delivered
-- message stays while a mailbox entry refers to it (spool.transitions, spool.mailbox.purge).
ALTER TABLE mailbox_messages ADD COLUMN indexed INTEGER NOT NULL DEFAULT 1;   -- 0: headers and FTS row pending
CREATE INDEX mailbox_messages_pending ON mailbox_messages (id) WHERE indexed = 0;
CREATE INDEX mailbox_messages_queue ON mailbox_messages (queue_id);          -- who refers to a message's bytes
CREATE INDEX mailbox_messages_filed ON mailbox_messages (filed_at);          -- retention purge in bounded batches
