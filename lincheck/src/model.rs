//! The sequential specification a history is checked against (`Model`).

use std::fmt::Debug;
use std::hash::Hash;

use super::history::Operation;

/// A sequential specification of the object under test.
pub trait Model {
    /// The state of one partition. Hashed for memoisation, so keep it small.
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Debug;
    type Output: Clone + Debug;

    /// The state every partition starts from.
    fn init(&self) -> Self::State;

    /// Apply `input` to `state`. Returns the next state if `output` is what the specification
    /// allows (`None` output means unknown: accept any), or `None` if the observed output is
    /// impossible from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Operations that never change the state. An indeterminate read-only operation constrains
    /// nothing and is dropped before the search, which keeps the search small.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// Split a history into independent sub-histories (by key, for a key-value store), each with a
    /// label for reports. The default is one partition holding everything.
    fn partition(
        &self,
        history: &[Operation<Self::Input, Self::Output>],
    ) -> Vec<(String, Vec<usize>)> {
        vec![(String::from("all"), (0..history.len()).collect())]
    }
}
