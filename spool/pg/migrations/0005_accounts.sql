-- 0005 (PostgreSQL): webmail accounts, server-side sessions, one-time login secrets, the
-- append-only webmail audit log and admin console accounts, as SQLite's 0005, 0006, 0010 and
-- 0013 (spool.pg.accounts). Times are unix seconds (double precision) of the database's clock.
CREATE TABLE webmail_users (
    address             text PRIMARY KEY,                 -- mailbox key of the user
    password_hash       text NOT NULL DEFAULT '',         -- argon2id PHC string; '' = none
    totp_secret         text NOT NULL DEFAULT '',         -- base32; '' = no second factor
    disabled            boolean NOT NULL DEFAULT false,
    alt_email           text NOT NULL DEFAULT '',
    phone               text NOT NULL DEFAULT '',
    created_at          double precision NOT NULL,
    password_changed_at double precision NOT NULL DEFAULT 0,
    totp_last_step      bigint NOT NULL DEFAULT 0         -- last TOTP step accepted
);

-- Only the SHA-256 of the cookie value is stored; address 'admin:NAME' for admin sessions.
CREATE TABLE webmail_sessions (
    id_hash     text PRIMARY KEY,
    address     text NOT NULL,
    csrf_token  text NOT NULL,
    created_at  double precision NOT NULL,
    last_seen   double precision NOT NULL,
    expires_at  double precision NOT NULL,
    revoked     boolean NOT NULL DEFAULT false,
    client      text NOT NULL DEFAULT '',
    user_agent  text NOT NULL DEFAULT '',
    mfa         boolean NOT NULL DEFAULT false
);
CREATE INDEX webmail_sessions_address ON webmail_sessions (address);

CREATE TABLE webmail_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  text NOT NULL,                            -- hex SHA-256 (codes: of address NUL code)
    address     text NOT NULL,
    kind        text NOT NULL,                            -- spool.accounts.TOKEN_KINDS
    created_at  double precision NOT NULL,
    expires_at  double precision NOT NULL,
    used_at     double precision NOT NULL DEFAULT 0,      -- 0 = live
    tries       integer NOT NULL DEFAULT 0,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX webmail_tokens_hash ON webmail_tokens (token_hash);
CREATE INDEX webmail_tokens_address ON webmail_tokens (address, kind, used_at);
CREATE INDEX webmail_tokens_expires ON webmail_tokens (expires_at);

-- Append-only: the trigger refuses UPDATE and DELETE.
CREATE TABLE webmail_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          double precision NOT NULL,
    address     text NOT NULL DEFAULT '',
    actor       text NOT NULL DEFAULT '',
    action      text NOT NULL,
    result      text NOT NULL DEFAULT 'ok',
    client      text NOT NULL DEFAULT '',
    user_agent  text NOT NULL DEFAULT '',
    detail      text NOT NULL DEFAULT '',
    node        text NOT NULL DEFAULT ''                  -- the gateway that wrote it
);
CREATE INDEX webmail_audit_address ON webmail_audit (address, at);   -- also the send-rate count (spool.sent)
CREATE FUNCTION webmail_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'webmail_audit is append-only'; END $$;
CREATE TRIGGER webmail_audit_append_only BEFORE UPDATE OR DELETE ON webmail_audit
    FOR EACH ROW EXECUTE FUNCTION webmail_audit_append_only();

CREATE TABLE admin_users (
    name                text PRIMARY KEY,                 -- case-folded
    password_hash       text NOT NULL DEFAULT '',
    totp_secret         text NOT NULL DEFAULT '',
    disabled            boolean NOT NULL DEFAULT false,
    created_at          double precision NOT NULL,
    password_changed_at double precision NOT NULL DEFAULT 0,
    totp_last_step      bigint NOT NULL DEFAULT 0
);
