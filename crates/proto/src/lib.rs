//! Wire types for envd: the `process` and `filesystem` packages, generated at
//! build time from `proto/` into buffa messages and connectrpc service stubs.
//!
//! Owns: the .proto contract only. Must not hold behaviour; envd implements the
//! services and nothing else in the workspace should depend on envd's internals.
#![allow(clippy::all, missing_docs)]

connectrpc::include_generated!();
