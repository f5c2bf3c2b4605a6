//! Raft's safety properties (Figure 3 of the Raft paper), checked incrementally as the simulation
//! runs so that a violation is reported at the step that caused it, with the trace leading up to it.
//!
//! - Election safety: at most one leader per term, over the whole run.
//! - Log matching: checked through the stronger, incremental form "an (index, term) pair names one
//!   entry, and that entry always follows the same term at index - 1"; by induction over the
//!   contiguous logs this implies that logs agreeing on (index, term) agree on every earlier entry.
//!   A full pairwise scan of the persisted logs runs at the end as a cross-check.
//! - Leader completeness: an entry reported committed is in the log of every leader of a later term.
//! - State-machine safety: no two nodes apply different entries at the same index.
//! - Per node: entries are applied contiguously; the persisted term and commit index never
//!   decrease and the persisted vote never changes within a term.

use std::collections::{BTreeMap, HashMap};

use deimos_raft::{Entry, EntryPayload, HardState, Index, LogStorage, MemStorage, NodeId, Term};

/// A committed entry and an upper bound on the term in which it was committed.
#[derive(Debug, Clone)]
struct Committed {
    entry: Entry,
    /// The lowest current term of any node when it applied the entry. The committing leader's
    /// term is at most that (a node only learns of a commit from a leader of its term or earlier,
    /// and terms never decrease), so every leader of a term above it must hold the entry.
    term_bound: Term,
}

#[derive(Debug, Default)]
pub struct Invariants {
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) -> (payload, term of the entry at index - 1).
    entries: HashMap<(Index, Term), (EntryPayload, Term)>,
    committed: BTreeMap<Index, Committed>,
}

pub type Check = Result<(), String>;

impl Invariants {
    /// `node` is leader of `term` (seen in its soft state). Checks election safety and, the first
    /// time, leader completeness against everything committed so far.
    pub fn on_leader(&mut self, node: NodeId, term: Term, log: &MemStorage) -> Check {
        match self.leaders.get(&term) {
            Some(&other) if other != node => {
                return Err(format!(
                    "election safety: nodes {other} and {node} are both leaders of term {term}"
                ))
            }
            Some(_) => return Ok(()),
            None => {
                self.leaders.insert(term, node);
            }
        }
        for c in self.committed.values() {
            if c.term_bound < term {
                holds(node, term, log, &c.entry)?;
            }
        }
        Ok(())
    }

    /// `node` is about to append `entries` after an entry of term `prev_term`.
    pub fn on_append(&mut self, node: NodeId, mut prev_term: Term, entries: &[Entry]) -> Check {
        for e in entries {
            match self.entries.get(&(e.index, e.term)) {
                Some((payload, pt)) if *payload != e.payload || *pt != prev_term => {
                    return Err(format!(
                        "log matching: node {node} appends {e:?} after term {prev_term}, but \
                         ({}, {}) was {payload:?} after term {pt}",
                        e.index, e.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.entries
                        .insert((e.index, e.term), (e.payload.clone(), prev_term));
                }
            }
            prev_term = e.term;
        }
        Ok(())
    }

    /// `node`, at term `term`, applies `e`. Returns whether the entry is newly known committed,
    /// so that the caller can check it against the current leaders.
    pub fn on_apply(&mut self, node: NodeId, term: Term, e: &Entry) -> Result<bool, String> {
        match self.committed.get_mut(&e.index) {
            Some(c) if c.entry != *e => Err(format!(
                "state machine safety: node {node} applies {e:?} at {} where {:?} was applied",
                e.index, c.entry
            )),
            Some(c) => {
                let fresh = term < c.term_bound;
                c.term_bound = c.term_bound.min(term);
                Ok(fresh)
            }
            None => {
                self.committed.insert(
                    e.index,
                    Committed {
                        entry: e.clone(),
                        term_bound: term,
                    },
                );
                Ok(true)
            }
        }
    }

    /// After `on_apply` reported `e` newly committed: every leader of a later term must hold it.
    pub fn check_leader_has(
        &self,
        leader: NodeId,
        term: Term,
        log: &MemStorage,
        index: Index,
    ) -> Check {
        match self.committed.get(&index) {
            Some(c) if c.term_bound < term => holds(leader, term, log, &c.entry),
            _ => Ok(()),
        }
    }

    /// A node persists a new hard state; `prev` is what its disk held before.
    pub fn on_hard_state(node: NodeId, prev: &HardState, hs: &HardState) -> Check {
        if hs.term < prev.term {
            return Err(format!(
                "node {node}: persisted term went back from {} to {}",
                prev.term, hs.term
            ));
        }
        if hs.commit < prev.commit {
            return Err(format!(
                "node {node}: persisted commit went back from {} to {}",
                prev.commit, hs.commit
            ));
        }
        if hs.term == prev.term && prev.vote.is_some() && hs.vote != prev.vote {
            return Err(format!(
                "node {node}: changed its vote in term {} from {:?} to {:?}",
                hs.term, prev.vote, hs.vote
            ));
        }
        Ok(())
    }

    /// Full pairwise log matching over persisted logs (end of run cross-check).
    pub fn check_logs_match(logs: &[(NodeId, &MemStorage)]) -> Check {
        for (i, (a, la)) in logs.iter().enumerate() {
            for (b, lb) in &logs[i + 1..] {
                let lo = la.first_index().unwrap().max(lb.first_index().unwrap());
                let hi = la.last_index().unwrap().min(lb.last_index().unwrap());
                // The highest index in the common range where the terms agree ...
                let Some(top) = (lo..=hi)
                    .rev()
                    .find(|&k| la.term(k).ok() == lb.term(k).ok())
                else {
                    continue;
                };
                // ... and everything below it must be identical.
                if top >= lo {
                    let ea = la.entries(lo, top + 1, None).unwrap();
                    let eb = lb.entries(lo, top + 1, None).unwrap();
                    if let Some((x, y)) = ea.iter().zip(&eb).find(|(x, y)| x != y) {
                        return Err(format!(
                            "log matching: nodes {a} and {b} agree at index {top} but differ at {}: \
                             {x:?} vs {y:?}",
                            x.index
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Does `log` (the leader's) hold `e`? Compacted indexes are covered by a snapshot, which only
/// ever contains committed entries, so they count as held.
fn holds(node: NodeId, term: Term, log: &MemStorage, e: &Entry) -> Check {
    if e.index < log.first_index().unwrap() {
        return Ok(());
    }
    match log.term(e.index) {
        Ok(t) if t == e.term => Ok(()),
        got => Err(format!(
            "leader completeness: node {node}, leader of term {term}, lacks committed entry \
             {e:?} (its term at {} is {got:?})",
            e.index
        )),
    }
}
