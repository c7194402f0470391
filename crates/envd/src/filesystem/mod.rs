//! `filesystem.Filesystem`: stat, list, mkdir, move, remove, watches.

use std::sync::Arc;

use crate::state::EnvdState;

/// Implements the generated `Filesystem` service trait.
pub struct FilesystemService {
    #[allow(dead_code)]
    state: Arc<EnvdState>,
}

impl FilesystemService {
    pub fn new(state: Arc<EnvdState>) -> Self {
        Self { state }
    }
}
