//! Snapshot records: the names clients give snapshot layers, per team.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{from_millis, millis, query_err, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// What clients pass as `templateID`: `<team>/<name>:<tag>` or `<id>:default`.
    pub id: String,
    pub team_id: String,
    /// `<team>/<name>` (without the tag) when it was named.
    pub name: Option<String>,
    pub layer: String,
    pub template: String,
    pub source_sandbox: Option<String>,
    pub node: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub created_at: DateTime<Utc>,
    /// How its source ran (user, workdir, start command, env vars) as the
    /// API records it; `None`: the defaults.
    pub settings: Option<serde_json::Value>,
}

const COLUMNS: &str =
    "id, team_id, name, layer, template, source_sandbox, node, cpu_count, memory_mb, disk_mb, created_at, settings";

fn row_to_snapshot(row: &sqlx::any::AnyRow) -> Result<SnapshotRecord, StoreError> {
    let get = |c: &str| -> Result<i64, StoreError> {
        row.try_get(c).map_err(query_err("decoding a snapshot"))
    };
    let text = |c: &str| -> Result<String, StoreError> {
        row.try_get(c).map_err(query_err("decoding a snapshot"))
    };
    Ok(SnapshotRecord {
        id: text("id")?,
        team_id: text("team_id")?,
        name: row
            .try_get("name")
            .map_err(query_err("decoding a snapshot"))?,
        layer: text("layer")?,
        template: text("template")?,
        source_sandbox: row
            .try_get("source_sandbox")
            .map_err(query_err("decoding a snapshot"))?,
        node: text("node")?,
        cpu_count: u32::try_from(get("cpu_count")?).unwrap_or(1),
        memory_mb: u64::try_from(get("memory_mb")?).unwrap_or(0),
        disk_mb: u64::try_from(get("disk_mb")?).unwrap_or(0),
        created_at: from_millis("snapshot created_at", get("created_at")?)?,
        settings: crate::from_json_text(
            "snapshot settings",
            row.try_get("settings")
                .map_err(query_err("decoding a snapshot"))?,
        )?,
    })
}

impl Store {
    /// Stores a snapshot, replacing one of the same id (a name taken again);
    /// returns the replaced one.
    pub async fn put_snapshot(
        &self,
        s: &SnapshotRecord,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let old = self.snapshot(&s.id).await?;
        if old.is_some() {
            sqlx::query("DELETE FROM snapshots WHERE id = $1")
                .bind(&s.id)
                .execute(&self.pool)
                .await
                .map_err(query_err("replacing a snapshot"))?;
        }
        sqlx::query(&format!(
            "INSERT INTO snapshots ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&s.id)
        .bind(&s.team_id)
        .bind(s.name.clone())
        .bind(&s.layer)
        .bind(&s.template)
        .bind(s.source_sandbox.clone())
        .bind(&s.node)
        .bind(i64::from(s.cpu_count))
        .bind(i64::try_from(s.memory_mb).unwrap_or(i64::MAX))
        .bind(i64::try_from(s.disk_mb).unwrap_or(i64::MAX))
        .bind(millis(s.created_at))
        .bind(s.settings.as_ref().map(|v| v.to_string()))
        .execute(&self.pool)
        .await
        .map_err(query_err("inserting a snapshot"))?;
        Ok(old)
    }

    pub async fn snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a snapshot"))?;
        row.as_ref().map(row_to_snapshot).transpose()
    }

    /// A team's snapshots, oldest first, from after `after` (an id), at most
    /// `limit`; optionally only those of a source sandbox or a name.
    pub async fn list_snapshots(
        &self,
        team_id: &str,
        source: Option<&str>,
        name: Option<&str>,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE team_id = $1 \
             AND ($2 IS NULL OR source_sandbox = $2) AND ($3 IS NULL OR name = $3 OR id = $3) \
             AND (created_at > $4 OR (created_at = $4 AND id > $5)) \
             ORDER BY created_at, id LIMIT $6"
        ))
        .bind(team_id)
        .bind(source.map(str::to_string))
        .bind(name.map(str::to_string))
        .bind(after_ms)
        .bind(after_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing snapshots"))?;
        rows.iter().map(row_to_snapshot).collect()
    }

    /// Every layer that a node's snapshots name (kept by its layer store).
    pub async fn snapshot_layers(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT layer FROM snapshots WHERE node = $1")
            .bind(node)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing snapshot layers"))?;
        rows.iter()
            .map(|r| r.try_get("layer").map_err(query_err("decoding a layer")))
            .collect()
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query_err("deleting a snapshot"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, team: &str, at: i64) -> SnapshotRecord {
        SnapshotRecord {
            id: id.into(),
            team_id: team.into(),
            name: Some(format!("{team}/x")),
            layer: format!("layer-{id}"),
            template: "base".into(),
            source_sandbox: Some("sb1".into()),
            node: "n1".into(),
            cpu_count: 2,
            memory_mb: 512,
            disk_mb: 1024,
            created_at: DateTime::from_timestamp_millis(at).unwrap(),
            settings: (id == "a:default").then(|| serde_json::json!({"start": {"user": "root"}})),
        }
    }

    #[tokio::test]
    async fn snapshots_are_put_listed_replaced_and_deleted() {
        for t in crate::testing::stores().await {
            let s = &t.store;
            assert!(s
                .put_snapshot(&snap("a:default", "t1", 1000))
                .await
                .unwrap()
                .is_none());
            s.put_snapshot(&snap("b:default", "t1", 2000))
                .await
                .unwrap();
            s.put_snapshot(&snap("c:default", "t2", 3000))
                .await
                .unwrap();
            let listed = s.list_snapshots("t1", None, None, None, 10).await.unwrap();
            assert_eq!(
                listed.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
                ["a:default", "b:default"]
            );
            assert_eq!(listed[0].settings, snap("a:default", "t1", 1000).settings);
            assert_eq!(listed[1].settings, None);
            let page = s
                .list_snapshots("t1", None, None, Some((1000, "a:default".into())), 10)
                .await
                .unwrap();
            assert_eq!(page.len(), 1);
            assert_eq!(
                s.list_snapshots("t1", Some("sb1"), None, None, 1)
                    .await
                    .unwrap()
                    .len(),
                1
            );
            let mut newer = snap("a:default", "t1", 4000);
            newer.layer = "layer-new".into();
            let old = s.put_snapshot(&newer).await.unwrap().unwrap();
            assert_eq!(old.layer, "layer-a:default");
            let mut layers = s.snapshot_layers("n1").await.unwrap();
            layers.sort();
            assert_eq!(layers, ["layer-b:default", "layer-c:default", "layer-new"]);
            assert!(s.delete_snapshot("a:default").await.unwrap());
            assert!(!s.delete_snapshot("a:default").await.unwrap());
            t.finish().await;
        }
    }
}
