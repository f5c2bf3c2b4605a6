//! The JSON bodies of Deimos's client API, defined once for the server that writes them and
//! for `deimosctl` that reads them.
//!
//! Most shapes are etcd v2's (`/v2/keys`, `/v2/members`, `/v2/stats/*`, `/health`,
//! `/version`, the error body); a few are Deimos's own (`/raft/status`). Field names, order and
//! omission rules follow what etcd 3.4 sends, because unchanged etcd clients parse them.
//!
//! Two rules keep server and CLI from drifting apart:
//! * a field the server always sends is required when read back, so renaming it on one side
//!   fails the round-trip tests here instead of showing `-` in the CLI;
//! * a field etcd omits, or that only Deimos sends, is `#[serde(default)]`, so `deimosctl`
//!   still reads an etcd server.
//!
//! The crate holds data only (serde, no I/O), so every other crate may depend on it.

pub mod cluster;
pub mod error;
pub mod keys;
pub mod members;
pub mod status;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
