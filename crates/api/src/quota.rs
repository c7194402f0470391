//! Team limits: how many sandboxes, how much memory and CPU a team's running
//! sandboxes may hold together, how long one may live, how fast a team may
//! create them. Past a limit the answer is E2B's 429 shape with a message.
//!
//! Running sandboxes are counted from the store plus the creates still in
//! flight in this process (reserved before the sandbox is made, released
//! once its record is stored). The count and the reservation happen under a
//! per-team lock that releases also take, so two concurrent creates can
//! never both take the last slot; a team without limits pays nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use sandbar_store::{Store, Team, TeamUsage};

use crate::error::ApiError;

/// What one sandbox holds against its team's limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claim {
    pub memory_mb: u64,
    pub cpus: u64,
}

impl Claim {
    pub fn of(memory_mb: u64, cpu_count: u32) -> Self {
        Self {
            memory_mb,
            cpus: u64::from(cpu_count),
        }
    }
}

/// Why a sandbox asks for a place: a new one (counted against the create
/// rate too), or a paused one running again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Create,
    Resume,
}

#[derive(Default)]
struct TeamState {
    /// Held by one admission at a time, across its store read (with the
    /// create-rate bucket it guards).
    admitting: tokio::sync::Mutex<Option<(f64, Instant)>>,
    /// The places reserved and not yet stored: given back at once when a
    /// reservation drops (a later give-back let a create just stored count
    /// twice, and refuse the next one wrongly).
    inflight: std::sync::Mutex<TeamUsage>,
}

#[derive(Default)]
pub struct Quotas {
    teams: std::sync::Mutex<HashMap<String, Arc<TeamState>>>,
}

/// A create's place in its team's limits; dropping it gives the place back
/// (after the sandbox's record is stored, which then counts instead).
pub struct Reservation {
    team: Option<(Arc<TeamState>, Claim)>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some((state, claim)) = self.team.take() {
            let mut inflight = state.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.sandboxes = inflight.sandboxes.saturating_sub(1);
            inflight.memory_mb = inflight.memory_mb.saturating_sub(claim.memory_mb);
            inflight.cpus = inflight.cpus.saturating_sub(claim.cpus);
        }
    }
}

/// 429 for a limit that does not lift by waiting a moment: the Python SDK
/// would retry it otherwise (`Should-Retry: false`), the JS SDK retries only
/// with a `Retry-After`, which it does not get.
fn over_limit(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        .with_header("should-retry", HeaderValue::from_static("false"))
}

impl Quotas {
    fn state_of(&self, team: &str) -> Arc<TeamState> {
        self.teams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(team.to_string())
            .or_default()
            .clone()
    }

    /// Checks a sandbox of `claim` that would run for `lifetime` against
    /// `team`'s limits and reserves its place. A paused sandbox holds none,
    /// so resuming one ([`Admission::Resume`]) is bound by the same limits
    /// as a create (else pause, create, resume goes past them), less the
    /// create rate.
    pub async fn admit(
        &self,
        store: &Store,
        team: &Team,
        claim: Claim,
        lifetime: Duration,
        kind: Admission,
    ) -> Result<Reservation, ApiError> {
        self.reserve(store, team, claim, lifetime, kind == Admission::Create)
            .await
    }

