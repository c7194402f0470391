//! Layers and root filesystems that work in flight uses before anything
//! the collection reads names them: a snapshot's layer until its record is
//! stored or its forks stand on it, a build's step layers until the step
//! cache and the build's record hold them, an image's root filesystem while
//! a build pulls and prepares it. The collection keeps every leased name,
//! and does not run while a layer is being made and leased (`making` and
//! `collecting` exclude each other), so no layer is removed between its
//! commit and its lease.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Names with how many holders each has; a name goes when its last
/// [`Lease`] does. Leases of layers and roots use it, and so do builds'
/// places per team.
#[derive(Default, Clone)]
pub struct Counted {
    held: Arc<Mutex<BTreeMap<String, usize>>>,
}

/// One hold on a name, given back when dropped.
pub struct Lease {
    name: String,
    held: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap();
        if let Some(n) = held.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.name);
            }
        }
    }
}

impl Counted {
    pub fn hold(&self, name: &str) -> Lease {
        self.hold_below(name, usize::MAX).expect("no bound")
    }

    /// A hold unless `name` has `bound` holders already.
    pub fn hold_below(&self, name: &str, bound: usize) -> Option<Lease> {
        let mut held = self.held.lock().unwrap();
        let n = held.entry(name.to_string()).or_default();
        if *n >= bound {
            if *n == 0 {
                held.remove(name);
            }
            return None;
        }
        *n += 1;
        Some(Lease {
            name: name.to_string(),
            held: self.held.clone(),
        })
    }

    /// Every name held now.
    pub fn names(&self) -> Vec<String> {
        self.held.lock().unwrap().keys().cloned().collect()
    }
}

#[derive(Default)]
pub struct Leases {
    held: Counted,
    gate: RwLock<()>,
}

impl Leases {
    pub fn hold(&self, name: &str) -> Lease {
        self.held.hold(name)
    }

    /// Every name leased now.
    pub fn held(&self) -> Vec<String> {
        self.held.names()
    }

    /// Held while a layer is made and leased.
    pub async fn making(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Held by a collection.
    pub async fn collecting(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_held_until_its_last_lease_goes() {
        let l = Leases::default();
        let a = l.hold("x");
        let b = l.hold("x");
        assert_eq!(l.held(), ["x"]);
        drop(a);
        assert_eq!(l.held(), ["x"]);
        drop(b);
        assert!(l.held().is_empty());
        let c = Counted::default();
        let one = c.hold_below("t", 1).unwrap();
        assert!(c.hold_below("t", 1).is_none());
        drop(one);
        assert!(c.hold_below("t", 1).is_some());
        assert!(c.hold_below("u", 0).is_none());
        assert!(c.names().is_empty(), "a refused name is not left behind");
    }
}
