//! The order in which the driver handles a `Ready`, as data.
//!
//! [`plan`] turns a [`Ready`] (and the three facts about the node it needs) into the ordered
//! list of [`Step`]s that [`Driver::handle_ready`](super::Driver) then executes one by one,
//! doing nothing in between. The order is where the safety lives — what may leave before our
//! own fsync, when lease readers see a commit index, what may be applied before the write — so
//! it is kept in one pure function that the tests below check without any I/O, the way
//! openraft's engine tests check its commands. The driver, and through it the simulator that
//! runs the driver on every node, cannot follow any other order.
//!
//! The data of the `Ready` moves into the steps (no entry or message is copied).

use crate::config::UnsafeKnobs;
use crate::ready::Ready;
use crate::types::{
    Entry, HardState, Index, LeaseEvent, Message, ReadState, Role, Snapshot, SoftState,
};

/// One thing the driver does while handling a `Ready`.
#[derive(Debug)]
pub(crate) enum Step {
    /// Log and export a role or leader change, tell the lease, fail reads this node can no
    /// longer confirm.
    NoteSoftState(SoftState),
    /// Install a snapshot received from the leader in storage and in the state machine.
    InstallSnapshot(Snapshot),
    /// Publish the core's status (term, role, commit index) to the handles. Lease readers read
    /// at the published commit index.
    PublishStatus,
    /// Hand to the transport the messages that may leave before our own durable write:
    /// appends, heartbeats and snapshots promise nothing about our disk, so the followers'
    /// writes overlap ours (see `MessageBody::may_precede_persist`).
    SendBeforePersist(Vec<Message>),
    /// Hand to the transport the rest — votes, acknowledgements, responses: they promise state
    /// that must be durable first.
    SendAfterPersist(Vec<Message>),
    /// Feed the core's lease events (heartbeat rounds sent and confirmed) to the lease, with
    /// the anchor stamped before the first step: a round counts from when it was sent.
    ObserveLease(Vec<LeaseEvent>),
    /// Apply committed entries to the state machine and answer their writers.
    Apply(Vec<Entry>),
    /// Durably write the hard state and the new entries (one fsync).
    Persist {
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    },
    /// Publish the index a snapshot brought the state machine to (as applying would).
    PublishSnapshotApplied(Index),
    /// Answer the ReadIndex requests confirmed in this `Ready`.
    AnswerReads(Vec<ReadState>),
    /// Tell the core this `Ready` is done; then publish the status it now reports, answer the
    /// membership changes that took effect, and compact the log when due.
    Advance,
}

/// The steps that handle `rd`, in order.
///
/// `role` is the core's role now (the one that produced `rd`); `stored_last` is the last index
/// in log storage before `rd` is handled; `knobs` may break the order on purpose, only for the
/// tests that show the checkers catch it.
pub(crate) fn plan(rd: Ready, role: Role, stored_last: Index, knobs: UnsafeKnobs) -> Vec<Step> {
    let Ready {
        soft_state,
        hard_state,
        entries,
        snapshot,
        committed_entries: mut committed,
        messages,
        read_states,
        lease_events,
    } = rd;
    let mut steps = Vec::with_capacity(12);
    if let Some(ss) = soft_state {
        steps.push(Step::NoteSoftState(ss));
    }
    // Installing a snapshot replaces the log: storage then ends at the snapshot's index.
    let mut stored = stored_last;
    let snapshot_index = snapshot.as_ref().map(|s| s.meta.index);
    if let Some(snap) = snapshot {
        stored = snap.meta.index;
        steps.push(Step::InstallSnapshot(snap));
    }
    // Appends and heartbeats leave before our own fsync, so the followers' disk writes overlap
    // it. The loop handles no acknowledgement until this Ready is done, so commit never
    // outruns our copy.
    let (early, late): (Vec<_>, Vec<_>) = messages
        .into_iter()
        .partition(|m| knobs.send_all_before_persist || m.body.may_precede_persist());
    // A message leaving now carries this Ready's commit index to followers, which may apply an
    // entry and answer its writer before our own fsync ends; a lease read here after that
    // answer must see the entry. So the index is published before the first message that
    // carries it leaves.
    if !knobs.publish_commit_after_send {
        steps.push(Step::PublishStatus);
    }
    if !early.is_empty() {
        steps.push(Step::SendBeforePersist(early));
    }
    // Heartbeat rounds count from their anchor, so they need nothing from this Ready's write.
    steps.push(Step::ObserveLease(lease_events));
    // A leader answers its clients before its next fsync rather than after it: committed
    // entries already in local storage were durable on a quorum before they could commit, so
    // they need nothing from this Ready's write. Entries committed in this very Ready on our
    // own unwritten copy (a single-voter cluster) wait for the write. A follower applies after
    // persisting, so its acknowledgement does not wait for its apply.
    let split = if role == Role::Leader {
        committed.partition_point(|e| e.index <= stored)
    } else {
        0
    };
    let after_write = committed.split_off(split);
    if !committed.is_empty() {
        steps.push(Step::Apply(committed));
    }
    steps.push(Step::Persist {
        hard_state,
        entries,
    });
    steps.push(Step::PublishStatus);
    if !late.is_empty() {
        steps.push(Step::SendAfterPersist(late));
    }
    if !after_write.is_empty() {
        steps.push(Step::Apply(after_write));
    }
    if let Some(idx) = snapshot_index {
        steps.push(Step::PublishSnapshotApplied(idx));
    }
    if !read_states.is_empty() {
        steps.push(Step::AnswerReads(read_states));
    }
    steps.push(Step::Advance);
    steps
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
