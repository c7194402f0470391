//! Sandbox records: what the API answers about a sandbox and when it ends.
//!
//! Env vars given at create are deliberately not stored: they often carry
//! secrets, and nothing after create needs them (envd holds them for the
//! sandbox's life). The envd and traffic access tokens are stored in clear
//! because `connect` must hand them back to a client.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{from_millis, millis, query_err, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    Running,
    Paused,
    /// Killed or timed out; kept for the record, never listed.
    Killed,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Killed => "killed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(SandboxState::Running),
            "paused" => Some(SandboxState::Paused),
            "killed" => Some(SandboxState::Killed),
            _ => None,
        }
    }

    pub fn is_live(self) -> bool {
        self != SandboxState::Killed
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub template: String,
    pub alias: Option<String>,
    pub client_id: String,
    pub metadata: BTreeMap<String, String>,
    pub envd_access_token: Option<String>,
    pub traffic_access_token: Option<String>,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub state: SandboxState,
    pub allow_internet: bool,
    /// The create request's `network` object, as given.
    pub network: Option<serde_json::Value>,
    /// Which node runs it.
    pub node: String,
    pub api_key_id: Option<String>,
    /// The team that owns it; only its keys see it.
    pub team_id: String,
    pub lifecycle: Lifecycle,
    /// How it is paused, while it is (`full` or `filesystem`).
    pub pause_mode: Option<String>,
    /// The snapshot layer it started on.
    pub base_layer: Option<String>,
}

/// What a sandbox does at its end time and on a request while paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// Pause (instead of kill) at the end time.
    pub auto_pause: bool,
    /// Keep memory when it pauses itself (else only files).
    pub auto_pause_memory: bool,
    /// A request to its URL resumes it while paused.
    pub auto_resume: bool,
    /// Its create-time timeout, which a resume gives it again.
    pub timeout_ms: i64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            auto_pause: false,
            auto_pause_memory: true,
            auto_resume: false,
            timeout_ms: 300_000,
        }
    }
}

/// Position after the last sandbox of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub started_at_ms: i64,
    pub id: String,
}

/// What to list.
#[derive(Debug, Clone)]
pub struct ListFilter {
    pub states: Vec<SandboxState>,
    /// Every pair must be present with that value.
    pub metadata: BTreeMap<String, String>,
    /// Only sandboxes of this template (name or alias).
    pub template: Option<String>,
    /// Only sandboxes started at or after this time.
    pub started_after: Option<DateTime<Utc>>,
    /// `true`: oldest first; `false`: newest first.
    pub oldest_first: bool,
    pub limit: usize,
    pub after: Option<Cursor>,
    /// Only this team's sandboxes (`None`: every team's).
    pub team: Option<String>,
}

impl Default for ListFilter {
    fn default() -> Self {
        Self {
            team: None,
            states: vec![SandboxState::Running, SandboxState::Paused],
            metadata: BTreeMap::new(),
            template: None,
            started_after: None,
            oldest_first: false,
            limit: 100,
            after: None,
        }
    }
}

const COLUMNS: &str = "id, template, alias, client_id, metadata, envd_access_token, traffic_access_token, \
     started_at, end_at, cpu_count, memory_mb, disk_mb, state, allow_internet, network, node, api_key_id, team_id, \
     auto_pause, auto_pause_memory, auto_resume, pause_mode, timeout_ms, base_layer";

