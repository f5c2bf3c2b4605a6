//! The deterministic simulator that tests the Raft core end to end (see `cluster.rs` for the
//! design). Shared by `tests/simulation.rs`; split in modules so that the lease tests can reuse
//! the harness.

#![allow(dead_code)]

pub mod cluster;
pub mod invariants;
pub mod network;
pub mod register;

// The checker lives in the library (`deimos_raft::lincheck`) so other crates' tests can use it.
// Until `lib.rs` exports it, the simulator compiles the same file in directly.
#[path = "../../src/lincheck.rs"]
pub mod lincheck;

pub use cluster::{run, Failure, SimConfig, Stats};
