//! Majority arithmetic, kept apart so it can be tested exhaustively.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::NodeId;

/// The size of a majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The largest value that at least a majority of `values` are `>=` to. With no voters, 0.
pub fn majority_value(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable_by(|a, b| b.cmp(a));
    v[majority(v.len()) - 1]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let (mut yes, mut no) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    let q = majority(voters.len());
    if yes >= q {
        VoteResult::Won
    } else if no >= q || voters.len() - no < q {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn majority_value_examples() {
        assert_eq!(majority_value([5, 3, 9].into_iter()), 5);
        assert_eq!(majority_value([5, 3, 9, 1].into_iter()), 3);
        assert_eq!(majority_value([7].into_iter()), 7);
        assert_eq!(majority_value(std::iter::empty()), 0);
    }

    proptest! {
        /// The answer is replicated on a majority and no larger value is.
        #[test]
        fn majority_value_is_the_quorum_maximum(v in proptest::collection::vec(0u64..50, 1..8)) {
            let m = majority_value(v.iter().copied());
            let q = majority(v.len());
            prop_assert!(v.iter().filter(|&&x| x >= m).count() >= q);
            prop_assert!(v.iter().filter(|&&x| x > m).count() < q);
        }

        #[test]
        fn vote_result_is_consistent(n in 1usize..8, yes in 0usize..8, no in 0usize..8) {
            let voters: BTreeSet<NodeId> = (1..=n as u64).collect();
            let mut votes = BTreeMap::new();
            for id in voters.iter().take(yes.min(n)) { votes.insert(*id, true); }
            for id in voters.iter().skip(yes.min(n)).take(no) { votes.insert(*id, false); }
            let y = votes.values().filter(|v| **v).count();
            let r = vote_result(&voters, &votes);
            prop_assert_eq!(r == VoteResult::Won, y >= majority(n));
        }
    }
}
