-- Custom templates built through the API: a template is a team's name for a
-- series of builds; tags point at builds; a ready build is a layer stack on
-- one node (on top of a built-in root filesystem) and the settings its
-- sandboxes start with.
CREATE TABLE templates (
    id               TEXT PRIMARY KEY,
    team_id          TEXT NOT NULL,
    name             TEXT NOT NULL,
    public           BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    spawn_count      BIGINT NOT NULL DEFAULT 0,
    last_spawned_at  BIGINT,
    UNIQUE (team_id, name)
);

CREATE TABLE template_builds (
    id              TEXT PRIMARY KEY,
    template_id     TEXT NOT NULL,
    -- waiting (requested), building, ready, error
    status          TEXT NOT NULL,
    node            TEXT NOT NULL,
    cpu_count       BIGINT NOT NULL,
    memory_mb       BIGINT NOT NULL,
    disk_mb         BIGINT NOT NULL,
    -- JSON array: the tags the build takes once ready
    tags            TEXT NOT NULL,
    -- the built-in root filesystem at the bottom of its stack
    base_template   TEXT,
    -- the top layer (NULL: the root filesystem itself, no step changed it)
    layer           TEXT,
    -- JSON: env vars, user, workdir, start and ready commands
    config          TEXT,
    -- JSON {message, step} of a failed build
    reason          TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT
);

CREATE INDEX template_builds_template ON template_builds (template_id, created_at);

CREATE TABLE template_build_logs (
    build_id  TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    ts        BIGINT NOT NULL,
    level     TEXT NOT NULL,
    step      TEXT,
    message   TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
);

CREATE TABLE template_tags (
    template_id  TEXT NOT NULL,
    tag          TEXT NOT NULL,
    build_id     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (template_id, tag)
);

-- The step cache: the layer a step left, by the key of everything that made
-- it (team, parent, step, files), per node (layers live on one node).
CREATE TABLE build_steps (
    node           TEXT NOT NULL,
    cache_key      TEXT NOT NULL,
    layer          TEXT NOT NULL,
    base_template  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    -- the last build that found it: entries unused for the retention go
    used_at        BIGINT NOT NULL,
    PRIMARY KEY (node, cache_key)
);
