//! API keys. Only a SHA-256 of each key is kept. A plain hash (rather than a
//! slow password hash such as argon2) is enough because keys are 160 random
//! bits: there is no dictionary to try, so slowing each guess buys nothing,
//! while a deterministic hash lets a request's key be found with one indexed
//! lookup.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{from_millis, millis, query_err, Store, StoreError};

/// How many characters of a key are kept in clear to tell keys apart.
const PREFIX_LEN: usize = 10;

/// A stored key, without the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The first characters of the key (e.g. `e2b_1a2b3c`), for display.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The team whose sandboxes the key sees and acts on.
    pub team_id: String,
}

/// A key just made: the only moment its clear text exists.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key: String,
    pub info: ApiKey,
}

/// A fresh key: `e2b_` + 40 hex characters (what the SDKs' format check wants).
pub fn generate_key() -> String {
    let bytes: [u8; 20] = rand::random();
    format!("e2b_{}", hex::encode(bytes))
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn row_to_key(row: &sqlx::any::AnyRow) -> Result<ApiKey, StoreError> {
    let get = |e| StoreError::Query {
        context: "decoding an api key",
        source: e,
    };
    let revoked: Option<i64> = row.try_get("revoked_at").map_err(get)?;
    Ok(ApiKey {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        prefix: row.try_get("prefix").map_err(get)?,
        created_at: from_millis(
            "api key created_at",
            row.try_get("created_at").map_err(get)?,
        )?,
        revoked_at: revoked
            .map(|ms| from_millis("api key revoked_at", ms))
            .transpose()?,
        team_id: row.try_get("team_id").map_err(get)?,
    })
}

impl Store {
    /// A key of the default team.
    pub async fn create_api_key(&self, name: &str) -> Result<NewApiKey, StoreError> {
        self.create_team_api_key(name, crate::DEFAULT_TEAM).await
    }

    /// A key of team `team_id` (which must exist).
    pub async fn create_team_api_key(
        &self,
        name: &str,
        team_id: &str,
    ) -> Result<NewApiKey, StoreError> {
        let key = generate_key();
        let info = self.insert_api_key(name, &key, team_id).await?;
        Ok(NewApiKey { key, info })
    }

    /// Stores a key made elsewhere (e.g. by the operator).
    pub async fn insert_api_key(
        &self,
        name: &str,
        key: &str,
        team_id: &str,
    ) -> Result<ApiKey, StoreError> {
        if self.team(team_id).await?.is_none() {
            return Err(StoreError::Invalid(format!("no team '{team_id}'")));
        }
        let info = ApiKey {
            id: hex::encode(rand::random::<[u8; 8]>()),
            name: name.to_string(),
            prefix: key.chars().take(PREFIX_LEN).collect(),
            created_at: Utc::now(),
            revoked_at: None,
            team_id: team_id.to_string(),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, prefix, created_at, team_id) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&info.id)
        .bind(&info.name)
        .bind(hash_key(key))
        .bind(&info.prefix)
        .bind(millis(info.created_at))
        .bind(&info.team_id)
        .execute(&self.pool)
        .await
        .map_err(query_err("inserting an api key"))?;
        Ok(info)
    }

    /// The key's record and its team, when it exists and is not revoked.
    pub async fn verify_api_key_team(
        &self,
        key: &str,
    ) -> Result<Option<(ApiKey, crate::Team)>, StoreError> {
        let Some(info) = self.verify_api_key(key).await? else {
            return Ok(None);
        };
        let team = self
            .team(&info.team_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                context: "api key",
                detail: format!("key {} names the missing team {}", info.id, info.team_id),
            })?;
        Ok(Some((info, team)))
    }

    /// The key's record when it exists and is not revoked.
    pub async fn verify_api_key(&self, key: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, prefix, created_at, revoked_at, team_id FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("looking up an api key"))?;
        row.as_ref().map(row_to_key).transpose()
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, prefix, created_at, revoked_at, team_id FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing api keys"))?;
        rows.iter().map(row_to_key).collect()
    }

    /// The keys of team `team_id` still in use (revoked ones are left out),
    /// oldest first.
    pub async fn list_team_api_keys(&self, team_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, prefix, created_at, revoked_at, team_id FROM api_keys WHERE team_id = $1 AND revoked_at IS NULL ORDER BY created_at, id",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing a team's api keys"))?;
        rows.iter().map(row_to_key).collect()
    }

    /// Renames key `id` of team `team_id`; `None` when the team has no such
    /// key in use (another team's key, a revoked one, no key at all).
    pub async fn rename_team_api_key(
        &self,
        team_id: &str,
        id: &str,
        name: &str,
    ) -> Result<Option<ApiKey>, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET name = $1 WHERE id = $2 AND team_id = $3 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(id)
        .bind(team_id)
        .execute(&self.pool)
        .await
        .map_err(query_err("renaming an api key"))?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, name, prefix, created_at, revoked_at, team_id FROM api_keys WHERE id = $1 AND team_id = $2",
        )
        .bind(id)
        .bind(team_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a renamed api key"))?;
        row.as_ref().map(row_to_key).transpose()
    }

    /// Revokes key `id` of team `team_id` (by id only, never by prefix);
    /// `false` when the team has no such key in use.
    pub async fn revoke_team_api_key(&self, team_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND team_id = $3 AND revoked_at IS NULL",
        )
        .bind(millis(Utc::now()))
        .bind(id)
        .bind(team_id)
        .execute(&self.pool)
        .await
        .map_err(query_err("revoking a team's api key"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes by id or by displayed prefix; `false` when nothing matched.
    pub async fn revoke_api_key(&self, id_or_prefix: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR prefix = $2) AND revoked_at IS NULL")
            .bind(millis(Utc::now()))
            .bind(id_or_prefix)
            .execute(&self.pool)
            .await
            .map_err(query_err("revoking an api key"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::default_url(dir.path())).await.unwrap();
        (dir, store)
    }

    #[test]
    fn keys_have_the_sdk_format() {
        let key = generate_key();
        assert_eq!(key.len(), 44);
        assert!(key.starts_with("e2b_"));
        assert!(key[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(generate_key(), key);
    }

    #[tokio::test]
    async fn verify_list_revoke() {
        for t in crate::testing::stores().await {
            verify_list_revoke_on(&t.store).await;
            t.finish().await;
        }
    }

    async fn verify_list_revoke_on(store: &Store) {
        let a = store.create_api_key("a").await.unwrap();
        let b = store.create_api_key("b").await.unwrap();
        assert_eq!(
            store.verify_api_key(&a.key).await.unwrap().unwrap().id,
            a.info.id
        );
        assert!(store.verify_api_key("e2b_0000").await.unwrap().is_none());

        let listed = store.list_api_keys().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].prefix, &a.key[..PREFIX_LEN]);

        assert!(store.revoke_api_key(&a.info.id).await.unwrap());
        assert!(
            !store.revoke_api_key(&a.info.id).await.unwrap(),
            "already revoked"
        );
        assert!(store.verify_api_key(&a.key).await.unwrap().is_none());
        assert!(store.revoke_api_key(&b.info.prefix).await.unwrap());
        assert!(store.verify_api_key(&b.key).await.unwrap().is_none());
        assert!(store
            .list_api_keys()
            .await
            .unwrap()
            .iter()
            .all(|k| k.revoked_at.is_some()));
    }

    #[tokio::test]
    async fn team_scoped_list_rename_revoke() {
        for t in crate::testing::stores().await {
            team_scoped_list_rename_revoke_on(&t.store).await;
            t.finish().await;
        }
    }

    async fn team_scoped_list_rename_revoke_on(store: &Store) {
        let other = store
            .create_team("other", &Default::default())
            .await
            .unwrap()
            .unwrap();
        let a = store.create_api_key("a").await.unwrap();
        let b = store.create_api_key("b").await.unwrap();
        let o = store.create_team_api_key("o", &other.id).await.unwrap();

        // Sorted: two keys made in the same millisecond list in id order.
        let names = |keys: Vec<ApiKey>| {
            let mut n: Vec<String> = keys.into_iter().map(|k| k.name).collect();
            n.sort();
            n
        };
        let mine = store.list_team_api_keys(crate::DEFAULT_TEAM).await.unwrap();
        assert_eq!(names(mine), ["a", "b"]);
        assert_eq!(
            names(store.list_team_api_keys(&other.id).await.unwrap()),
            ["o"]
        );

        // Another team's key is not found, for renames and revokes alike.
        assert!(store
            .rename_team_api_key(crate::DEFAULT_TEAM, &o.info.id, "x")
            .await
            .unwrap()
            .is_none());
        assert!(!store
            .revoke_team_api_key(crate::DEFAULT_TEAM, &o.info.id)
            .await
            .unwrap());
        assert!(store.verify_api_key(&o.key).await.unwrap().is_some());
        // Nor by its prefix: only ids name keys here.
        assert!(!store
            .revoke_team_api_key(&other.id, &o.info.prefix)
            .await
            .unwrap());

        let renamed = store
            .rename_team_api_key(crate::DEFAULT_TEAM, &a.info.id, "renamed")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renamed.name, "renamed");
        assert_eq!(renamed.prefix, a.info.prefix);
        assert_eq!(millis(renamed.created_at), millis(a.info.created_at));

        assert!(store
            .revoke_team_api_key(crate::DEFAULT_TEAM, &a.info.id)
            .await
            .unwrap());
        assert!(store.verify_api_key(&a.key).await.unwrap().is_none());
        assert!(!store
            .revoke_team_api_key(crate::DEFAULT_TEAM, &a.info.id)
            .await
            .unwrap());
        assert!(store
            .rename_team_api_key(crate::DEFAULT_TEAM, &a.info.id, "again")
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            names(store.list_team_api_keys(crate::DEFAULT_TEAM).await.unwrap()),
            ["b"],
            "revoked keys are not listed"
        );
        assert!(store.verify_api_key(&b.key).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn clear_key_is_not_stored() {
        let (dir, store) = store().await;
        let k = store.create_api_key("a").await.unwrap();
        store.close().await;
        let mut raw = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            raw.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        let raw = String::from_utf8_lossy(&raw);
        assert!(!raw.contains(&k.key[4..]));
        assert!(raw.contains(&hash_key(&k.key)));
    }
}
