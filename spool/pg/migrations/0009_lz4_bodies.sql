-- 0009 (PostgreSQL): message bytes are TOAST-compressed with lz4 instead of pglz, where the
-- server has it (PostgreSQL 14 or later built --with-lz4, as Debian's and the PGDG packages are).
-- A message over ~2 KiB is compressed when it is stored; pglz costs about 8 ms of server CPU per
-- MiB of text mail at the insert, lz4 about 2 ms, and lz4 decompresses faster when the queue
-- manager reads the bytes back (bench/README.md, 2026-12-04 evening). Only new values change;
-- rows stored before keep pglz, which PostgreSQL reads as before. A server without lz4 (or
-- older than 14) keeps pglz: the ALTER's error is caught here and the migration still applies.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE bodies ALTER COLUMN data SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE mailbox_bodies ALTER COLUMN data SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
    RAISE NOTICE 'mailgate: lz4 TOAST compression not available (%), message bytes keep pglz', SQLERRM;
END
$$;