    async fn reserve(
        &self,
        store: &Store,
        team: &Team,
        claim: Claim,
        lifetime: Duration,
        rated: bool,
    ) -> Result<Reservation, ApiError> {
        let limits = &team.limits;
        check_lifetime(team, lifetime)?;
        if limits.is_unlimited() {
            return Ok(Reservation { team: None });
        }
        let state = self.state_of(&team.id);
        let mut bucket = state.admitting.lock().await;
        if let Some(per_minute) = limits.max_creates_per_minute.filter(|_| rated) {
            let capacity = per_minute as f64;
            let now = Instant::now();
            let (tokens, at) = bucket.unwrap_or((capacity, now));
            let tokens =
                (tokens + now.duration_since(at).as_secs_f64() * capacity / 60.0).min(capacity);
            if tokens < 1.0 {
                let wait = ((1.0 - tokens) * 60.0 / capacity).ceil().max(1.0) as u64;
                *bucket = Some((tokens, now));
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "team '{}' may create {per_minute} sandboxes a minute; try again in {wait} s",
                        team.name
                    ),
                )
                .with_header("retry-after", HeaderValue::from(wait)));
            }
            *bucket = Some((tokens - 1.0, now));
        }
        let stored = store.team_usage(&team.id).await?;
        let inflight = *state.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let used = TeamUsage {
            sandboxes: stored.sandboxes + inflight.sandboxes,
            memory_mb: stored.memory_mb + inflight.memory_mb,
            cpus: stored.cpus + inflight.cpus,
        };
        if let Some(max) = limits.max_sandboxes {
            if used.sandboxes + 1 > max {
                return Err(over_limit(format!(
                    "team '{}' has reached its limit of {max} running sandboxes; kill or pause one first",
                    team.name
                )));
            }
        }
        if let Some(max) = limits.max_memory_mb {
            if used.memory_mb + claim.memory_mb > max {
                return Err(over_limit(format!(
                    "team '{}' would use {} MiB of memory, over its limit of {max} MiB ({} MiB in use)",
                    team.name,
                    used.memory_mb + claim.memory_mb,
                    used.memory_mb
                )));
            }
        }
        if let Some(max) = limits.max_cpus {
            if used.cpus + claim.cpus > max {
                return Err(over_limit(format!(
                    "team '{}' would use {} CPUs, over its limit of {max} ({} in use)",
                    team.name,
                    used.cpus + claim.cpus,
                    used.cpus
                )));
            }
        }
        {
            let mut inflight = state.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.sandboxes += 1;
            inflight.memory_mb += claim.memory_mb;
            inflight.cpus += claim.cpus;
        }
        drop(bucket);
        Ok(Reservation {
            team: Some((state, claim)),
        })
    }
}

/// A sandbox of `team` may live `lifetime` from its start at most.
pub fn check_lifetime(team: &Team, lifetime: Duration) -> Result<(), ApiError> {
    match team.limits.max_lifetime_secs {
        Some(max) if lifetime.as_secs() > max => Err(ApiError::bad_request(format!(
            "team '{}' sandboxes may live at most {max} s; {} s asked for",
            team.name,
            lifetime.as_secs()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbar_store::TeamLimits;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&Store::default_url(dir.path())).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn in_flight_creates_count_and_are_released() {
        let (_d, store) = store().await;
        let limits = TeamLimits {
            max_sandboxes: Some(2),
            max_memory_mb: Some(1024),
            ..Default::default()
        };
        let team = store.create_team("q", &limits).await.unwrap().unwrap();
        let q = Quotas::default();
        let claim = Claim {
            memory_mb: 512,
            cpus: 1,
        };
        let life = Duration::from_secs(60);
        let a = q
            .admit(&store, &team, claim, life, Admission::Create)
            .await
            .unwrap();
        let _b = q
            .admit(&store, &team, claim, life, Admission::Create)
            .await
            .unwrap();
        let err = q
            .admit(&store, &team, claim, life, Admission::Create)
            .await
            .err()
            .unwrap();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(err.message.contains("limit of 2"), "{}", err.message);
        // Given back at once: the next admission, without a yield between,
        // finds the place.
        drop(a);
        assert!(q
            .admit(&store, &team, claim, life, Admission::Create)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn the_create_rate_has_a_retry_after() {
        let (_d, store) = store().await;
        let limits = TeamLimits {
            max_creates_per_minute: Some(2),
            max_lifetime_secs: Some(600),
            ..Default::default()
        };
        let team = store.create_team("r", &limits).await.unwrap().unwrap();
        let q = Quotas::default();
        let life = Duration::from_secs(60);
        for _ in 0..2 {
            drop(
                q.admit(&store, &team, Claim::default(), life, Admission::Create)
                    .await
                    .unwrap(),
            );
        }
        let err = q
            .admit(&store, &team, Claim::default(), life, Admission::Create)
            .await
            .err()
            .unwrap();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            err.headers
                .iter()
                .any(|(k, v)| k == "retry-after" && v == "30"),
            "{err:?}"
        );
        let err = q
            .admit(
                &store,
                &team,
                Claim::default(),
                Duration::from_secs(601),
                Admission::Create,
            )
            .await
            .err()
            .unwrap();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }
}
