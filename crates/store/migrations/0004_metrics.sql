-- Metrics over time: one sample of a sandbox's cgroup and disk every few
-- seconds while it runs, kept for a retention period (pruned by time).
CREATE TABLE sandbox_metrics (
    sandbox_id    TEXT NOT NULL,
    team_id       TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    cpu_count     BIGINT NOT NULL,
    cpu_used_pct  DOUBLE PRECISION NOT NULL,
    mem_used      BIGINT NOT NULL,
    mem_total     BIGINT NOT NULL,
    mem_cache     BIGINT NOT NULL,
    disk_used     BIGINT NOT NULL,
    disk_total    BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, ts)
);

CREATE INDEX sandbox_metrics_ts ON sandbox_metrics (ts);
CREATE INDEX sandboxes_team_started ON sandboxes (team_id, started_at);
