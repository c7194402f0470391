-- Teams own keys and sandboxes; a key sees only its team's. Existing keys
-- and sandboxes belong to the `default` team. Limits are NULL when unset.
CREATE TABLE teams (
    id                      TEXT PRIMARY KEY,
    name                    TEXT NOT NULL UNIQUE,
    created_at              BIGINT NOT NULL,
    max_sandboxes           BIGINT,
    max_memory_mb           BIGINT,
    max_cpus                BIGINT,
    max_lifetime_secs       BIGINT,
    max_creates_per_minute  BIGINT
);

INSERT INTO teams (id, name, created_at) VALUES ('default', 'default', 0);

ALTER TABLE api_keys ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE sandboxes ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';

CREATE INDEX sandboxes_team_state ON sandboxes (team_id, state);
