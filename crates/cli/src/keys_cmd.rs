//! `sandbar keys create|list|revoke` and `sandbar teams create|ls|set`,
//! straight on the store (SQLite allows this while `serve` runs).

use anyhow::{bail, Context, Result};
use sandbar_store::{Store, Team, TeamLimits};

async fn team_named(store: &Store, name: &str) -> Result<Team> {
    store
        .team_by_name(name)
        .await?
        .with_context(|| format!("no team '{name}' (see `sandbar teams ls`)"))
}

pub async fn create(store: &Store, name: &str, team: &str) -> Result<()> {
    let team = team_named(store, team).await?;
    let k = store.create_team_api_key(name, &team.id).await?;
    eprintln!(
        "created key {} ({}) of team {}; it is shown only this once:",
        k.info.id, k.info.name, team.name
    );
    println!("{}", k.key);
    Ok(())
}

pub async fn list(store: &Store, json: bool) -> Result<()> {
    let teams = store.list_teams().await?;
    let team_name = |id: &str| {
        teams
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    if json {
        for k in store.list_api_keys().await? {
            let row = serde_json::json!({
                "id": k.id,
                "prefix": k.prefix,
                "name": k.name,
                "team": team_name(&k.team_id),
                "teamID": k.team_id,
                "createdAt": k.created_at,
                "revokedAt": k.revoked_at,
            });
            println!("{row}");
        }
        return Ok(());
    }
    println!(
        "{:<18} {:<12} {:<20} {:<16} {:<25} STATUS",
        "ID", "PREFIX", "NAME", "TEAM", "CREATED"
    );
    for k in store.list_api_keys().await? {
        let status = match k.revoked_at {
            Some(t) => format!("revoked {}", t.format("%Y-%m-%d %H:%M")),
            None => "active".to_string(),
        };
        println!(
            "{:<18} {:<12} {:<20} {:<16} {:<25} {status}",
            k.id,
            k.prefix,
            k.name,
            team_name(&k.team_id),
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

/// Limits as the `teams` commands take them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Running sandboxes at once.
    #[arg(long)]
    pub max_sandboxes: Option<u64>,
    /// Memory of all running sandboxes together, MiB.
    #[arg(long)]
    pub max_memory_mb: Option<u64>,
    /// CPUs of all running sandboxes together.
    #[arg(long)]
    pub max_cpus: Option<u64>,
    /// Longest a sandbox may live, seconds.
    #[arg(long)]
    pub max_lifetime: Option<u64>,
    /// Creates per minute.
    #[arg(long)]
    pub max_creates_per_minute: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> TeamLimits {
        TeamLimits {
            max_sandboxes: self.max_sandboxes,
            max_memory_mb: self.max_memory_mb,
            max_cpus: self.max_cpus,
            max_lifetime_secs: self.max_lifetime,
            max_creates_per_minute: self.max_creates_per_minute,
        }
    }
}

pub async fn team_create(store: &Store, name: &str, limits: &LimitArgs) -> Result<()> {
    match store.create_team(name, &limits.limits()).await? {
        Some(t) => {
            println!("created team {} ({})", t.name, t.id);
            Ok(())
        }
        None => bail!("a team named '{name}' exists already"),
    }
}

/// Sets the limits given; the others keep their value (`0` removes one).
pub async fn team_set(store: &Store, name: &str, limits: &LimitArgs) -> Result<()> {
    let team = team_named(store, name).await?;
    let new = limits.limits();
    let pick = |new: Option<u64>, old: Option<u64>| match new {
        Some(0) => None,
        Some(v) => Some(v),
        None => old,
    };
    let merged = TeamLimits {
        max_sandboxes: pick(new.max_sandboxes, team.limits.max_sandboxes),
        max_memory_mb: pick(new.max_memory_mb, team.limits.max_memory_mb),
        max_cpus: pick(new.max_cpus, team.limits.max_cpus),
        max_lifetime_secs: pick(new.max_lifetime_secs, team.limits.max_lifetime_secs),
        max_creates_per_minute: pick(
            new.max_creates_per_minute,
            team.limits.max_creates_per_minute,
        ),
    };
    store.set_team_limits(&team.id, &merged).await?;
    println!("team {} limits: {}", team.name, describe(&merged));
    Ok(())
}

fn describe(l: &TeamLimits) -> String {
    let parts: Vec<String> = [
        ("sandboxes", l.max_sandboxes),
        ("memory MiB", l.max_memory_mb),
        ("cpus", l.max_cpus),
        ("lifetime s", l.max_lifetime_secs),
        ("creates/min", l.max_creates_per_minute),
    ]
    .into_iter()
    .filter_map(|(what, v)| v.map(|v| format!("{what} {v}")))
    .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub async fn team_list(store: &Store, json: bool) -> Result<()> {
    if json {
        for t in store.list_teams().await? {
            let l = &t.limits;
            let row = serde_json::json!({
                "id": t.id,
                "name": t.name,
                "createdAt": t.created_at,
                "limits": {
                    "maxSandboxes": l.max_sandboxes,
                    "maxMemoryMB": l.max_memory_mb,
                    "maxCpus": l.max_cpus,
                    "maxLifetimeSecs": l.max_lifetime_secs,
                    "maxCreatesPerMinute": l.max_creates_per_minute,
                },
            });
            println!("{row}");
        }
        return Ok(());
    }
    println!("{:<18} {:<20} {:<25} LIMITS", "ID", "NAME", "CREATED");
    for t in store.list_teams().await? {
        println!(
            "{:<18} {:<20} {:<25} {}",
            t.id,
            t.name,
            t.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            describe(&t.limits)
        );
    }
    Ok(())
}
