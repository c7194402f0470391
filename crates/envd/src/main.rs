//! envd: the agent inside every sandbox. It serves E2B's `process.Process` and
//! `filesystem.Filesystem` Connect services and the plain-HTTP `/files`,
//! `/envs`, `/health` and `/init` endpoints on one port (49983).
//!
//! Owns: everything a client does inside one sandbox. Must not touch: anything
//! outside the machine it runs on; it knows nothing of the control plane and
//! depends on no other sandbar crate but the generated protos.

mod filesystem;
mod http_api;
mod process;
mod state;
mod users;

fn main() {}
