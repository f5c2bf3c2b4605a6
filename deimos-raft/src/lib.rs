//! Deimos's consensus layer: a sans-IO Raft core, the async driver that runs it, and the leader
//! lease service.
//!
//! The core ([`RawNode`]) is a pure state machine in the style of etcd's raft: feed it `tick()`,
//! `step(msg)`, proposals and read requests; take a [`Ready`] describing what to persist, send and
//! apply; do it; call `advance()`. It reads no clock and does no I/O, so the simulator in
//! `tests/` can drive many nodes deterministically from one seed.

pub mod clock;
pub mod config;
pub mod driver;
pub mod error;
pub mod ids;
pub mod lease;
pub mod reconfig;
pub mod storage;
pub mod types;

pub use clock::{Clock, ManualClock, MonotonicClock, ScaledClock};
pub use config::Config;
pub use error::RaftError;
pub use lease::{LeaseConfig, LeaseReader, LeaseState, LeaseTracker};
pub use storage::{
    BackendFailure, InitialState, LogStorage, MemStorage, StorageError, StorageResult,
};
pub use types::*;

pub(crate) mod core;
pub(crate) mod log;
pub(crate) mod quorum;
pub mod raw_node;
pub mod ready;
pub mod status;
pub(crate) mod tracker;

pub use core::{Refusal, RefusalCounts, MAX_INDEX, MAX_READ_CTX, MAX_TERM};
pub use raw_node::RawNode;
pub use ready::Ready;
pub use status::{PeerProgress, ReplicationState, Status};
