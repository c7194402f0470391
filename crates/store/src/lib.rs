//! Persistent control-plane state: teams, API keys (only their hashes),
//! sandbox records and their timeouts, snapshots, metrics over time. SQLite
//! in the data directory by default, PostgreSQL (`postgres://...`) when
//! several nodes share one catalog.
//!
//! Queries go through sqlx's `Any` driver and are checked at run time, so the
//! crate builds without a database at hand. Both backends run the same SQL:
//! `$N` placeholders (SQLite accepts them too), times as unix milliseconds and
//! booleans as 0/1 in BIGINT columns.
//!
//! Owns: the schema and its migrations. Must not touch: sandboxes themselves.

mod keys;
mod metrics;
mod sandboxes;
mod snapshots;
mod teams;
mod templates;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use keys::{generate_key, hash_key, ApiKey, NewApiKey};
pub use metrics::{Lifespan, MetricSample, MAX_SAMPLES};
pub use sandboxes::{Cursor, Lifecycle, ListFilter, SandboxRecord, SandboxState};
pub use snapshots::SnapshotRecord;
pub use teams::{valid_team_name, Team, TeamLimits, TeamUsage, DEFAULT_TEAM};
pub use templates::{BuildLog, BuildRecord, BuildStatus, NewBuild, TagRecord, TemplateRecord};

/// Migrations embedded in the binary; the same files serve both backends.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url '{0}': use sqlite://<path> or postgres://...")]
    UnsupportedUrl(String),
    #[error("opening the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query ({context}): {source}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored value is corrupt ({context}): {detail}")]
    Corrupt {
        context: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("creating the database directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn query_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}

/// Which SQL engine is behind the pool (a few statements differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The control-plane database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// The default database of a data directory: `<data_dir>/sandbar.db`.
    pub fn default_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("sandbar.db").display())
    }

    /// Opens (creating a SQLite file if needed) and migrates the database.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };

        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let options: AnyConnectOptions = url.parse().map_err(StoreError::Connect)?;
        let mut pool_options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // WAL lets readers proceed while one writer commits; the busy
            // timeout makes concurrent writers wait instead of failing.
            pool_options = pool_options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
        } else {
            pool_options = pool_options.max_connections(16);
        }
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        MIGRATOR.run(&pool).await?;
        tracing::debug!(?backend, "store opened");
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Adds `mode=rwc` so a missing file is created, and makes its directory.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

pub(crate) fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(
    context: &'static str,
    ms: i64,
) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt {
        context,
        detail: format!("timestamp {ms} out of range"),
    })
}

/// An optional JSON column (stored as text) read back.
pub(crate) fn from_json_text(
    context: &'static str,
    text: Option<String>,
) -> Result<Option<serde_json::Value>, StoreError> {
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            context,
            detail: e.to_string(),
        })
}

/// Test databases: always a SQLite file in a temp dir, plus a fresh
/// PostgreSQL database when `SANDBAR_TEST_POSTGRES_URL` names a server (an
/// admin URL such as `postgres://postgres@127.0.0.1:5432/postgres`).
#[cfg(test)]
pub(crate) mod testing {
    use sqlx::Connection;

    use super::Store;

    pub struct TestStore {
        pub store: Store,
        _dir: Option<tempfile::TempDir>,
        /// Admin URL and name of the database to drop afterwards.
        pg: Option<(String, String)>,
    }

    impl TestStore {
        pub async fn finish(self) {
            self.store.close().await;
            if let Some((admin, db)) = self.pg {
                let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
                // FORCE: the server may still be ending the pool's sessions.
                sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn stores() -> Vec<TestStore> {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open(&Store::default_url(dir.path())).await.unwrap();
        let mut out = vec![TestStore {
            store: sqlite,
            _dir: Some(dir),
            pg: None,
        }];
        if let Ok(admin) = std::env::var("SANDBAR_TEST_POSTGRES_URL") {
            let db = format!("sandbar_test_{}", hex::encode(rand::random::<[u8; 6]>()));
            let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let (base, query) = admin
                .split_once('?')
                .map(|(b, q)| (b, format!("?{q}")))
                .unwrap_or((&admin, String::new()));
            let (server, _) = base.rsplit_once('/').expect("the URL names a database");
            let store = Store::open(&format!("{server}/{db}{query}")).await.unwrap();
            assert_eq!(store.backend(), super::Backend::Postgres);
            out.push(TestStore {
                store,
                _dir: None,
                pg: Some((admin, db)),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let url = Store::default_url(&dir.path().join("sub"));
        let got = sqlite_url(&url).unwrap();
        assert!(got.ends_with("/sub/sandbar.db?mode=rwc"), "{got}");
        assert!(dir.path().join("sub").is_dir());
        assert_eq!(
            sqlite_url("sqlite://x.db?mode=ro").unwrap(),
            "sqlite://x.db?mode=ro"
        );
    }

    #[tokio::test]
    async fn rejects_unknown_schemes() {
        let err = Store::open("mysql://localhost/x").await.unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let url = Store::default_url(dir.path());
        let store = Store::open(&url).await.unwrap();
        let key = store.create_api_key("first").await.unwrap();
        store.close().await;
        let store = Store::open(&url).await.unwrap();
        assert!(store.verify_api_key(&key.key).await.unwrap().is_some());
    }
}
