-- Sandboxes that last: what a sandbox does at its timeout (pause instead of
-- kill), whether a request wakes it, how it is paused, its create-time
-- timeout (what an auto-resume gives it again) and the layer it started on.
ALTER TABLE sandboxes ADD COLUMN auto_pause BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN auto_pause_memory BIGINT NOT NULL DEFAULT 1;
ALTER TABLE sandboxes ADD COLUMN auto_resume BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN pause_mode TEXT;
ALTER TABLE sandboxes ADD COLUMN timeout_ms BIGINT NOT NULL DEFAULT 300000;
ALTER TABLE sandboxes ADD COLUMN base_layer TEXT;

-- Snapshots: a layer of one node's layer store, under a name clients start
-- sandboxes from (`<name>:<tag>` within a team, or `<id>:default`).
CREATE TABLE snapshots (
    id              TEXT PRIMARY KEY,
    team_id         TEXT NOT NULL,
    name            TEXT,
    layer           TEXT NOT NULL,
    template        TEXT NOT NULL,
    source_sandbox  TEXT,
    node            TEXT NOT NULL,
    cpu_count       BIGINT NOT NULL,
    memory_mb       BIGINT NOT NULL,
    disk_mb         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE INDEX snapshots_team_created ON snapshots (team_id, created_at, id);
