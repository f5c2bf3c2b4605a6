//! `Ready`: what the core hands the driver after an input. The order in which its parts must be
//! handled is the contract in [`crate::raw_node`]; the driver's plan of it is
//! `driver/plan.rs`. A type of its own, below both the core (which fills it) and `RawNode`
//! (which hands it out), so that neither layer reaches into the other.

use crate::types::*;

/// Everything the driver must do after feeding the core. See the module docs for the order.
#[derive(Debug, Default, Clone)]
pub struct Ready {
    /// Volatile state (role, leader) when it changed since the last `Ready`; nothing to persist.
    pub soft_state: Option<SoftState>,
    /// Term, vote and commit index when they changed; persist before sending `messages`.
    pub hard_state: Option<HardState>,
    /// Entries to append to stable storage before sending `messages` (except those that
    /// may precede it; see the module docs).
    pub entries: Vec<Entry>,
    /// A snapshot received from the leader, to install in storage and in the state machine.
    pub snapshot: Option<Snapshot>,
    /// Entries known committed, to apply in order. Conf changes among them take effect in the
    /// core at `advance()`.
    pub committed_entries: Vec<Entry>,
    /// Messages to send to peers (after persisting, except those that may precede it).
    pub messages: Vec<Message>,
    /// Linearizable read points confirmed since the last `Ready`, each with its request's context:
    /// answer the read once the applied index reaches the read state's index.
    pub read_states: Vec<ReadState>,
    /// What the lease tracker needs to know (heartbeat rounds sent and acknowledged by a quorum,
    /// leadership gained, an own-term entry committed, a lease revoked); the core has no clock, so the
    /// driver stamps them with the time (see `lease`).
    pub lease_events: Vec<LeaseEvent>,
}
