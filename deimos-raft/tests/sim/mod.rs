//! The deterministic simulator that tests the Raft core end to end. Shared by
//! `tests/simulation.rs`; split in modules so that further suites can reuse the harness.
//!
//! - `cluster.rs`: the simulator (`Sim`), its event queue and the event loop; `run`.
//! - `config.rs`: `SimConfig` (defaults, the sweep's profiles) and `FaultWeights`.
//! - `node.rs`: nodes (`SimNode`: the production `Driver` + its `Handle` + register +
//!   `NodeClock`): boot, crash, restart.
//! - `seams.rs`: the storage, transport and state machine the drivers run on, where crashes are
//!   injected and writes checked.
//! - `drive.rs`: feeding a node's driver and checking what it did; sending messages (snapshots
//!   with their outcome reported back, as the server's transport does).
//! - `clients.rs`: the client workload and the history it records (`HistEntry`).
//! - `faults.rs`: the faults of the chaos phase.
//! - `phases.rs`: the phases (chaos, heal, liveness) and the end-of-run checks.
//! - `report.rs`: `Failure`, `Stats`, trace lines.
//! - `network.rs`: partitions, loss, duplication, delay/reordering.
//! - `register.rs`: the replicated key-value register, client commands, `ClientOp`.
//! - `invariants.rs`: Raft's safety properties, checked as the run goes.
//! - the linearizability checker is the `deimos-lincheck` crate.
//!
//! Using it: `run(SimConfig::new(seed, nodes))` (or `SimConfig::for_seed(seed)`, the sweep's
//! rotation of profiles) returns `Stats` or a `Failure` with the violation and, when
//! `SimConfig::trace > 0`, the last events. The same seed always replays the same run.
//!
//! Extending it:
//! - a client operation: add a `ClientOp` variant (and its `spec()`, i.e. what the
//!   linearizability model sees), an arm in `Sim::submit` that either answers at once
//!   (`immediate`) or parks the request on the node (`pending_reads` with a read index, or
//!   `pending_updates` for log entries), and a share in `Sim::client_wake` (a percentage field in
//!   `SimConfig`, like `lease_read_pct`);
//! - a fault: a weight in `FaultWeights` and an arm in `Sim::fault` (same position in its table);
//! - per-node time: `SimNode::clock.local(t)` is the node's local time at global time `t`, and
//!   `SimNode::clock.clock` is a `ManualClock` set to it before every input to that node (the
//!   lease service reads it); rates drift within `SimConfig::drift` and change under the
//!   `clock_rate` fault.

#![allow(dead_code)]

pub mod clients;
pub mod cluster;
pub mod config;
pub mod drive;
pub mod faults;
pub mod invariants;
pub mod network;
pub mod node;
pub mod phases;
pub mod register;
pub mod report;
pub mod seams;

// The checker lives in the library so that other crates' tests (cluster-level) can use it too.
pub use deimos_lincheck as lincheck;

pub use cluster::run;
pub use config::SimConfig;
pub use report::{Failure, Stats};
