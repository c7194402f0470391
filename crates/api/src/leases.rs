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

#[derive(Default)]
pub struct Leases {
    held: Arc<Mutex<BTreeMap<String, usize>>>,
    gate: RwLock<()>,
}

/// One name kept from the collection until dropped.
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

impl Leases {
    pub fn hold(&self, name: &str) -> Lease {
        *self
            .held
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default() += 1;
        Lease {
            name: name.to_string(),
            held: self.held.clone(),
        }
    }

    /// Every name leased now.
    pub fn held(&self) -> Vec<String> {
        self.held.lock().unwrap().keys().cloned().collect()
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
    }
}