fn row_to_record(row: &sqlx::any::AnyRow) -> Result<SandboxRecord, StoreError> {
    let get = |e| StoreError::Query {
        context: "decoding a sandbox",
        source: e,
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        context: "sandbox row",
        detail,
    };
    let metadata: String = row.try_get("metadata").map_err(get)?;
    let network: Option<String> = row.try_get("network").map_err(get)?;
    let state: String = row.try_get("state").map_err(get)?;
    let cpu: i64 = row.try_get("cpu_count").map_err(get)?;
    let mem: i64 = row.try_get("memory_mb").map_err(get)?;
    let disk: i64 = row.try_get("disk_mb").map_err(get)?;
    let allow: i64 = row.try_get("allow_internet").map_err(get)?;
    Ok(SandboxRecord {
        id: row.try_get("id").map_err(get)?,
        template: row.try_get("template").map_err(get)?,
        alias: row.try_get("alias").map_err(get)?,
        client_id: row.try_get("client_id").map_err(get)?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt(format!("metadata: {e}")))?,
        envd_access_token: row.try_get("envd_access_token").map_err(get)?,
        traffic_access_token: row.try_get("traffic_access_token").map_err(get)?,
        started_at: from_millis(
            "sandbox started_at",
            row.try_get("started_at").map_err(get)?,
        )?,
        end_at: from_millis("sandbox end_at", row.try_get("end_at").map_err(get)?)?,
        cpu_count: u32::try_from(cpu).map_err(|_| corrupt(format!("cpu_count {cpu}")))?,
        memory_mb: u64::try_from(mem).map_err(|_| corrupt(format!("memory_mb {mem}")))?,
        disk_mb: u64::try_from(disk).map_err(|_| corrupt(format!("disk_mb {disk}")))?,
        state: SandboxState::parse(&state).ok_or_else(|| corrupt(format!("state '{state}'")))?,
        allow_internet: allow != 0,
        network: crate::from_json_text("sandbox network", network)?,
        node: row.try_get("node").map_err(get)?,
        api_key_id: row.try_get("api_key_id").map_err(get)?,
        team_id: row.try_get("team_id").map_err(get)?,
        lifecycle: Lifecycle {
            auto_pause: row.try_get::<i64, _>("auto_pause").map_err(get)? != 0,
            auto_pause_memory: row.try_get::<i64, _>("auto_pause_memory").map_err(get)? != 0,
            auto_resume: row.try_get::<i64, _>("auto_resume").map_err(get)? != 0,
            timeout_ms: row.try_get("timeout_ms").map_err(get)?,
        },
        pause_mode: row.try_get("pause_mode").map_err(get)?,
        base_layer: row.try_get("base_layer").map_err(get)?,
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    pub async fn insert_sandbox(&self, r: &SandboxRecord) -> Result<(), StoreError> {
        let metadata = serde_json::to_string(&r.metadata).expect("string map serializes");
        let network = r.network.as_ref().map(|n| n.to_string());
        sqlx::query(&format!(
            "INSERT INTO sandboxes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
        ))
        .bind(&r.id)
        .bind(&r.template)
        .bind(r.alias.clone())
        .bind(&r.client_id)
        .bind(metadata)
        .bind(r.envd_access_token.clone())
        .bind(r.traffic_access_token.clone())
        .bind(millis(r.started_at))
        .bind(millis(r.end_at))
        .bind(i64::from(r.cpu_count))
        .bind(to_i64(r.memory_mb))
        .bind(to_i64(r.disk_mb))
        .bind(r.state.as_str())
        .bind(i64::from(r.allow_internet))
        .bind(network)
        .bind(&r.node)
        .bind(r.api_key_id.clone())
        .bind(&r.team_id)
        .bind(i64::from(r.lifecycle.auto_pause))
        .bind(i64::from(r.lifecycle.auto_pause_memory))
        .bind(i64::from(r.lifecycle.auto_resume))
        .bind(r.pause_mode.clone())
        .bind(r.lifecycle.timeout_ms)
        .bind(r.base_layer.clone())
        .execute(&self.pool)
        .await
        .map_err(query_err("inserting a sandbox"))?;
        Ok(())
    }

    /// A sandbox in any state (killed ones included).
    pub async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a sandbox"))?;
        row.as_ref().map(row_to_record).transpose()
    }

    /// A sandbox that is running or paused.
    pub async fn get_live_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        Ok(self.get_sandbox(id).await?.filter(|r| r.state.is_live()))
    }

    /// Sets a live sandbox's end time; `false` when it is not live.
    pub async fn set_end_at(&self, id: &str, end_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE sandboxes SET end_at = $1 WHERE id = $2 AND state <> 'killed'")
                .bind(millis(end_at))
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(query_err("setting a sandbox's end time"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves a live sandbox's end time later only (never earlier).
    pub async fn extend_end_at(&self, id: &str, end_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandboxes SET end_at = CASE WHEN end_at < $1 THEN $1 ELSE end_at END WHERE id = $2 AND state <> 'killed'",
        )
        .bind(millis(end_at))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query_err("extending a sandbox's end time"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a changed egress setting of a live sandbox.
    pub async fn set_network(
        &self,
        id: &str,
        allow_internet: bool,
        network: Option<&serde_json::Value>,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE sandboxes SET allow_internet = $1, network = $2 WHERE id = $3 AND state <> 'killed'")
                .bind(i64::from(allow_internet))
                .bind(network.map(|n| n.to_string()))
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(query_err("updating a sandbox's network"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a live sandbox as paused (`mode`: full or filesystem).
    pub async fn set_paused(&self, id: &str, mode: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandboxes SET state = 'paused', pause_mode = $1 WHERE id = $2 AND state <> 'killed'",
        )
        .bind(mode)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query_err("marking a sandbox paused"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a live sandbox as running again, until `end_at`.
    pub async fn set_running(&self, id: &str, end_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandboxes SET state = 'running', pause_mode = NULL, end_at = $1 WHERE id = $2 AND state <> 'killed'",
        )
        .bind(millis(end_at))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query_err("marking a sandbox running"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a live sandbox killed; `false` when it was not live.
    pub async fn mark_killed(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE sandboxes SET state = 'killed', ended_at = $1 WHERE id = $2 AND state <> 'killed'")
            .bind(millis(Utc::now()))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query_err("marking a sandbox killed"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Ids of a node's live sandboxes (to reconcile with its runtime).
    pub async fn live_sandbox_ids(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM sandboxes WHERE node = $1 AND state <> 'killed'")
            .bind(node)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing a node's sandboxes"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(query_err("decoding a sandbox id")))
            .collect()
    }

    /// `(id, team)` of a node's running sandboxes (what the metrics sampler
    /// reads).
    pub async fn running_sandboxes(&self, node: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT id, team_id FROM sandboxes WHERE node = $1 AND state = 'running'")
                .bind(node)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("listing a node's running sandboxes"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")
                        .map_err(query_err("decoding a sandbox id"))?,
                    r.try_get("team_id")
                        .map_err(query_err("decoding a team id"))?,
                ))
            })
            .collect()
    }

    /// How many of a node's live sandboxes are in each `(state, template)`.
    pub async fn count_by_state(
        &self,
        node: &str,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, template, COUNT(*) AS n FROM sandboxes WHERE node = $1 AND state <> 'killed' \
             GROUP BY state, template ORDER BY state, template",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("counting a node's sandboxes"))?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n").map_err(query_err("decoding a count"))?;
                Ok((
                    r.try_get("state").map_err(query_err("decoding a state"))?,
                    r.try_get("template")
                        .map_err(query_err("decoding a template"))?,
                    u64::try_from(n).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// The earliest end time among a node's live sandboxes.
    pub async fn next_end_at(&self, node: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(end_at) AS m FROM sandboxes WHERE node = $1 AND state = 'running'",
        )
        .bind(node)
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("finding the next sandbox end time"))?;
        let ms: Option<i64> = row
            .try_get("m")
            .map_err(query_err("decoding an end time"))?;
        ms.map(|ms| from_millis("next end_at", ms)).transpose()
    }

    /// A node's live sandboxes whose end time is at or before `now`.
    pub async fn expired_sandbox_ids(
        &self,
        node: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM sandboxes WHERE node = $1 AND state = 'running' AND end_at <= $2",
        )
        .bind(node)
        .bind(millis(now))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("finding expired sandboxes"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(query_err("decoding a sandbox id")))
            .collect()
    }

    /// One page of sandboxes in start order, and the cursor of the next page
    /// (`None` on the last page).
    ///
    /// Metadata is matched here rather than in SQL because SQLite and
    /// PostgreSQL query JSON differently; pages are read in batches until
    /// enough rows match, so only the matching page is returned.
    pub async fn list_sandboxes(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<SandboxRecord>, Option<Cursor>), StoreError> {
        if filter.states.is_empty() || filter.limit == 0 {
            return Ok((Vec::new(), None));
        }
        // The state names are our own constants, so inlining them is safe.
        let states = filter
            .states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let batch = (filter.limit + 1).max(64);
        let mut after = filter.after.clone();
        let (cmp, dir) = if filter.oldest_first {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        // $1 template (NULL: any), $2 started-after bound, then the cursor.
        let base = format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE state IN ({states}) \
             AND ($1 IS NULL OR template = $1 OR alias = $1) AND started_at >= $2 \
             AND ($3 IS NULL OR team_id = $3)"
        );
        let order = format!("ORDER BY started_at {dir}, id {dir}");
        let first_sql = format!("{base} {order} LIMIT $4");
        let next_sql = format!(
            "{base} AND (started_at {cmp} $4 OR (started_at = $4 AND id {cmp} $5)) {order} LIMIT $6"
        );
        let started_after = filter.started_after.map(millis).unwrap_or(i64::MIN);
        let mut out = Vec::new();
        loop {
            let rows = match &after {
                None => sqlx::query(&first_sql)
                    .bind(filter.template.clone())
                    .bind(started_after)
                    .bind(filter.team.clone())
                    .bind(batch as i64),
                Some(c) => sqlx::query(&next_sql)
                    .bind(filter.template.clone())
                    .bind(started_after)
                    .bind(filter.team.clone())
                    .bind(c.started_at_ms)
                    .bind(c.id.clone())
                    .bind(batch as i64),
            }
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing sandboxes"))?;

            let exhausted = rows.len() < batch;
            for row in &rows {
                let rec = row_to_record(row)?;
                after = Some(Cursor {
                    started_at_ms: millis(rec.started_at),
                    id: rec.id.clone(),
                });
                if filter
                    .metadata
                    .iter()
                    .all(|(k, v)| rec.metadata.get(k) == Some(v))
                {
                    if out.len() == filter.limit {
                        // One more match exists: the page is full and not the last.
                        let last: &SandboxRecord = out.last().expect("limit > 0");
                        let next = Cursor {
                            started_at_ms: millis(last.started_at),
                            id: last.id.clone(),
                        };
                        return Ok((out, Some(next)));
                    }
                    out.push(rec);
                }
            }
            if exhausted {
                return Ok((out, None));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn record(id: &str, started: DateTime<Utc>, meta: &[(&str, &str)]) -> SandboxRecord {
        SandboxRecord {
            id: id.to_string(),
            template: "base".into(),
            alias: Some("base".into()),
            client_id: "c".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            envd_access_token: Some("tok".into()),
            traffic_access_token: None,
            started_at: started,
            end_at: started + Duration::seconds(300),
            cpu_count: 2,
            memory_mb: 512,
            disk_mb: 1024,
            state: SandboxState::Running,
            allow_internet: true,
            network: Some(serde_json::json!({"allowOut": ["1.1.1.1"]})),
            node: "n1".into(),
            api_key_id: None,
            team_id: crate::DEFAULT_TEAM.into(),
            lifecycle: Lifecycle::default(),
            pause_mode: None,
            base_layer: None,
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000).unwrap()
    }

    #[tokio::test]
    async fn round_trip_and_lifecycle() {
        for t in crate::testing::stores().await {
            round_trip_and_lifecycle_on(&t.store).await;
            t.finish().await;
        }
    }

    async fn round_trip_and_lifecycle_on(store: &Store) {
        let rec = record("abc", t0(), &[("k", "v")]);
        store.insert_sandbox(&rec).await.unwrap();
        assert_eq!(store.get_sandbox("abc").await.unwrap().unwrap(), rec);
        // Sums decode on both engines (PostgreSQL sums BIGINT as NUMERIC).
        let used = store.team_usage(crate::DEFAULT_TEAM).await.unwrap();
        assert_eq!((used.sandboxes, used.memory_mb, used.cpus), (1, 512, 2));
        assert_eq!(
            store.running_sandboxes("n1").await.unwrap(),
            vec![("abc".to_string(), crate::DEFAULT_TEAM.to_string())]
        );
        assert!(store.running_sandboxes("n2").await.unwrap().is_empty());
        assert_eq!(
            store.count_by_state("n1").await.unwrap(),
            vec![("running".to_string(), "base".to_string(), 1)]
        );
        let around = |a: i64, b: i64| (t0() + Duration::seconds(a), t0() + Duration::seconds(b));
        let (from, to) = around(-10, 10);
        assert_eq!(
            store
                .team_lifespans(crate::DEFAULT_TEAM, from, to)
                .await
                .unwrap(),
            vec![crate::Lifespan {
                started_at: t0(),
                ended_at: None
            }]
        );
        let (from, to) = around(-20, -10);
        assert!(store
            .team_lifespans(crate::DEFAULT_TEAM, from, to)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .team_lifespans("other", t0(), t0())
            .await
            .unwrap()
            .is_empty());
        assert!(store.get_sandbox("nope").await.unwrap().is_none());

        let later = t0() + Duration::seconds(1000);
        assert!(store.set_end_at("abc", later).await.unwrap());
        assert!(store.extend_end_at("abc", t0()).await.unwrap());
        assert_eq!(
            store.get_sandbox("abc").await.unwrap().unwrap().end_at,
            later,
            "extend never shortens"
        );
        assert_eq!(store.next_end_at("n1").await.unwrap(), Some(later));
        assert_eq!(store.next_end_at("n2").await.unwrap(), None);
        assert!(store
            .expired_sandbox_ids("n1", t0())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.expired_sandbox_ids("n1", later).await.unwrap(),
            vec!["abc".to_string()]
        );

        assert!(store.set_network("abc", false, None).await.unwrap());
        let got = store.get_sandbox("abc").await.unwrap().unwrap();
        assert!(!got.allow_internet);
        assert_eq!(got.network, None);

        assert!(store.mark_killed("abc").await.unwrap());
        assert!(!store.mark_killed("abc").await.unwrap());
        assert!(store.get_live_sandbox("abc").await.unwrap().is_none());
        assert!(!store.set_end_at("abc", later).await.unwrap());
        assert!(store.live_sandbox_ids("n1").await.unwrap().is_empty());
        assert_eq!(
            store.get_sandbox("abc").await.unwrap().unwrap().state,
            SandboxState::Killed
        );
    }

    #[tokio::test]
    async fn paging_and_metadata_filter() {
        for t in crate::testing::stores().await {
            paging_and_metadata_filter_on(&t.store).await;
            t.finish().await;
        }
    }

    async fn paging_and_metadata_filter_on(store: &Store) {
        for i in 0..150 {
            let meta: &[(&str, &str)] = if i % 3 == 0 {
                &[("group", "a"), ("n", "x")]
            } else {
                &[("group", "b")]
            };
            // Two sandboxes share each start time, so the id breaks ties.
            store
                .insert_sandbox(&record(
                    &format!("s{i:03}"),
                    t0() + Duration::seconds(i / 2),
                    meta,
                ))
                .await
                .unwrap();
        }
        store.mark_killed("s149").await.unwrap();

        let mut seen = Vec::new();
        let mut filter = ListFilter {
            limit: 40,
            ..Default::default()
        };
        loop {
            let (page, next) = store.list_sandboxes(&filter).await.unwrap();
            assert!(page.len() <= 40);
            seen.extend(page.into_iter().map(|r| r.id));
            match next {
                Some(c) => filter.after = Some(c),
                None => break,
            }
        }
        let mut want: Vec<String> = (0..149).rev().map(|i| format!("s{i:03}")).collect();
        assert_eq!(seen, want, "every live sandbox once, newest first");

        let filter = ListFilter {
            metadata: [("group".to_string(), "a".to_string())].into(),
            limit: 30,
            ..Default::default()
        };
        let (page, next) = store.list_sandboxes(&filter).await.unwrap();
        want.retain(|id| id[1..].parse::<u32>().unwrap() % 3 == 0);
        assert_eq!(want.len(), 50);
        assert_eq!(page.len(), 30);
        assert!(next.is_some());
        let (page2, next2) = store
            .list_sandboxes(&ListFilter {
                after: next,
                ..filter.clone()
            })
            .await
            .unwrap();
        assert!(next2.is_none());
        let got: Vec<String> = page
            .iter()
            .chain(page2.iter())
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(got, want);

        let (exact, next) = store
            .list_sandboxes(&ListFilter {
                limit: want.len(),
                ..filter.clone()
            })
            .await
            .unwrap();
        assert_eq!(exact.len(), want.len());
        assert!(
            next.is_none(),
            "a page that ends exactly at the last match has no next token"
        );

        let none = ListFilter {
            metadata: [("group".to_string(), "zzz".to_string())].into(),
            ..Default::default()
        };
        assert!(store.list_sandboxes(&none).await.unwrap().0.is_empty());

        // Oldest first, paged, from a start time, by template.
        let mut filter = ListFilter {
            oldest_first: true,
            limit: 25,
            started_after: Some(t0() + Duration::seconds(10)),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let (page, next) = store.list_sandboxes(&filter).await.unwrap();
            seen.extend(page.into_iter().map(|r| r.id));
            match next {
                Some(c) => filter.after = Some(c),
                None => break,
            }
        }
        let want: Vec<String> = (20..149).map(|i| format!("s{i:03}")).collect();
        assert_eq!(seen, want);
        let by_template = |t: &str| ListFilter {
            template: Some(t.to_string()),
            ..Default::default()
        };
        assert_eq!(
            store
                .list_sandboxes(&by_template("base"))
                .await
                .unwrap()
                .0
                .len(),
            100
        );
        assert!(store
            .list_sandboxes(&by_template("other"))
            .await
            .unwrap()
            .0
            .is_empty());

        let killed_only = ListFilter {
            states: vec![SandboxState::Killed],
            ..Default::default()
        };
        let (killed, _) = store.list_sandboxes(&killed_only).await.unwrap();
        assert_eq!(killed.len(), 1);
    }
}
