-- What a sandbox started from a snapshot runs as, where and with what:
-- its source's user, workdir, start command and env vars (JSON; NULL for
-- snapshots taken before this column: the defaults).
ALTER TABLE snapshots ADD COLUMN settings TEXT;
