//! A linearizability checker for client histories, used by the deterministic simulator and by the
//! cluster-level tests.
//!
//! Why it exists: the safety invariants the simulator checks inside Raft (election safety, log
//! matching, ...) say nothing about what clients observe. A read path bug (a stale leader answering
//! a read, a lease used past its expiry) keeps every Raft invariant intact and is only visible in the
//! history of client operations. This module decides whether such a history is linearizable.
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

use std::collections::HashSet;
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::marker::PhantomData;

/// A point in time of the history. Any monotone unit works (the simulator uses microseconds of
/// simulated global time); only the order matters.
pub type Time = u64;

/// One client operation as observed by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Which client issued it (only used in reports).
    pub client: u64,
    /// When the client sent the request.
    pub invoke: Time,
    /// When the client saw the response; `None` if it never did (timeout, crash): the operation may
    /// or may not have taken effect, at any time after `invoke`.
    pub complete: Option<Time>,
    pub input: I,
    /// The response. Must be `Some` when `complete` is `Some`; `None` means "unknown" and is
    /// accepted by any model step.
    pub output: Option<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation whose response the client saw.
    pub fn completed(client: u64, invoke: Time, complete: Time, input: I, output: O) -> Self {
        Operation {
            client,
            invoke,
            complete: Some(complete),
            input,
            output: Some(output),
        }
    }

    /// An operation whose outcome the client never learned.
    pub fn indeterminate(client: u64, invoke: Time, input: I) -> Self {
        Operation {
            client,
            invoke,
            complete: None,
            input,
            output: None,
        }
    }

    fn is_determinate(&self) -> bool {
        self.complete.is_some()
    }
}

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

/// The verdict on a history.
#[derive(Debug, Clone)]
pub enum Outcome<I, O> {
    Linearizable,
    NotLinearizable(Box<Violation<I, O>>),
    /// The search budget ran out on `partition` before a verdict.
    Unknown {
        partition: String,
    },
}

impl<I, O> Outcome<I, O> {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Outcome::Linearizable)
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, Outcome::NotLinearizable(_))
    }
}

/// Why a history is not linearizable, narrowed down to something a human can read.
#[derive(Debug, Clone)]
pub struct Violation<I, O> {
    /// The partition (key) whose sub-history fails.
    pub partition: String,
    /// The shortest failing prefix of that sub-history: the operations invoked up to `cut`, where
    /// those that completed after `cut` are shown as indeterminate. Dropping the last completion
    /// (`culprit`) makes it linearizable again.
    pub prefix: Vec<Operation<I, O>>,
    /// The earliest completion time at which the sub-history is already not linearizable.
    pub cut: Time,
    /// The operation(s) completing at `cut`: one of them observed something impossible.
    pub culprits: Vec<Operation<I, O>>,
    /// The longest sequence of operations of `prefix` that the search managed to linearize, in
    /// linearization order: where it got stuck is usually where the bug is.
    pub longest_linearization: Vec<Operation<I, O>>,
}

impl<I: Debug, O: Debug> fmt::Display for Violation<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history of {} is not linearizable (first at t={})",
            self.partition, self.cut
        )?;
        writeln!(f, "  culprit(s), completing at t={}:", self.cut)?;
        for op in &self.culprits {
            writeln!(f, "    {}", fmt_op(op))?;
        }
        writeln!(
            f,
            "  failing prefix ({} ops, by invocation):",
            self.prefix.len()
        )?;
        let skip = self.prefix.len().saturating_sub(40);
        if skip > 0 {
            writeln!(f, "    ... {skip} earlier ops omitted")?;
        }
        for op in &self.prefix[skip..] {
            writeln!(f, "    {}", fmt_op(op))?;
        }
        writeln!(
            f,
            "  longest linearization found ({} ops):",
            self.longest_linearization.len()
        )?;
        let skip = self.longest_linearization.len().saturating_sub(15);
        if skip > 0 {
            writeln!(f, "    ... {skip} earlier ops omitted")?;
        }
        for op in &self.longest_linearization[skip..] {
            writeln!(f, "    {}", fmt_op(op))?;
        }
        Ok(())
    }
}

