#![deny(missing_docs)]
//! Deimos's consensus layer: a sans-IO Raft core, the async driver that runs it, and the leader
//! lease service.
//!
//! The core ([`RawNode`]) is a pure state machine in the style of etcd's raft: feed it `tick()`,
//! `step(msg)`, proposals and read requests; take a [`Ready`] describing what to persist, send and
//! apply; do it; call `advance()`. It reads no clock and does no I/O, so the simulator in
//! `tests/` can drive many nodes deterministically from one seed.
//!
//! Driving a single-voter node by hand, as the driver does (persist, then send, then apply,
//! then `advance`):
//!
//! ```
//! use deimos_raft::{Config, ConfState, EntryPayload, LogStorage, MemStorage, RawNode, Role};
//!
//! let storage = MemStorage::new(ConfState::new([1]));
//! let mut node = RawNode::new(&Config::new(1), storage).unwrap();
//!
//! // Persist what a Ready asks for; return the data of the entries it commits.
//! fn handle(node: &mut RawNode<MemStorage>) -> Vec<Vec<u8>> {
//!     let mut applied = Vec::new();
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         if let Some(snap) = &rd.snapshot {
//!             node.storage_mut().apply_snapshot(snap).unwrap();
//!         }
//!         node.storage_mut().persist(rd.hard_state.as_ref(), &rd.entries).unwrap();
//!         assert!(rd.messages.is_empty(), "a single voter has no one to talk to");
//!         for e in &rd.committed_entries {
//!             if let EntryPayload::Normal(data) = &e.payload {
//!                 applied.push(data.clone());
//!             }
//!         }
//!         node.advance();
//!     }
//!     applied
//! }
//!
//! // Time passes in ticks; after an election timeout the lone voter elects itself.
//! while node.role() != Role::Leader {
//!     node.tick();
//!     handle(&mut node);
//! }
//! node.propose(b"x".to_vec()).unwrap();
//! assert_eq!(handle(&mut node), vec![b"x".to_vec()]);
//! let st = node.status();
//! assert_eq!(st.commit, st.last_index, "the entry is committed and nothing else is pending");
//! assert_eq!(st.applied, st.commit);
//! ```

pub mod clock;
pub mod config;
pub mod driver;
/// [`RaftError`]: why the core refused an input.
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
