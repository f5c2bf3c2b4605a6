//! Node configuration and its validation.

use crate::error::RaftError;
use crate::types::NodeId;

/// Switches that break Raft on purpose, so that tests can show the checkers catch the breakage.
/// Never set in production; the server has no flag for them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsafeKnobs {
    /// Commit entries of earlier terms by counting replicas (violates Raft §5.4.2).
    pub weaken_commit_rule: bool,
    /// Grant votes without the up-to-date log check (violates leader completeness).
    pub skip_log_check_on_vote: bool,
    /// The driver sends every message of a `Ready` before persisting it, votes and
    /// acknowledgements included (violates persist-before-send; a crash then loses what a
    /// quorum was told is durable).
    pub send_all_before_persist: bool,
    /// The driver publishes a Ready's commit index to lease readers only after its messages
    /// (which carry that index to followers) have left — the old order: a follower can then
    /// apply and acknowledge a write that a lease read on the leader does not yet see.
    pub publish_commit_after_send: bool,
}

/// How one Raft node behaves: its identity, timing in ticks, flow control and the safety options.
/// Checked by [`Config::validate`] before a node is built.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id; never 0 (reserved for "none").
    pub id: NodeId,
    /// Minimum election timeout in ticks; the effective timeout is drawn from
    /// `[election_tick, 2 * election_tick)` whenever the timer resets.
    pub election_tick: usize,
    /// Ticks between heartbeat rounds.
    pub heartbeat_tick: usize,
    /// Soft limit on the bytes of entries in one append message.
    pub max_size_per_msg: u64,
    /// How many append messages may be in flight to one follower (the pipelining window).
    pub max_inflight_msgs: usize,
    /// Run a pre-vote round before bumping the term, so a partitioned node cannot disrupt a live
    /// leader when it rejoins.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and a
    /// follower that heard from a live leader within the minimum election timeout grants no vote
    /// (leader stickiness). The leader lease depends on the second half; `lease/mod.rs` refuses to run
    /// without it.
    pub check_quorum: bool,
    /// Seed for the election-timeout randomisation; different per node, fixed in simulation.
    pub seed: u64,
    /// Index the state machine has applied (restart); committed entries after it are re-delivered.
    pub applied: u64,
    /// Forward proposals made on a follower to the leader instead of failing with `NotLeader`.
    pub forward_proposals: bool,
    #[doc(hidden)]
    pub unsafe_knobs: UnsafeKnobs,
}

impl Config {
    /// Defaults for node `id`: election after 10 ticks, heartbeat every tick, 1 MiB appends, a
    /// window of 256, pre-vote, check-quorum and proposal forwarding on.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            seed: id,
            applied: 0,
            forward_proposals: true,
            unsafe_knobs: UnsafeKnobs::default(),
        }
    }

    /// Refuses a configuration the core cannot run: id 0, a zero heartbeat, an election timeout
    /// not longer than the heartbeat, an empty in-flight window. (Check-quorum, which the lease
    /// needs, is checked by the lease's own configuration.)
    pub fn validate(&self) -> Result<(), RaftError> {
        if self.id == 0 {
            return Err(RaftError::InvalidConfig("node id 0 is reserved".into()));
        }
        if self.heartbeat_tick == 0 {
            return Err(RaftError::InvalidConfig(
                "heartbeat_tick must be > 0".into(),
            ));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(RaftError::InvalidConfig(
                "election_tick must be greater than heartbeat_tick".into(),
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(RaftError::InvalidConfig(
                "max_inflight_msgs must be > 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_timing() {
        let mut c = Config::new(1);
        assert!(c.validate().is_ok());
        c.election_tick = 1;
        assert!(c.validate().is_err());
        let mut c = Config::new(0);
        c.election_tick = 10;
        assert!(c.validate().is_err());
    }
}
