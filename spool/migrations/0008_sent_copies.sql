-- 0008: copies of webmail Sent items delivered to the sender's own Exchange mailbox after the
-- continuity event they were sent in ([webmail] copy_sent_on_recovery). One row per Sent item
-- copied: the copy is queued and this row written in one transaction, so each is sent once.
CREATE TABLE webmail_sent_copies (
    sent_id        INTEGER PRIMARY KEY,          -- mailbox_messages.id of the Sent item
    queue_id       TEXT NOT NULL,                -- the sent message's queue ID
    copy_queue_id  TEXT NOT NULL,                -- the copy's queue ID
    copied_at      REAL NOT NULL                 -- unix seconds
);
