//! A linearizability checker for client histories, used by the deterministic simulator and by the
//! cluster-level tests.
//!
//! Why it exists: the safety invariants the simulator checks inside Raft (election safety, log
//! matching, ...) say nothing about what clients observe. A read path bug (a stale leader answering
//! a read, a lease used past its expiry) keeps every Raft invariant intact and is only visible in the
//! history of client operations. This crate decides whether such a history is linearizable.
//!
//! The algorithm is Wing & Gong's search for a linearization, with Lowe's memoisation: a
//! configuration (set of operations already linearized, model state) that was explored once can
//! never lead anywhere new, so it is cached and skipped. Histories are first split by a model
//! supplied partition (per key for the key-value register), which is sound because linearizability
//! is compositional (Herlihy & Wing's locality / P-compositionality) and turns one exponential search
//! into many small ones.
//!
//! Indeterminate operations (a client timed out: the operation may or may not have taken effect) are
//! given a completion time of +infinity and are optional: the search succeeds once every *completed*
//! operation is linearized, whether or not the indeterminate ones were used.
//!
//! The module has no dependencies beyond `std` so it can be reused by any test crate.
//!
//! Layout: `history` holds what the checker reads and reports (operations, the verdict, the
//! violation report), `model` the sequential specification a history is checked against, `kv` the
//! key-value register model, and `search` the search and the minimisation of a failing history.

mod history;
mod kv;
mod model;
mod search;
#[cfg(test)]
mod tests;

pub use history::{Operation, Outcome, Time, Violation};
pub use kv::{check_kv, KvInput, KvModel, KvOutput};
pub use model::Model;

use search::{minimise, search, Search};

/// Check `history` against `model` with no search budget.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
) -> Outcome<M::Input, M::Output> {
    check_with_budget(model, history, u64::MAX)
}

/// Check `history` against `model`, giving up with [`Outcome::Unknown`] after `budget` search
/// steps in any one partition (a guard for tests that must finish).
pub fn check_with_budget<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Outcome<M::Input, M::Output> {
    for (label, idx) in model.partition(history) {
        let sub: Vec<Operation<M::Input, M::Output>> =
            idx.iter().map(|&i| history[i].clone()).collect();
        match search(model, &sub, budget) {
            Search::Ok => {}
            Search::Exhausted => return Outcome::Unknown { partition: label },
            Search::Fail(_) => {
                return match minimise(model, label.clone(), &sub, budget) {
                    Some(v) => Outcome::NotLinearizable(Box::new(v)),
                    None => Outcome::Unknown { partition: label },
                };
            }
        }
    }
    Outcome::Linearizable
}
