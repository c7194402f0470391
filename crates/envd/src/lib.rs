//! envd is a program: see `main.rs`. This library target exists only so that
//! the fuzz targets under `fuzz/` can link envd's input parsers (a binary
//! crate cannot be a dependency). Including envd's files into the fuzz crate
//! with `#[path]` instead would make that crate mirror envd's module tree
//! (`paths.rs` reaches `crate::state`, `crate::users` and `super::error`) and
//! break with any move. The modules stay private: `main.rs` uses the items
//! re-exported below, the fuzz targets use [`fuzzing`]; nothing else in the
//! workspace depends on envd.

mod filesystem;
mod http_api;
mod process;
mod reaper;
pub mod server;
pub mod state;
mod users;

pub use process::ProcessService;
pub use reaper::Reaper;

/// What the fuzz targets feed (not an API: it may change with envd).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::filesystem::error::FsError;
    pub use crate::filesystem::metadata::{from_headers as metadata_from_headers, Metadata};
    pub use crate::filesystem::paths::{normalize, resolve};
    pub use crate::http_api::auth::{authorize_file, signature, FileAuth, Operation};
    pub use crate::http_api::error::ApiError;
    pub use crate::http_api::{resolve_path, FilesQuery};
    pub use crate::users::{from_basic_auth, UserInfo};
}
