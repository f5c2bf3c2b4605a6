//! What a run reports: a `Failure` (with its trace and how to rerun it), the `Stats` that show
//! what a run or a sweep exercised, and the one-line rendering of messages for traces.

use std::fmt;

use deimos_raft::{Message, MessageBody};

use super::config::MS;

/// Why a run failed, with enough context to debug it; rerun with `DEIMOS_SIM_SEED=<seed>`.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub nodes: usize,
    pub at_us: u64,
    pub violation: String,
    pub trace: Vec<String>,
    pub rerun: &'static str,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} ({} nodes) failed at t={}.{:03}ms: {}",
            self.seed,
            self.nodes,
            self.at_us / MS,
            self.at_us % MS,
            self.violation
        )?;
        if !self.trace.is_empty() {
            writeln!(f, "last {} events:", self.trace.len())?;
            for line in &self.trace {
                writeln!(f, "  {line}")?;
            }
        }
        write!(f, "rerun: DEIMOS_SIM_SEED={} {}", self.seed, self.rerun)
    }
}

/// Counters that show a run (or a sweep) exercised what it claims to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub events: u64,
    pub messages: u64,
    pub leaders: u64,
    pub crashes: u64,
    pub compactions: u64,
    pub snapshots_installed: u64,
    /// Snapshots installed by a node not in the snapshot's configuration (a member joining).
    pub snapshots_without_self: u64,
    pub ops_ok: u64,
    pub ops_indeterminate: u64,
    pub reads_ok: u64,
    /// Operations whose client gave up (a subset of the indeterminate ones; the rest were still
    /// in flight when the run ended).
    pub timeouts: u64,
    /// Membership changes the leader accepted.
    pub conf_changes: u64,
    /// Reads answered under a valid leader lease (no ReadIndex round).
    pub lease_reads: u64,
    /// `LeaseRead`s submitted to the node that was leader at the time, and how many of those
    /// the lease answered (the rest fell back to ReadIndex).
    pub lease_reads_on_leader: u64,
    pub lease_hits_on_leader: u64,
    /// Leaderships that reached a usable lease, and the longest wait for one, measured on the
    /// new leader's clock from becoming leader.
    pub leases_regained: u64,
    pub max_lease_regain_us: u64,
    /// Crashes inside a persist, after the driver sent what it sends first (also in `crashes`).
    pub mid_ready_crashes: u64,
    /// Of those, crashes of a node that had answered clients in the same step (the driver's
    /// early apply on a leader answers before its write).
    pub crashes_after_early_answers: u64,
    pub sim_us: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.messages += o.messages;
        self.leaders += o.leaders;
        self.crashes += o.crashes;
        self.mid_ready_crashes += o.mid_ready_crashes;
        self.crashes_after_early_answers += o.crashes_after_early_answers;
        self.compactions += o.compactions;
        self.snapshots_installed += o.snapshots_installed;
        self.snapshots_without_self += o.snapshots_without_self;
        self.ops_ok += o.ops_ok;
        self.ops_indeterminate += o.ops_indeterminate;
        self.reads_ok += o.reads_ok;
        self.timeouts += o.timeouts;
        self.conf_changes += o.conf_changes;
        self.lease_reads += o.lease_reads;
        self.lease_reads_on_leader += o.lease_reads_on_leader;
        self.lease_hits_on_leader += o.lease_hits_on_leader;
        self.leases_regained += o.leases_regained;
        self.max_lease_regain_us = self.max_lease_regain_us.max(o.max_lease_regain_us);
        self.sim_us += o.sim_us;
    }
}

/// One line per message for traces.
pub fn brief(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "Append(prev {prev_index}/{prev_term}, {} ents{}, commit {commit})",
            entries.len(),
            entries
                .last()
                .map(|e| format!(" ..{}/{}", e.index, e.term))
                .unwrap_or_default()
        ),
        MessageBody::InstallSnapshot { snapshot } => {
            format!(
                "InstallSnapshot({}/{})",
                snapshot.meta.index, snapshot.meta.term
            )
        }
        MessageBody::Propose { entries } => format!("Propose({} ents)", entries.len()),
        b => format!("{b:?}"),
    };
    format!("{}->{} t{} {body}", m.from, m.to, m.term)
}