fn fmt_op<I: Debug, O: Debug>(op: &Operation<I, O>) -> String {
    let done = match op.complete {
        Some(t) => t.to_string(),
        None => "?".into(),
    };
    match &op.output {
        Some(o) => format!(
            "c{} [{}, {}] {:?} -> {:?}",
            op.client, op.invoke, done, op.input, o
        ),
        None => format!(
            "c{} [{}, {}] {:?} -> ?",
            op.client, op.invoke, done, op.input
        ),
    }
}

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

enum Search {
    Ok,
    /// The longest linearization reached, as indices into the searched history.
    Fail(Vec<usize>),
    Exhausted,
}

/// A fixed-size bitset over operation indices, hashed together with the model state in the cache.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The operation type of a model's histories.
type OpOf<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// Wing–Gong search with Lowe's cache over one partition.
fn search<M: Model>(model: &M, ops: &[Operation<M::Input, M::Output>], budget: u64) -> Search {
    // Indeterminate read-only operations constrain nothing.
    let ops: Vec<(usize, &OpOf<M>)> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.is_determinate() || !model.is_read_only(&op.input))
        .collect();
    let n = ops.len();

    // Events: one call per op, one return per determinate op. Indeterminate ops complete at
    // +infinity, which we model by giving them no return event at all: nothing forces them to be
    // linearized, and they stay available until the end.
    // (time, is_return, op) — sorting puts calls before returns at equal times, so operations
    // that merely touch are treated as concurrent (the permissive reading for discrete clocks).
    let mut evs: Vec<(Time, bool, usize)> = Vec::with_capacity(2 * n);
    for (k, (_, op)) in ops.iter().enumerate() {
        evs.push((op.invoke, false, k));
        if let Some(c) = op.complete {
            evs.push((c.max(op.invoke), true, k));
        }
    }
    evs.sort();

    // Doubly linked list over events with sentinels: 0 = head, len+1 = tail.
    let len = evs.len();
    let head = 0usize;
    let tail = len + 1;
    let mut next: Vec<usize> = (1..=len + 2).collect();
    let mut prev: Vec<usize> = (0..len + 2).map(|i| i.wrapping_sub(1)).collect();
    next[tail] = tail;
    prev[head] = head;
    let mut ret_of = vec![usize::MAX; n];
    let mut call_of = vec![usize::MAX; n];
    for (pos, &(_, is_ret, k)) in evs.iter().enumerate() {
        if is_ret {
            ret_of[k] = pos + 1;
        } else {
            call_of[k] = pos + 1;
        }
    }
    let ev = |node: usize| evs[node - 1];

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, q) = (prev[x], next[x]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, q) = (prev[x], next[x]);
        next[p] = x;
        prev[q] = x;
    };

    let mut remaining = ops.iter().filter(|(_, op)| op.is_determinate()).count();
    let mut lin = Bits::new(n);
    let mut cache: HashSet<(Bits, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut best: Vec<usize> = Vec::new();
    let mut steps = 0u64;
    let mut entry = next[head];

    loop {
        if remaining == 0 {
            return Search::Ok;
        }
        steps += 1;
        if steps > budget {
            return Search::Exhausted;
        }
        let backtrack = if entry == tail {
            true
        } else {
            let (_, is_ret, k) = ev(entry);
            if is_ret {
                true
            } else {
                let op = ops[k].1;
                let mut moved = false;
                if let Some(ns) = model.step(&state, &op.input, op.output.as_ref()) {
                    let mut lin2 = lin.clone();
                    lin2.set(k);
                    if cache.insert((lin2.clone(), ns.clone())) {
                        stack.push((entry, std::mem::replace(&mut state, ns)));
                        lin = lin2;
                        unlink(&mut next, &mut prev, entry);
                        if ret_of[k] != usize::MAX {
                            unlink(&mut next, &mut prev, ret_of[k]);
                            remaining -= 1;
                        }
                        if stack.len() > best.len() {
                            best = stack.iter().map(|&(e, _)| ops[ev(e).2].0).collect();
                        }
                        entry = next[head];
                        moved = true;
                    }
                }
                if !moved {
                    entry = next[entry];
                }
                false
            }
        };
        if backtrack {
            let Some((call, s)) = stack.pop() else {
                return Search::Fail(best);
            };
            let k = ev(call).2;
            state = s;
            lin.clear(k);
            if ret_of[k] != usize::MAX {
                relink(&mut next, &mut prev, ret_of[k]);
                remaining += 1;
            }
            relink(&mut next, &mut prev, call);
            debug_assert_eq!(call_of[k], call);
            entry = next[call];
        }
    }
}

