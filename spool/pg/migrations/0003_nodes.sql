-- 0003 (PostgreSQL): node identity for `mailgate cluster status` (issue 9 item 6).
-- nodes.version: the mailgate version the node last reported in its heartbeat ('' until then).
ALTER TABLE nodes ADD COLUMN version text NOT NULL DEFAULT '';

-- "queued" per node: the live messages a node accepted (every state but the terminal two).
CREATE INDEX messages_node_live ON messages (node) WHERE state NOT IN ('delivered','bounced');
-- "claims held" per node: the active messages by claim owner.
CREATE INDEX messages_claim_owner ON messages (claim_owner) WHERE state = 'active';
