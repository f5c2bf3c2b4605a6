//! The deterministic simulator that tests the Raft core end to end (see `cluster.rs` for the
//! design). Shared by `tests/simulation.rs`; split in modules so that the lease tests can reuse
//! the harness.

#![allow(dead_code)]

pub mod cluster;
pub mod invariants;
pub mod network;
pub mod register;

// The checker lives in the library so that other crates' tests (cluster-level) can use it too.
pub use deimos_raft::lincheck;

pub use cluster::{run, Failure, SimConfig, Stats};
