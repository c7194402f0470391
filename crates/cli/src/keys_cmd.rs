//! `sandbar keys create|list|revoke`, straight on the store (SQLite allows
//! this while `serve` runs).

use anyhow::{bail, Result};
use sandbar_store::Store;

pub async fn create(store: &Store, name: &str) -> Result<()> {
    let k = store.create_api_key(name).await?;
    eprintln!(
        "created key {} ({}); it is shown only this once:",
        k.info.id, k.info.name
    );
    println!("{}", k.key);
    Ok(())
}

pub async fn list(store: &Store) -> Result<()> {
    println!(
        "{:<18} {:<12} {:<20} {:<25} STATUS",
        "ID", "PREFIX", "NAME", "CREATED"
    );
    for k in store.list_api_keys().await? {
        let status = match k.revoked_at {
            Some(t) => format!("revoked {}", t.format("%Y-%m-%d %H:%M")),
            None => "active".to_string(),
        };
        println!(
            "{:<18} {:<12} {:<20} {:<25} {status}",
            k.id,
            k.prefix,
            k.name,
            k.created_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(())
}

pub async fn revoke(store: &Store, id_or_prefix: &str) -> Result<()> {
    if !store.revoke_api_key(id_or_prefix).await? {
        bail!("no active key with id or prefix '{id_or_prefix}'");
    }
    println!("revoked {id_or_prefix}");
    Ok(())
}
