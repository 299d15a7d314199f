-- 0006: one-time login secrets of the webmail (issue 7, login): codes sent to an alternate
-- address or phone, admin-issued login and enrolment links, and the short "password given,
-- second factor pending" step. Only a SHA-256 of each secret is stored; a row is used at most
-- once (used_at), never after expires_at, and a code is spent after login_code_tries wrong tries.
CREATE TABLE webmail_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash  TEXT NOT NULL,                    -- hex SHA-256 (codes: of address NUL code)
    address     TEXT NOT NULL,                    -- mailbox key of the account
    kind        TEXT NOT NULL,                    -- code | link | enrol | mfa
    created_at  REAL NOT NULL,                    -- unix seconds
    expires_at  REAL NOT NULL,
    used_at     REAL NOT NULL DEFAULT 0,          -- 0 = live; else when used (or spent/replaced)
    tries       INTEGER NOT NULL DEFAULT 0,       -- wrong tries so far (codes, mfa)
    detail      TEXT NOT NULL DEFAULT ''          -- mfa: how the first factor was given
);
CREATE INDEX webmail_tokens_hash ON webmail_tokens (token_hash);
CREATE INDEX webmail_tokens_address ON webmail_tokens (address, kind, used_at);

-- The last TOTP time step accepted for the account: a TOTP code is accepted once only.
ALTER TABLE webmail_users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
