//! The search for a linearization (Wing & Gong, with Lowe's memoisation) over one partition, and
//! the minimisation of a failing partition to its shortest failing prefix.

use std::collections::HashSet;

use super::history::{Operation, Time, Violation};
use super::model::Model;

pub(super) enum Search {
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
pub(super) fn search<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Search {
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
pub(super) fn minimise<M: Model>(
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
