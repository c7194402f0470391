-- Times are unix milliseconds and booleans 0/1 in BIGINT columns, so that the
-- same queries and row decoding work on SQLite and PostgreSQL alike.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE sandboxes (
    id                    TEXT PRIMARY KEY,
    template              TEXT NOT NULL,
    alias                 TEXT,
    client_id             TEXT NOT NULL,
    metadata              TEXT NOT NULL,
    envd_access_token     TEXT,
    traffic_access_token  TEXT,
    started_at            BIGINT NOT NULL,
    end_at                BIGINT NOT NULL,
    ended_at              BIGINT,
    cpu_count             BIGINT NOT NULL,
    memory_mb             BIGINT NOT NULL,
    disk_mb               BIGINT NOT NULL,
    state                 TEXT NOT NULL,
    allow_internet        BIGINT NOT NULL,
    network               TEXT,
    node                  TEXT NOT NULL,
    api_key_id            TEXT
);

CREATE INDEX sandboxes_state_started ON sandboxes (state, started_at, id);
CREATE INDEX sandboxes_node_end ON sandboxes (node, state, end_at);
