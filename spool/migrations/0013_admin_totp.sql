-- 0013: the admin console's TOTP codes are accepted once: the last time step (RFC 6238 T) a
-- code of this admin was accepted for; a code for that step or an earlier one is refused.
ALTER TABLE admin_users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
