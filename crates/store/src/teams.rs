//! Teams: who owns keys and sandboxes, and what a team may use at once.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{from_millis, millis, query_err, Store, StoreError};

/// The team every key and sandbox made before teams existed belongs to, and
/// the operator's.
pub const DEFAULT_TEAM: &str = "default";

/// What a team may use; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamLimits {
    /// Running sandboxes at once.
    pub max_sandboxes: Option<u64>,
    /// Memory of its running sandboxes together, MiB.
    pub max_memory_mb: Option<u64>,
    /// CPUs of its running sandboxes together.
    pub max_cpus: Option<u64>,
    /// Longest a sandbox may live, from its start, seconds.
    pub max_lifetime_secs: Option<u64>,
    /// Creates a minute (a burst of that many, refilled evenly).
    pub max_creates_per_minute: Option<u64>,
}

impl TeamLimits {
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub limits: TeamLimits,
}

/// What a team's running sandboxes use now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeamUsage {
    pub sandboxes: u64,
    pub memory_mb: u64,
    pub cpus: u64,
}

const COLUMNS: &str = "id, name, created_at, max_sandboxes, max_memory_mb, max_cpus, max_lifetime_secs, max_creates_per_minute";

fn limit(row: &sqlx::any::AnyRow, col: &str) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = row.try_get(col).map_err(query_err("decoding a team"))?;
    Ok(v.and_then(|v| u64::try_from(v).ok()))
}

fn row_to_team(row: &sqlx::any::AnyRow) -> Result<Team, StoreError> {
    let get = query_err("decoding a team");
    Ok(Team {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(query_err("decoding a team"))?,
        created_at: from_millis(
            "team created_at",
            row.try_get("created_at")
                .map_err(query_err("decoding a team"))?,
        )?,
        limits: TeamLimits {
            max_sandboxes: limit(row, "max_sandboxes")?,
            max_memory_mb: limit(row, "max_memory_mb")?,
            max_cpus: limit(row, "max_cpus")?,
            max_lifetime_secs: limit(row, "max_lifetime_secs")?,
            max_creates_per_minute: limit(row, "max_creates_per_minute")?,
        },
    })
}

fn bind_limit(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Team names: what the CLI takes and namespaces show.
pub fn valid_team_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Store {
    /// Makes a team; `Ok(None)` when the name is taken.
    pub async fn create_team(
        &self,
        name: &str,
        limits: &TeamLimits,
    ) -> Result<Option<Team>, StoreError> {
        if !valid_team_name(name) {
            return Err(StoreError::Invalid(format!(
                "team name '{name}': 1 to 64 characters of [a-z0-9_-]"
            )));
        }
        if self.team_by_name(name).await?.is_some() {
            return Ok(None);
        }
        let team = Team {
            id: hex::encode(rand::random::<[u8; 8]>()),
            name: name.to_string(),
            // Stored in milliseconds: keep what a read gives back.
            created_at: from_millis("team created_at", millis(Utc::now()))?,
            limits: limits.clone(),
        };
        sqlx::query(&format!(
            "INSERT INTO teams ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&team.id)
        .bind(&team.name)
        .bind(millis(team.created_at))
        .bind(bind_limit(limits.max_sandboxes))
        .bind(bind_limit(limits.max_memory_mb))
        .bind(bind_limit(limits.max_cpus))
        .bind(bind_limit(limits.max_lifetime_secs))
        .bind(bind_limit(limits.max_creates_per_minute))
        .execute(&self.pool)
        .await
        .map_err(query_err("inserting a team"))?;
        Ok(Some(team))
    }

    pub async fn team(&self, id: &str) -> Result<Option<Team>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM teams WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a team"))?;
        row.as_ref().map(row_to_team).transpose()
    }

    pub async fn team_by_name(&self, name: &str) -> Result<Option<Team>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM teams WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a team"))?;
        row.as_ref().map(row_to_team).transpose()
    }

    pub async fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM teams ORDER BY created_at, name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing teams"))?;
        rows.iter().map(row_to_team).collect()
    }

    /// Replaces a team's limits; `false` when there is no such team.
    pub async fn set_team_limits(&self, id: &str, limits: &TeamLimits) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE teams SET max_sandboxes = $1, max_memory_mb = $2, max_cpus = $3, \
             max_lifetime_secs = $4, max_creates_per_minute = $5 WHERE id = $6",
        )
        .bind(bind_limit(limits.max_sandboxes))
        .bind(bind_limit(limits.max_memory_mb))
        .bind(bind_limit(limits.max_cpus))
        .bind(bind_limit(limits.max_lifetime_secs))
        .bind(bind_limit(limits.max_creates_per_minute))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query_err("setting a team's limits"))?;
        Ok(done.rows_affected() > 0)
    }

    /// What a team's running sandboxes use.
    pub async fn team_usage(&self, team_id: &str) -> Result<TeamUsage, StoreError> {
        let row = sqlx::query(
            // PostgreSQL sums BIGINTs as NUMERIC, which the Any driver
            // cannot decode: cast back (a no-op on SQLite).
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) AS mem, \
             CAST(COALESCE(SUM(cpu_count), 0) AS BIGINT) AS cpus \
             FROM sandboxes WHERE team_id = $1 AND state = 'running'",
        )
        .bind(team_id)
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("summing a team's sandboxes"))?;
        let get = |c: &str| -> Result<u64, StoreError> {
            let v: i64 = row
                .try_get(c)
                .map_err(query_err("decoding a team's usage"))?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        Ok(TeamUsage {
            sandboxes: get("n")?,
            memory_mb: get("mem")?,
            cpus: get("cpus")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn teams_are_made_listed_limited_and_named_uniquely() {
        for t in crate::testing::stores().await {
            let store = &t.store;
            let default = store.team(DEFAULT_TEAM).await.unwrap().unwrap();
            assert_eq!(default.name, "default");
            assert!(default.limits.is_unlimited());
            let limits = TeamLimits {
                max_sandboxes: Some(2),
                max_lifetime_secs: Some(600),
                ..Default::default()
            };
            let a = store.create_team("alpha", &limits).await.unwrap().unwrap();
            assert!(store.create_team("alpha", &limits).await.unwrap().is_none());
            assert!(store.create_team("Bad Name", &limits).await.is_err());
            assert_eq!(store.team_by_name("alpha").await.unwrap().unwrap(), a);
            let names: Vec<_> = store
                .list_teams()
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect();
            assert_eq!(names, ["default", "alpha"]);
            let more = TeamLimits {
                max_memory_mb: Some(4096),
                ..limits
            };
            assert!(store.set_team_limits(&a.id, &more).await.unwrap());
            assert_eq!(store.team(&a.id).await.unwrap().unwrap().limits, more);
            assert!(!store.set_team_limits("nope", &more).await.unwrap());
            assert_eq!(store.team_usage(&a.id).await.unwrap(), TeamUsage::default());
            t.finish().await;
        }
    }
}
