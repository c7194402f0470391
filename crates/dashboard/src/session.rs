//! Sign-in sessions: a random id in the browser's cookie, the API key only
//! here, in a bounded map that forgets sessions at their lifetime or after
//! they sit idle.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// `__Host-`: the browser accepts it only from a secure origin, host-only
/// (no `Domain`) with `Path=/`, so a sandbox's page on `{port}-{id}.{domain}`
/// can neither read it nor plant one that shadows it.
pub const COOKIE: &str = "__Host-sandbar_session";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A session ends this long after sign-in, used or not.
    pub lifetime: Duration,
    /// ... or after this long without a request.
    pub idle: Duration,
    /// Sessions held at once; the least recently used goes first.
    pub max_sessions: usize,
    /// Sessions of one key at once; its oldest goes first (so one key's
    /// owner cannot push everyone else's sessions out).
    pub max_per_key: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(12 * 3600),
            idle: Duration::from_secs(2 * 3600),
            max_sessions: 4096,
            max_per_key: 32,
        }
    }
}

/// What a request signed in with the session acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub key: String,
    pub team_id: String,
    pub team_name: String,
}

#[derive(Debug)]
struct Entry {
    signed: Signed,
    created: Instant,
    last_used: Instant,
}

/// Keyed by the SHA-256 of the cookie's value: a lookup compares digests,
/// so its timing says nothing about the ids held.
#[derive(Debug)]
pub struct Sessions {
    map: HashMap<[u8; 32], Entry>,
    limits: Limits,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(limits: Limits) -> Self {
        Self {
            map: HashMap::new(),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.created) >= self.limits.lifetime
            || now.duration_since(e.last_used) >= self.limits.idle
    }

    /// A new session for `signed`; its id (256 random bits, base64url) is
    /// what the cookie carries.
    pub fn insert(&mut self, signed: Signed, now: Instant) -> String {
        self.purge(now);
        let of_key: Vec<([u8; 32], Instant)> = self
            .map
            .iter()
            .filter(|(_, e)| e.signed.key == signed.key)
            .map(|(k, e)| (*k, e.created))
            .collect();
        if of_key.len() >= self.limits.max_per_key {
            if let Some((oldest, _)) = of_key.iter().min_by_key(|(_, t)| *t) {
                self.map.remove(oldest);
            }
        }
        while self.map.len() >= self.limits.max_sessions.max(1) {
            let lru = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            match lru {
                Some(k) => self.map.remove(&k),
                None => break,
            };
        }
        let mut raw = [0u8; 32];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        self.map.insert(
            digest(&token),
            Entry {
                signed,
                created: now,
                last_used: now,
            },
        );
        token
    }

    /// The session `token` names, if it is still alive (and marks it used).
    pub fn lookup(&mut self, token: &str, now: Instant) -> Option<Signed> {
        let id = digest(token);
        let entry = self.map.get(&id)?;
        if self.expired(entry, now) {
            self.map.remove(&id);
            return None;
        }
        let entry = self.map.get_mut(&id)?;
        entry.last_used = now;
        Some(entry.signed.clone())
    }

    pub fn remove(&mut self, token: &str) -> bool {
        self.map.remove(&digest(token)).is_some()
    }

    /// Ends every session of `key` (the API stopped taking it). Returns how many.
    pub fn remove_key(&mut self, key: &str) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.signed.key != key);
        before - self.map.len()
    }

    pub fn purge(&mut self, now: Instant) {
        let limits = self.limits;
        self.map.retain(|_, e| {
            now.duration_since(e.created) < limits.lifetime
                && now.duration_since(e.last_used) < limits.idle
        });
    }
}

/// The session ids in a request's `Cookie` headers (all of them: a stale
/// one must not hide a live one).
pub fn tokens_in(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == COOKIE).then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|v| !v.is_empty())
        .collect()
}

pub fn set_cookie(token: &str, lifetime: Duration) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        lifetime.as_secs()
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(key: &str) -> Signed {
        Signed {
            key: key.into(),
            team_id: "t".into(),
            team_name: "team".into(),
        }
    }

    fn limits() -> Limits {
        Limits {
            lifetime: Duration::from_secs(100),
            idle: Duration::from_secs(30),
            max_sessions: 3,
            max_per_key: 2,
        }
    }

    #[test]
    fn sessions_end_at_their_lifetime_and_when_idle() {
        let mut s = Sessions::new(limits());
        let t0 = Instant::now();
        let a = s.insert(signed("k1"), t0);
        assert_eq!(
            s.lookup(&a, t0 + Duration::from_secs(20)),
            Some(signed("k1"))
        );
        // Used at 20 s, so alive at 45 s; idle from 45 s to 80 s: gone.
        assert!(s.lookup(&a, t0 + Duration::from_secs(45)).is_some());
        assert!(s.lookup(&a, t0 + Duration::from_secs(80)).is_none());
        assert!(s.is_empty(), "an expired session is forgotten");

        let b = s.insert(signed("k1"), t0);
        for secs in (20..100).step_by(20) {
            assert!(s.lookup(&b, t0 + Duration::from_secs(secs)).is_some());
        }
        assert!(
            s.lookup(&b, t0 + Duration::from_secs(100)).is_none(),
            "used all along, it still ends at its lifetime"
        );
        assert!(s.lookup("not-a-session", t0).is_none());
    }

    #[test]
    fn the_map_is_bounded_per_key_and_overall() {
        let mut s = Sessions::new(limits());
        let t0 = Instant::now();
        let at = |n: u64| t0 + Duration::from_secs(n);
        let a1 = s.insert(signed("a"), at(0));
        let a2 = s.insert(signed("a"), at(1));
        let a3 = s.insert(signed("a"), at(2));
        assert_eq!(s.len(), 2, "two per key");
        assert!(s.lookup(&a1, at(3)).is_none(), "the key's oldest went");
        assert!(s.lookup(&a2, at(3)).is_some() && s.lookup(&a3, at(3)).is_some());

        let b = s.insert(signed("b"), at(4));
        assert_eq!(s.len(), 3);
        // Full: the least recently used (a2 and a3 were used at 3; b at 4;
        // a2 is used again) makes room.
        assert!(s.lookup(&a2, at(5)).is_some());
        let c = s.insert(signed("c"), at(6));
        assert_eq!(s.len(), 3);
        assert!(
            s.lookup(&a3, at(7)).is_none(),
            "the least recently used went"
        );
        assert!(s.lookup(&b, at(7)).is_some() && s.lookup(&c, at(7)).is_some());

        assert_eq!(s.remove_key("b"), 1);
        assert!(s.lookup(&b, at(8)).is_none());
        assert!(s.remove(&c));
        assert!(!s.remove(&c));
    }

    #[test]
    fn ids_are_random_and_cookies_are_read_from_every_header() {
        let mut s = Sessions::new(Limits::default());
        let now = Instant::now();
        let a = s.insert(signed("a"), now);
        let b = s.insert(signed("a"), now);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "256 bits in base64url");

        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "x=1; __Host-sandbar_session=old".parse().unwrap(),
        );
        h.append(
            http::header::COOKIE,
            format!("{COOKIE}={a}").parse().unwrap(),
        );
        assert_eq!(tokens_in(&h), vec!["old".to_string(), a.clone()]);
        let set = set_cookie(&a, Duration::from_secs(60));
        for flag in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(set.contains(flag), "{set} has {flag}");
        }
        assert!(!set.contains("Domain"), "host-only");
    }
}