/// The sub-history as a client would have seen it had the test stopped at `cut`: operations
/// invoked after `cut` are gone, those completing after it are indeterminate.
fn prefix_at<I: Clone, O: Clone>(ops: &[Operation<I, O>], cut: Time) -> Vec<Operation<I, O>> {
    ops.iter()
        .filter(|op| op.invoke <= cut)
        .map(|op| match op.complete {
            Some(c) if c <= cut => op.clone(),
            _ => Operation {
                complete: None,
                output: None,
                ..op.clone()
            },
        })
        .collect()
}

/// Find the earliest completion time at which the partition is already not linearizable. This is a
/// binary search because the property is monotone: a linearization of a longer prefix, cut after
/// its last operation that is determinate in a shorter prefix, linearizes the shorter one.
fn minimise<M: Model>(
    model: &M,
    label: String,
    ops: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Option<Violation<M::Input, M::Output>> {
    let mut cuts: Vec<Time> = ops.iter().filter_map(|op| op.complete).collect();
    cuts.sort_unstable();
    cuts.dedup();
    // Invariant: prefix at cuts[hi] fails; prefix at cuts[lo - 1] (if any) passes.
    let (mut lo, mut hi) = (0usize, cuts.len().checked_sub(1)?);
    let fails = |cut: Time| -> Option<bool> {
        match search(model, &prefix_at(ops, cut), budget) {
            Search::Ok => Some(false),
            Search::Fail(_) => Some(true),
            Search::Exhausted => None,
        }
    };
    if !fails(cuts[hi])? {
        return None;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(cuts[mid])? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let cut = cuts[hi];
    let mut prefix = prefix_at(ops, cut);
    prefix.sort_by_key(|op| op.invoke);
    let culprits = ops
        .iter()
        .filter(|op| op.complete == Some(cut))
        .cloned()
        .collect();
    let longest_linearization = match search(model, &prefix, budget) {
        Search::Fail(best) => best.into_iter().map(|i| prefix[i].clone()).collect(),
        _ => Vec::new(),
    };
    Some(Violation {
        partition: label,
        prefix,
        cut,
        culprits,
        longest_linearization,
    })
}

// ---------------------------------------------------------------------------------------------
// The key-value register model.
// ---------------------------------------------------------------------------------------------

/// A client operation on a key-value store where every key is an independent register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvInput<K, V> {
    Read {
        key: K,
    },
    Write {
        key: K,
        value: V,
    },
    /// Set `key` to `new` if its current value is `expected` (`None`: the key is absent).
    Cas {
        key: K,
        expected: Option<V>,
        new: V,
    },
}

impl<K, V> KvInput<K, V> {
    pub fn key(&self) -> &K {
        match self {
            KvInput::Read { key } | KvInput::Write { key, .. } | KvInput::Cas { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOutput<V> {
    Read(Option<V>),
    Write,
    Cas(bool),
}

/// A map of registers, partitioned per key; each partition's state is the key's value.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel<K, V>(PhantomData<(K, V)>);

impl<K, V> KvModel<K, V> {
    pub fn new() -> Self {
        KvModel(PhantomData)
    }
}

impl<K, V> Model for KvModel<K, V>
where
    K: Clone + Debug + Ord,
    V: Clone + Debug + Eq + Hash,
{
    type State = Option<V>;
    type Input = KvInput<K, V>;
    type Output = KvOutput<V>;

    fn init(&self) -> Option<V> {
        None
    }

    fn step(
        &self,
        state: &Option<V>,
        input: &KvInput<K, V>,
        output: Option<&KvOutput<V>>,
    ) -> Option<Option<V>> {
        match (input, output) {
            (KvInput::Read { .. }, None) => Some(state.clone()),
            (KvInput::Read { .. }, Some(KvOutput::Read(v))) => (v == state).then(|| state.clone()),
            (KvInput::Write { value, .. }, None | Some(KvOutput::Write)) => {
                Some(Some(value.clone()))
            }
            (KvInput::Cas { expected, new, .. }, out) => {
                let ok = expected == state;
                match out {
                    None => Some(if ok { Some(new.clone()) } else { state.clone() }),
                    Some(KvOutput::Cas(claimed)) if *claimed == ok => {
                        Some(if ok { Some(new.clone()) } else { state.clone() })
                    }
                    Some(_) => None,
                }
            }
            _ => None,
        }
    }

    fn is_read_only(&self, input: &KvInput<K, V>) -> bool {
        matches!(input, KvInput::Read { .. })
    }

    fn partition(
        &self,
        history: &[Operation<KvInput<K, V>, KvOutput<V>>],
    ) -> Vec<(String, Vec<usize>)> {
        let mut by_key: std::collections::BTreeMap<&K, Vec<usize>> = Default::default();
        for (i, op) in history.iter().enumerate() {
            by_key.entry(op.input.key()).or_default().push(i);
        }
        by_key
            .into_iter()
            .map(|(k, v)| (format!("key {k:?}"), v))
            .collect()
    }
}

/// Convenience: check a key-value history.
pub fn check_kv<K, V>(
    history: &[Operation<KvInput<K, V>, KvOutput<V>>],
) -> Outcome<KvInput<K, V>, KvOutput<V>>
where
    K: Clone + Debug + Ord,
    V: Clone + Debug + Eq + Hash,
{
    check(&KvModel::new(), history)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Op = Operation<KvInput<u8, u32>, KvOutput<u32>>;

    fn w(c: u64, a: Time, b: Time, key: u8, value: u32) -> Op {
        Operation::completed(c, a, b, KvInput::Write { key, value }, KvOutput::Write)
    }
    fn r(c: u64, a: Time, b: Time, key: u8, v: Option<u32>) -> Op {
        Operation::completed(c, a, b, KvInput::Read { key }, KvOutput::Read(v))
    }
    fn cas(c: u64, a: Time, b: Time, key: u8, expected: Option<u32>, new: u32, ok: bool) -> Op {
        Operation::completed(
            c,
            a,
            b,
            KvInput::Cas { key, expected, new },
            KvOutput::Cas(ok),
        )
    }
    fn w_ind(c: u64, a: Time, key: u8, value: u32) -> Op {
        Operation::indeterminate(c, a, KvInput::Write { key, value })
    }

    fn ok(h: &[Op]) -> bool {
        check_kv(h).is_linearizable()
    }
    fn bad(h: &[Op]) -> bool {
        check_kv(h).is_violation()
    }

    #[test]
    fn empty_and_trivial() {
        assert!(ok(&[]));
        assert!(ok(&[r(1, 0, 1, 0, None)]));
        assert!(bad(&[r(1, 0, 1, 0, Some(3))]));
        assert!(ok(&[w(1, 0, 1, 0, 3), r(1, 2, 3, 0, Some(3))]));
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        let h = [
            w(1, 0, 10, 0, 1),
            w(1, 20, 30, 0, 2),
            r(2, 40, 50, 0, Some(1)),
        ];
        assert!(bad(&h));
        match check_kv(&h) {
            Outcome::NotLinearizable(v) => {
                assert_eq!(v.partition, "key 0");
                assert_eq!(v.cut, 50);
                assert_eq!(v.culprits, vec![h[2].clone()]);
                let report = v.to_string();
                assert!(report.contains("Read"), "{report}");
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        // The read overlaps the second write: both old and new values are fine.
        for v in [1, 2] {
            assert!(ok(&[
                w(1, 0, 10, 0, 1),
                w(1, 20, 40, 0, 2),
                r(2, 30, 50, 0, Some(v))
            ]));
        }
        // ... but not a value nobody wrote.
        assert!(bad(&[
            w(1, 0, 10, 0, 1),
            w(1, 20, 40, 0, 2),
            r(2, 30, 50, 0, Some(3))
        ]));
    }

    #[test]
    fn reads_must_not_go_back_in_time() {
        // Two reads concurrent with a write, but sequential with each other: new then old is bad.
        let h = [
            w(1, 0, 100, 0, 1),
            r(2, 10, 20, 0, Some(1)),
            r(3, 30, 40, 0, None),
        ];
        assert!(bad(&h));
        let h = [
            w(1, 0, 100, 0, 1),
            r(2, 10, 20, 0, None),
            r(3, 30, 40, 0, Some(1)),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn lost_write_is_rejected() {
        // A completed write that later reads never observe, with no other writer.
        let h = [
            w(1, 0, 10, 0, 1),
            w(2, 20, 30, 0, 2),
            r(3, 40, 50, 0, Some(1)),
            r(3, 60, 70, 0, Some(1)),
        ];
        assert!(bad(&h));
        // A write acknowledged and then read as absent.
        assert!(bad(&[w(1, 0, 10, 0, 1), r(3, 40, 50, 0, None)]));
    }

    #[test]
    fn indeterminate_writes_may_or_may_not_apply() {
        // Never applied.
        assert!(ok(&[
            w(1, 0, 10, 0, 1),
            w_ind(2, 20, 0, 2),
            r(3, 30, 40, 0, Some(1))
        ]));
        // Applied, possibly long after the client gave up.
        assert!(ok(&[
            w(1, 0, 10, 0, 1),
            w_ind(2, 20, 0, 2),
            r(3, 1000, 1010, 0, Some(2))
        ]));
        // Applied then overwritten, observed in between.
        assert!(ok(&[
            w(1, 0, 10, 0, 1),
            w_ind(2, 20, 0, 2),
            r(3, 30, 40, 0, Some(2)),
            w(1, 50, 60, 0, 3),
            r(3, 70, 80, 0, Some(3)),
        ]));
        // But it cannot take effect before it was invoked ...
        assert!(bad(&[
            w(1, 0, 10, 0, 1),
            r(3, 12, 15, 0, Some(2)),
            w_ind(2, 20, 0, 2)
        ]));
        // ... nor take effect twice.
        assert!(bad(&[
            w_ind(2, 0, 0, 2),
            r(3, 10, 20, 0, Some(2)),
            w(1, 30, 40, 0, 1),
            r(3, 50, 60, 0, Some(2)),
        ]));
    }

    #[test]
    fn cas_semantics() {
        assert!(ok(&[
            cas(1, 0, 10, 0, None, 1, true),
            r(2, 20, 30, 0, Some(1))
        ]));
        assert!(bad(&[cas(1, 0, 10, 0, Some(5), 1, true)]));
        assert!(ok(&[
            cas(1, 0, 10, 0, Some(5), 1, false),
            r(2, 20, 30, 0, None)
        ]));
        // Two sequential CAS from the same expected value cannot both succeed.
        let h = [
            w(1, 0, 10, 0, 1),
            cas(1, 20, 30, 0, Some(1), 2, true),
            cas(2, 40, 50, 0, Some(1), 3, true),
        ];
        assert!(bad(&h));
        // Concurrent ones cannot either: only one sees 1.
        let h = [
            w(1, 0, 10, 0, 1),
            cas(1, 20, 50, 0, Some(1), 2, true),
            cas(2, 20, 50, 0, Some(1), 3, true),
        ];
        assert!(bad(&h));
        let h = [
            w(1, 0, 10, 0, 1),
            cas(1, 20, 50, 0, Some(1), 2, true),
            cas(2, 20, 50, 0, Some(1), 3, false),
        ];
        assert!(ok(&h));
        // An indeterminate CAS can explain a value.
        let h = [
            w(1, 0, 10, 0, 1),
            Operation::indeterminate(
                2,
                20,
                KvInput::Cas {
                    key: 0,
                    expected: Some(1),
                    new: 7,
                },
            ),
            r(3, 30, 40, 0, Some(7)),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn keys_are_independent() {
        // Each key alone is fine; together too (locality).
        let h = [
            w(1, 0, 10, 0, 1),
            w(1, 0, 10, 1, 2),
            r(2, 20, 30, 0, Some(1)),
            r(2, 20, 30, 1, Some(2)),
        ];
        assert!(ok(&h));
        // A violation on one key is reported with that key.
        let h = [
            w(1, 0, 10, 0, 1),
            w(1, 0, 10, 1, 2),
            r(2, 20, 30, 0, Some(1)),
            r(2, 20, 30, 1, Some(1)),
        ];
        match check_kv(&h) {
            Outcome::NotLinearizable(v) => assert_eq!(v.partition, "key 1"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        // The read is invoked at the write's completion time: permissive reading accepts either.
        assert!(ok(&[w(1, 0, 10, 0, 1), r(2, 10, 20, 0, None)]));
        assert!(bad(&[w(1, 0, 10, 0, 1), r(2, 11, 20, 0, None)]));
    }

    #[test]
    fn minimal_prefix_is_reported() {
        // Many fine ops, then one stale read, then more fine ops.
        let mut h = Vec::new();
        for i in 0..20u32 {
            let t = u64::from(i) * 100;
            h.push(w(1, t, t + 10, 0, i));
            h.push(r(2, t + 20, t + 30, 0, Some(i)));
        }
        h.push(r(3, 2500, 2510, 0, Some(3)));
        for i in 20..30u32 {
            let t = u64::from(i) * 100 + 1000;
            h.push(w(1, t, t + 10, 0, i));
        }
        match check_kv(&h) {
            Outcome::NotLinearizable(v) => {
                assert_eq!(v.cut, 2510);
                assert_eq!(v.culprits.len(), 1);
                assert_eq!(v.culprits[0].invoke, 2500);
                assert!(v.prefix.iter().all(|op| op.invoke <= 2510));
            }
            o => panic!("{o:?}"),
        }
    }

    /// The simulator checks histories of thousands of operations per key; the memoised search
    /// must stay near-linear on them (bounded overlap, some indeterminate writes).
    #[test]
    fn long_histories_are_checked_quickly() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut reg = None;
        let mut h = Vec::new();
        for i in 0..3_000u32 {
            let point = 1_000 + 10 * u64::from(i);
            let (a, b) = (point - rnd(30), point + rnd(30));
            let c = u64::from(i % 5);
            match rnd(20) {
                0..=9 => h.push(r(c, a, b, 0, reg)),
                10..=18 => {
                    reg = Some(i);
                    if rnd(20) == 0 {
                        h.push(w_ind(c, a, 0, i));
                    } else {
                        h.push(w(c, a, b, 0, i));
                    }
                }
                _ => h.push(w_ind(c, a, 0, 1_000_000 + i)), // never took effect
            }
        }
        let start = std::time::Instant::now();
        assert!(ok(&h));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn budget_gives_unknown() {
        let mut h = Vec::new();
        for i in 0..16u32 {
            h.push(w_ind(u64::from(i), 0, 0, i));
        }
        h.push(r(99, 10, 20, 0, Some(1000)));
        assert!(matches!(
            check_with_budget(&KvModel::new(), &h, 10),
            Outcome::Unknown { .. }
        ));
        assert!(check_kv(&h).is_violation());
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        /// A random program over 3 keys.
        fn program() -> impl Strategy<Value = Vec<(u8, u8, u32)>> {
            prop::collection::vec((0u8..3, 0u8..3, 0u32..4), 1..40)
        }

        /// Run `prog` sequentially, place each op's linearization point at 10*i, and widen its
        /// interval around that point by the given random amounts. Some ops become indeterminate
        /// (whether or not they took effect); some extra writes that never took effect are added.
        fn history(prog: &[(u8, u8, u32)], widen: &[(u64, u64, u8)]) -> Vec<Op> {
            let mut regs: [Option<u32>; 3] = [None; 3];
            let mut h = Vec::new();
            for (i, &(kind, key, v)) in prog.iter().enumerate() {
                let (before, after, flag) = widen[i % widen.len()];
                let point = 1000 + 10 * i as u64;
                let (a, b) = (point - before.min(point), point + after);
                let value = i as u32 * 10 + v;
                let reg = &mut regs[key as usize];
                let (input, output) = match kind {
                    0 => (KvInput::Read { key }, KvOutput::Read(*reg)),
                    1 => {
                        *reg = Some(value);
                        (KvInput::Write { key, value }, KvOutput::Write)
                    }
                    _ => {
                        // Expect the right value half the time.
                        let expected = if v % 2 == 0 { *reg } else { Some(v) };
                        let ok = expected == *reg;
                        if ok {
                            *reg = Some(value);
                        }
                        (
                            KvInput::Cas {
                                key,
                                expected,
                                new: value,
                            },
                            KvOutput::Cas(ok),
                        )
                    }
                };
                let c = i as u64 % 4;
                if flag % 5 == 0 {
                    h.push(Operation::indeterminate(c, a, input));
                } else {
                    h.push(Operation::completed(c, a, b, input, output));
                }
                if flag % 7 == 0 {
                    // A write that timed out and never took effect.
                    h.push(w_ind(9, a, key, 1_000_000 + i as u32));
                }
            }
            h
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(150))]

            #[test]
            fn sequential_executions_with_overlap_are_accepted(
                prog in program(),
                widen in prop::collection::vec((0u64..40, 0u64..40, any::<u8>()), 1..40),
            ) {
                let h = history(&prog, &widen);
                let out = check_kv(&h);
                prop_assert!(out.is_linearizable(), "{:?}", out);
            }

            #[test]
            fn corrupted_sequential_read_is_rejected(
                prog in program(),
                victim in any::<prop::sample::Index>(),
            ) {
                // No overlap, nothing indeterminate: the only linearization is the real order, so
                // a read returning anything else must be rejected.
                let mut h = history(&prog, &[(0, 0, 1)]);
                let reads: Vec<usize> = h.iter().enumerate()
                    .filter(|(_, op)| matches!(op.input, KvInput::Read { .. }))
                    .map(|(i, _)| i).collect();
                prop_assume!(!reads.is_empty());
                let i = reads[victim.index(reads.len())];
                let wrong = match &h[i].output {
                    Some(KvOutput::Read(Some(v))) => if v % 2 == 0 { None } else { Some(v + 1) },
                    _ => Some(12345),
                };
                h[i].output = Some(KvOutput::Read(wrong));
                prop_assert!(check_kv(&h).is_violation());
            }
        }
    }
}
