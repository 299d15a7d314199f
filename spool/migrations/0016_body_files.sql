-- Large bodies in files beside the spool (spool.bodyfiles): the row keeps an empty blob and
-- file = 1, the bytes are in bodies/<queue_id>. Deleting such a row (directly or through
-- ON DELETE CASCADE from messages) records its queue ID in body_unlinks in the same
-- transaction, the writer unlinks the file after the commit that takes it out of body_unlinks.
ALTER TABLE bodies ADD COLUMN file INTEGER NOT NULL DEFAULT 0;

CREATE TABLE body_unlinks (
    queue_id TEXT PRIMARY KEY
);

CREATE TRIGGER bodies_file_deleted AFTER DELETE ON bodies WHEN OLD.file = 1
BEGIN
    INSERT OR IGNORE INTO body_unlinks (queue_id) VALUES (OLD.queue_id);
END;
