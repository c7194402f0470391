//! Custom templates: a team's named templates, their builds (status, logs,
//! the layer a ready one left), tags pointing at builds, and the step cache
//! that makes an unchanged rebuild free.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{from_millis, millis, query_err, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    /// What clients get as `templateID`.
    pub id: String,
    pub team_id: String,
    /// The team's name for it (E2B's alias).
    pub name: String,
    pub public: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub spawn_count: u64,
    pub last_spawned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    /// Requested; its steps have not been sent yet.
    Waiting,
    Building,
    Ready,
    Error,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "waiting" => Self::Waiting,
            "building" => Self::Building,
            "ready" => Self::Ready,
            "error" => Self::Error,
            other => {
                return Err(StoreError::Corrupt {
                    context: "build status",
                    detail: other.to_string(),
                })
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BuildRecord {
    pub id: String,
    pub template_id: String,
    pub status: BuildStatus,
    pub node: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// The tags it takes once ready.
    pub tags: Vec<String>,
    pub base_template: Option<String>,
    pub layer: Option<String>,
    /// What sandboxes of it start with (env vars, user, workdir, start and
    /// ready commands); opaque here.
    pub config: Option<serde_json::Value>,
    /// Why it failed (`{message, step}`); opaque here.
    pub reason: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLog {
    pub at: DateTime<Utc>,
    pub level: String,
    pub step: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub tag: String,
    pub build_id: String,
    pub created_at: DateTime<Utc>,
}

/// What a new build asks for.
#[derive(Debug, Clone)]
pub struct NewBuild<'a> {
    pub team_id: &'a str,
    pub name: &'a str,
    pub tags: &'a [String],
    pub node: &'a str,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

const TEMPLATE_COLUMNS: &str =
    "id, team_id, name, public, created_at, updated_at, spawn_count, last_spawned_at";
const BUILD_COLUMNS: &str = "id, template_id, status, node, cpu_count, memory_mb, disk_mb, tags, \
     base_template, layer, config, reason, created_at, updated_at, finished_at";

fn opt_millis(context: &'static str, ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(|ms| from_millis(context, ms)).transpose()
}

fn json_of(
    context: &'static str,
    text: Option<String>,
) -> Result<Option<serde_json::Value>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            context,
            detail: e.to_string(),
        })
    })
    .transpose()
}

fn row_to_template(row: &sqlx::any::AnyRow) -> Result<TemplateRecord, StoreError> {
    let e = || query_err("decoding a template");
    Ok(TemplateRecord {
        id: row.try_get("id").map_err(e())?,
        team_id: row.try_get("team_id").map_err(e())?,
        name: row.try_get("name").map_err(e())?,
        public: row.try_get::<i64, _>("public").map_err(e())? != 0,
        created_at: from_millis(
            "template created_at",
            row.try_get("created_at").map_err(e())?,
        )?,
        updated_at: from_millis(
            "template updated_at",
            row.try_get("updated_at").map_err(e())?,
        )?,
        spawn_count: u64::try_from(row.try_get::<i64, _>("spawn_count").map_err(e())?).unwrap_or(0),
        last_spawned_at: opt_millis(
            "template last_spawned_at",
            row.try_get("last_spawned_at").map_err(e())?,
        )?,
    })
}

fn row_to_build(row: &sqlx::any::AnyRow) -> Result<BuildRecord, StoreError> {
    let e = || query_err("decoding a build");
    let tags: String = row.try_get("tags").map_err(e())?;
    Ok(BuildRecord {
        id: row.try_get("id").map_err(e())?,
        template_id: row.try_get("template_id").map_err(e())?,
        status: BuildStatus::parse(&row.try_get::<String, _>("status").map_err(e())?)?,
        node: row.try_get("node").map_err(e())?,
        cpu_count: u32::try_from(row.try_get::<i64, _>("cpu_count").map_err(e())?).unwrap_or(1),
        memory_mb: u64::try_from(row.try_get::<i64, _>("memory_mb").map_err(e())?).unwrap_or(0),
        disk_mb: u64::try_from(row.try_get::<i64, _>("disk_mb").map_err(e())?).unwrap_or(0),
        tags: serde_json::from_str(&tags).map_err(|err| StoreError::Corrupt {
            context: "build tags",
            detail: err.to_string(),
        })?,
        base_template: row.try_get("base_template").map_err(e())?,
        layer: row.try_get("layer").map_err(e())?,
        config: json_of("build config", row.try_get("config").map_err(e())?)?,
        reason: json_of("build reason", row.try_get("reason").map_err(e())?)?,
        created_at: from_millis("build created_at", row.try_get("created_at").map_err(e())?)?,
        updated_at: from_millis("build updated_at", row.try_get("updated_at").map_err(e())?)?,
        finished_at: opt_millis(
            "build finished_at",
            row.try_get("finished_at").map_err(e())?,
        )?,
    })
}

fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Store {
    /// Starts a build of the team's template `name` (made if it is new):
    /// the template and the new build, `waiting` for its steps.
    pub async fn request_build(
        &self,
        b: &NewBuild<'_>,
    ) -> Result<(TemplateRecord, BuildRecord), StoreError> {
        let now = Utc::now();
        let template = match self.template_by_name(b.team_id, b.name).await? {
            Some(t) => t,
            None => {
                let t = TemplateRecord {
                    id: random_id(),
                    team_id: b.team_id.to_string(),
                    name: b.name.to_string(),
                    public: false,
                    created_at: now,
                    updated_at: now,
                    spawn_count: 0,
                    last_spawned_at: None,
                };
                let inserted = sqlx::query(&format!(
                    "INSERT INTO templates ({TEMPLATE_COLUMNS}) VALUES ($1, $2, $3, 0, $4, $4, 0, NULL)"
                ))
                .bind(&t.id)
                .bind(&t.team_id)
                .bind(&t.name)
                .bind(millis(now))
                .execute(&self.pool)
                .await;
                match inserted {
                    Ok(_) => t,
                    // Two first builds of one name at once: the other won.
                    Err(_) => self
                        .template_by_name(b.team_id, b.name)
                        .await?
                        .ok_or_else(|| {
                            StoreError::Invalid(format!("template '{}' could not be made", b.name))
                        })?,
                }
            }
        };
        let build = BuildRecord {
            id: uuid::Uuid::new_v4().to_string(),
            template_id: template.id.clone(),
            status: BuildStatus::Waiting,
            node: b.node.to_string(),
            cpu_count: b.cpu_count,
            memory_mb: b.memory_mb,
            disk_mb: b.disk_mb,
            tags: b.tags.to_vec(),
            base_template: None,
            layer: None,
            config: None,
            reason: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        sqlx::query(&format!(
            "INSERT INTO template_builds ({BUILD_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, NULL, $9, $9, NULL)"
        ))
        .bind(&build.id)
        .bind(&build.template_id)
        .bind(build.status.as_str())
        .bind(&build.node)
        .bind(i64::from(build.cpu_count))
        .bind(i64::try_from(build.memory_mb).unwrap_or(i64::MAX))
        .bind(i64::try_from(build.disk_mb).unwrap_or(i64::MAX))
        .bind(serde_json::to_string(&build.tags).expect("tags serialize"))
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(query_err("inserting a build"))?;
        Ok((template, build))
    }

    pub async fn template(&self, id: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a template"))?;
        row.as_ref().map(row_to_template).transpose()
    }

    pub async fn template_by_name(
        &self,
        team_id: &str,
        name: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE team_id = $1 AND name = $2"
        ))
        .bind(team_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a template"))?;
        row.as_ref().map(row_to_template).transpose()
    }

    /// A team's templates, by name.
    pub async fn list_templates(&self, team_id: &str) -> Result<Vec<TemplateRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE team_id = $1 ORDER BY name"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing templates"))?;
        rows.iter().map(row_to_template).collect()
    }

    /// Removes a template with its builds, tags and logs; the layers its
    /// builds left go with the next collection (the step cache keeps those
    /// it holds).
    pub async fn delete_template(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting a template delete"))?;
        for sql in [
            "DELETE FROM template_build_logs WHERE build_id IN (SELECT id FROM template_builds WHERE template_id = $1)",
            "DELETE FROM template_builds WHERE template_id = $1",
            "DELETE FROM template_tags WHERE template_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("deleting a template"))?;
        }
        let done = sqlx::query("DELETE FROM templates WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query_err("deleting a template"))?;
        tx.commit()
            .await
            .map_err(query_err("committing a template delete"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Counts a sandbox started from the template.
    pub async fn template_spawned(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE templates SET spawn_count = spawn_count + 1, last_spawned_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(query_err("counting a spawn"))?;
        Ok(())
    }

    pub async fn build(&self, id: &str) -> Result<Option<BuildRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM template_builds WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a build"))?;
        row.as_ref().map(row_to_build).transpose()
    }

    /// A template's builds, the newest first.
    pub async fn builds_of(&self, template_id: &str) -> Result<Vec<BuildRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM template_builds WHERE template_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(template_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing builds"))?;
        rows.iter().map(row_to_build).collect()
    }

    /// Moves a `waiting` build to `building`; false when it was not waiting
    /// (its steps were sent already).
    pub async fn start_build(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE template_builds SET status = 'building', updated_at = $2 WHERE id = $1 AND status = 'waiting'",
        )
        .bind(id)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(query_err("starting a build"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a build ready with what it made, and points its tags at it (in
    /// one transaction: a tag never names a build that is not ready).
    pub async fn finish_build(
        &self,
        id: &str,
        base_template: &str,
        layer: Option<&str>,
        config: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let build = self
            .build(id)
            .await?
            .ok_or_else(|| StoreError::Invalid(format!("build '{id}' not found")))?;
        let now = millis(Utc::now());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting a build's finish"))?;
        sqlx::query(
            "UPDATE template_builds SET status = 'ready', base_template = $2, layer = $3, config = $4, \
             updated_at = $5, finished_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(base_template)
        .bind(layer.map(str::to_string))
        .bind(config.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query_err("finishing a build"))?;
        for tag in &build.tags {
            sqlx::query("DELETE FROM template_tags WHERE template_id = $1 AND tag = $2")
                .bind(&build.template_id)
                .bind(tag)
                .execute(&mut *tx)
                .await
                .map_err(query_err("moving a tag"))?;
            sqlx::query(
                "INSERT INTO template_tags (template_id, tag, build_id, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&build.template_id)
            .bind(tag)
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_err("moving a tag"))?;
        }
        sqlx::query("UPDATE templates SET updated_at = $2 WHERE id = $1")
            .bind(&build.template_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_err("finishing a build"))?;
        tx.commit()
            .await
            .map_err(query_err("committing a build's finish"))
    }

    pub async fn fail_build(&self, id: &str, reason: &serde_json::Value) -> Result<(), StoreError> {
        let now = millis(Utc::now());
        sqlx::query(
            "UPDATE template_builds SET status = 'error', reason = $2, updated_at = $3, finished_at = $3 \
             WHERE id = $1 AND status IN ('waiting', 'building')",
        )
        .bind(id)
        .bind(reason.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("failing a build"))?;
        Ok(())
    }

    /// Builds a node was running when it stopped: they cannot go on.
    pub async fn unfinished_builds(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM template_builds WHERE node = $1 AND status IN ('waiting', 'building')",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing unfinished builds"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(query_err("decoding a build id")))
            .collect()
    }

    /// Stores log lines of a build, numbered from `first` (the writer keeps
    /// the count: reading it here would make the transaction a read that
    /// upgrades to a write, which SQLite refuses under a concurrent writer).
    pub async fn append_build_logs(
        &self,
        id: &str,
        first: u64,
        logs: &[BuildLog],
    ) -> Result<(), StoreError> {
        if logs.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting a build log write"))?;
        let first = i64::try_from(first).unwrap_or(i64::MAX);
        for (i, log) in logs.iter().enumerate() {
            sqlx::query(
                "INSERT INTO template_build_logs (build_id, seq, ts, level, step, message) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(first + i as i64)
            .bind(millis(log.at))
            .bind(&log.level)
            .bind(log.step.clone())
            .bind(&log.message)
            .execute(&mut *tx)
            .await
            .map_err(query_err("writing build logs"))?;
        }
        tx.commit()
            .await
            .map_err(query_err("committing build logs"))
    }

    /// A build's log lines from `offset` on, at most `limit`.
    pub async fn build_logs(
        &self,
        id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<BuildLog>, StoreError> {
        let rows = sqlx::query(
            "SELECT ts, level, step, message FROM template_build_logs WHERE build_id = $1 AND seq >= $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(id)
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading build logs"))?;
        rows.iter()
            .map(|r| {
                let e = || query_err("decoding a build log");
                Ok(BuildLog {
                    at: from_millis("build log ts", r.try_get("ts").map_err(e())?)?,
                    level: r.try_get("level").map_err(e())?,
                    step: r.try_get("step").map_err(e())?,
                    message: r.try_get("message").map_err(e())?,
                })
            })
            .collect()
    }

    pub async fn tags_of(&self, template_id: &str) -> Result<Vec<TagRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tag, build_id, created_at FROM template_tags WHERE template_id = $1 ORDER BY tag",
        )
        .bind(template_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing tags"))?;
        rows.iter()
            .map(|r| {
                let e = || query_err("decoding a tag");
                Ok(TagRecord {
                    tag: r.try_get("tag").map_err(e())?,
                    build_id: r.try_get("build_id").map_err(e())?,
                    created_at: from_millis(
                        "tag created_at",
                        r.try_get("created_at").map_err(e())?,
                    )?,
                })
            })
            .collect()
    }

    /// The build a tag of a template names.
    pub async fn tagged_build(
        &self,
        template_id: &str,
        tag: &str,
    ) -> Result<Option<BuildRecord>, StoreError> {
        let row =
            sqlx::query("SELECT build_id FROM template_tags WHERE template_id = $1 AND tag = $2")
                .bind(template_id)
                .bind(tag)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("reading a tag"))?;
        match row {
            Some(r) => {
                let id: String = r.try_get("build_id").map_err(query_err("decoding a tag"))?;
                self.build(&id).await
            }
            None => Ok(None),
        }
    }

    /// Points `tags` of a template at a build.
    pub async fn assign_tags(
        &self,
        template_id: &str,
        build_id: &str,
        tags: &[String],
    ) -> Result<(), StoreError> {
        let now = millis(Utc::now());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting a tag assignment"))?;
        for tag in tags {
            sqlx::query("DELETE FROM template_tags WHERE template_id = $1 AND tag = $2")
                .bind(template_id)
                .bind(tag)
                .execute(&mut *tx)
                .await
                .map_err(query_err("assigning a tag"))?;
            sqlx::query(
                "INSERT INTO template_tags (template_id, tag, build_id, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(template_id)
            .bind(tag)
            .bind(build_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_err("assigning a tag"))?;
        }
        tx.commit()
            .await
            .map_err(query_err("committing a tag assignment"))
    }

    /// Removes tags of a template; returns how many there were.
    pub async fn remove_tags(&self, template_id: &str, tags: &[String]) -> Result<u64, StoreError> {
        let mut removed = 0;
        for tag in tags {
            removed += sqlx::query("DELETE FROM template_tags WHERE template_id = $1 AND tag = $2")
                .bind(template_id)
                .bind(tag)
                .execute(&self.pool)
                .await
                .map_err(query_err("removing a tag"))?
                .rows_affected();
        }
        Ok(removed)
    }

    /// The layer (and root filesystem) the step cache holds for `key`.
    pub async fn cached_step(
        &self,
        node: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT layer, base_template FROM build_steps WHERE node = $1 AND cache_key = $2",
        )
        .bind(node)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading the step cache"))?;
        let Some(r) = row else {
            return Ok(None);
        };
        let e = || query_err("decoding a cached step");
        let found: (String, String) = (
            r.try_get("layer").map_err(e())?,
            r.try_get("base_template").map_err(e())?,
        );
        sqlx::query("UPDATE build_steps SET used_at = $3 WHERE node = $1 AND cache_key = $2")
            .bind(node)
            .bind(key)
            .bind(millis(Utc::now()))
            .execute(&self.pool)
            .await
            .map_err(query_err("marking a cached step used"))?;
        Ok(Some(found))
    }

    /// Forgets cached steps no build has found since `before` (their
    /// layers go with the next collection, unless a build or sandbox still
    /// stands on them); how many.
    pub async fn prune_step_cache(
        &self,
        node: &str,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM build_steps WHERE node = $1 AND used_at < $2")
            .bind(node)
            .bind(millis(before))
            .execute(&self.pool)
            .await
            .map_err(query_err("pruning the step cache"))?;
        Ok(done.rows_affected())
    }

    /// Every root filesystem a node's builds or step cache stand on.
    pub async fn template_roots(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT base_template FROM build_steps WHERE node = $1 \
             UNION SELECT base_template FROM template_builds WHERE node = $1 AND base_template IS NOT NULL",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing template roots"))?;
        rows.iter()
            .map(|r| {
                r.try_get("base_template")
                    .map_err(query_err("decoding a root"))
            })
            .collect()
    }

    pub async fn cache_step(
        &self,
        node: &str,
        key: &str,
        layer: &str,
        base_template: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM build_steps WHERE node = $1 AND cache_key = $2")
            .bind(node)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(query_err("replacing a cached step"))?;
        sqlx::query(
            "INSERT INTO build_steps (node, cache_key, layer, base_template, created_at, used_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(node)
        .bind(key)
        .bind(layer)
        .bind(base_template)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(query_err("caching a step"))?;
        Ok(())
    }

    /// Every layer a node's builds and step cache name (kept by its layer
    /// store).
    pub async fn template_layers(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT layer FROM build_steps WHERE node = $1 \
             UNION SELECT layer FROM template_builds WHERE node = $1 AND layer IS NOT NULL",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing template layers"))?;
        rows.iter()
            .map(|r| r.try_get("layer").map_err(query_err("decoding a layer")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_take_their_tags_when_ready_and_templates_go_whole() {
        for t in crate::testing::stores().await {
            let s = &t.store;
            let tags = vec!["default".to_string(), "v1".to_string()];
            let new = NewBuild {
                team_id: "t1",
                name: "web",
                tags: &tags,
                node: "n1",
                cpu_count: 2,
                memory_mb: 512,
                disk_mb: 1024,
            };
            let (tpl, b1) = s.request_build(&new).await.unwrap();
            assert_eq!(b1.status, BuildStatus::Waiting);
            assert!(s.tagged_build(&tpl.id, "default").await.unwrap().is_none());
            assert!(s.start_build(&b1.id).await.unwrap());
            assert!(!s.start_build(&b1.id).await.unwrap(), "only once");
            let logs = [BuildLog {
                at: Utc::now(),
                level: "info".into(),
                step: Some("1".into()),
                message: "hello".into(),
            }];
            s.append_build_logs(&b1.id, 0, &logs).await.unwrap();
            s.append_build_logs(&b1.id, 1, &logs).await.unwrap();
            assert_eq!(s.build_logs(&b1.id, 0, 10).await.unwrap().len(), 2);
            assert_eq!(s.build_logs(&b1.id, 1, 10).await.unwrap().len(), 1);
            let cfg = serde_json::json!({"envs": {"A": "1"}});
            s.finish_build(&b1.id, "base", Some("L1"), &cfg)
                .await
                .unwrap();
            let got = s.tagged_build(&tpl.id, "v1").await.unwrap().unwrap();
            assert_eq!(got.layer.as_deref(), Some("L1"));
            assert_eq!(got.config, Some(cfg));

            // A second build of the name: same template, tags move when ready.
            let (tpl2, b2) = s.request_build(&new).await.unwrap();
            assert_eq!(tpl2.id, tpl.id);
            s.start_build(&b2.id).await.unwrap();
            s.fail_build(&b2.id, &serde_json::json!({"message": "no"}))
                .await
                .unwrap();
            assert_eq!(
                s.tagged_build(&tpl.id, "default")
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                b1.id
            );
            assert_eq!(
                s.build(&b2.id).await.unwrap().unwrap().status,
                BuildStatus::Error
            );

            s.cache_step("n1", "k", "L0", "base").await.unwrap();
            assert_eq!(
                s.cached_step("n1", "k").await.unwrap(),
                Some(("L0".into(), "base".into()))
            );
            assert!(s.cached_step("n2", "k").await.unwrap().is_none());
            let mut layers = s.template_layers("n1").await.unwrap();
            layers.sort();
            assert_eq!(layers, ["L0", "L1"]);
            assert_eq!(s.template_roots("n1").await.unwrap(), ["base"]);
            let hour_ago = Utc::now() - chrono::Duration::hours(1);
            assert_eq!(
                s.prune_step_cache("n1", hour_ago).await.unwrap(),
                0,
                "used just now"
            );
            let soon = Utc::now() + chrono::Duration::seconds(1);
            assert_eq!(s.prune_step_cache("n1", soon).await.unwrap(), 1);
            assert!(s.cached_step("n1", "k").await.unwrap().is_none());

            assert_eq!(s.remove_tags(&tpl.id, &["v1".into()]).await.unwrap(), 1);
            assert_eq!(s.tags_of(&tpl.id).await.unwrap().len(), 1);
            assert!(s.delete_template(&tpl.id).await.unwrap());
            assert!(s.template(&tpl.id).await.unwrap().is_none());
            assert!(s.build(&b1.id).await.unwrap().is_none());
            assert!(s.list_templates("t1").await.unwrap().is_empty());
            t.finish().await;
        }
    }
}
