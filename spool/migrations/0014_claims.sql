-- 0014: claims with fencing tokens (spool.states.Claim). A message in state 'active' is held by
-- the claim whose token is claim_token; an outcome is written only under that token. The token
-- counter has one row and only grows (one node: a local counter is enough).
ALTER TABLE messages ADD COLUMN claim_token INTEGER;
ALTER TABLE messages ADD COLUMN claim_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN claim_expires REAL;                    -- unix seconds
CREATE INDEX messages_claims ON messages (claim_expires) WHERE state = 'active';
CREATE TABLE claim_seq (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO claim_seq (id, last) VALUES (1, 0);
