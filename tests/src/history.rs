//! A thread-safe recorder of client operations for the linearizability checker.
//!
//! Every operation gets an invoke time taken just before the request is sent and a complete
//! time taken just after the response is read, both from one monotonic clock (microseconds since
//! the recorder was created), so real-time order between clients is preserved. An operation
//! whose outcome the client cannot know (timeout, connection dropped after sending, server
//! "request timed out") is recorded as indeterminate: `complete: None`, which the checker treats
//! as "may have taken effect at any time after invoke, or never".

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use deimos_lincheck::{self as lincheck, KvInput, KvOutput, Operation, Outcome};

pub type Key = String;
pub type Value = String;
pub type Op = Operation<KvInput<Key, Value>, KvOutput<Value>>;

/// How an operation was sent, for the verdict's counts and for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain GET: the server picks lease or ReadIndex.
    Get,
    /// `?quorum=true`: through the Raft log (a barrier entry).
    QuorumGet,
    /// `?consistency=local`: stale reads allowed (only for the negative test).
    LocalGet,
    Put,
    Cas,
}

/// What the harness knows about an operation beyond what the checker needs.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    /// Node index the request was sent to.
    pub node: usize,
    /// `X-Deimos-Read` of a read's response (`lease`, `read-index`, `quorum`, `local`).
    pub read_mode: Option<String>,
    /// `X-Raft-Term` of the response, when there was one.
    pub term: Option<u64>,
}

#[derive(Default)]
struct Inner {
    ops: Vec<Op>,
    meta: Vec<Meta>,
}

/// Search budget for confirming, on a key's full history, a violation found on the reduced one.
pub const CONFIRM_BUDGET: u64 = 2_000_000;

pub struct History {
    start: Instant,
    inner: Mutex<Inner>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

/// Op counts for the verdict line.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub reads: usize,
    pub lease: usize,
    pub read_index: usize,
    pub quorum: usize,
    pub local: usize,
    pub writes: usize,
    pub cas: usize,
    pub cas_ok: usize,
    pub indeterminate: usize,
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Microseconds since the recorder started (monotonic).
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record an operation the client saw complete with `output`.
    pub fn completed(
        &self,
        client: u64,
        invoke: u64,
        input: KvInput<Key, Value>,
        output: KvOutput<Value>,
        meta: Meta,
    ) {
        let complete = self.now();
        let mut g = self.lock();
        g.ops.push(Operation::completed(
            client, invoke, complete, input, output,
        ));
        g.meta.push(meta);
    }

    /// Record an operation whose outcome is unknown.
    pub fn indeterminate(&self, client: u64, invoke: u64, input: KvInput<Key, Value>, meta: Meta) {
        let mut g = self.lock();
        g.ops.push(Operation::indeterminate(client, invoke, input));
        g.meta.push(meta);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counts(&self) -> Counts {
        let g = self.lock();
        let mut c = Counts::default();
        for (op, m) in g.ops.iter().zip(&g.meta) {
            if op.complete.is_none() {
                c.indeterminate += 1;
            }
            match m.kind {
                Kind::Get | Kind::QuorumGet | Kind::LocalGet => {
                    c.reads += 1;
                    match m.read_mode.as_deref() {
                        Some("lease") => c.lease += 1,
                        Some("read-index") => c.read_index += 1,
                        Some("quorum") => c.quorum += 1,
                        Some("local") => c.local += 1,
                        _ => {}
                    }
                }
                Kind::Put => c.writes += 1,
                Kind::Cas => {
                    c.cas += 1;
                    if op.output == Some(KvOutput::Cas(true)) {
                        c.cas_ok += 1;
                    }
                }
            }
        }
        c
    }

    /// Check the history; on a violation the report names each offending op's node and read
    /// path, which the checker itself does not know.
    pub fn check(&self, budget: u64) -> Verdict {
        let (ops, meta) = {
            let g = self.lock();
            (g.ops.clone(), g.meta.clone())
        };
        let find = |op: &Op| {
            ops.iter()
                .position(|o| o.client == op.client && o.invoke == op.invoke)
                .map(|i| &meta[i])
        };
        let describe = |op: &Op| {
            let m = find(op);
            let done = op
                .complete
                .map_or_else(|| "?".to_string(), |t| t.to_string());
            let out = op
                .output
                .as_ref()
                .map_or_else(|| "?".to_string(), |o| format!("{o:?}"));
            format!(
                "c{} [{}us, {}us] {:?} -> {} (node n{}, {:?}, read={}, term={})",
                op.client,
                op.invoke,
                done,
                op.input,
                out,
                m.map_or(0, |m| m.node + 1),
                m.map(|m| m.kind),
                m.and_then(|m| m.read_mode.clone()).unwrap_or("-".into()),
                m.and_then(|m| m.term)
                    .map_or_else(|| "-".to_string(), |t| t.to_string()),
            )
        };
        let model = lincheck::KvModel::new();
        let reduced = drop_unobserved(&ops);
        let mut keys: Vec<&Key> = ops.iter().map(|o| o.input.key()).collect();
        keys.sort();
        keys.dedup();
        let mut outcome = Outcome::Linearizable;
        let mut unconfirmed = false;
        for key in keys {
            let of_key = |h: &[Op]| -> Vec<Op> {
                h.iter().filter(|o| o.input.key() == key).cloned().collect()
            };
            let mut o = lincheck::check_with_budget(&model, &of_key(&reduced), budget);
            if o.is_violation() {
                // The reduction can only add violations (an unobserved write might be what
                // made a CAS fail), so confirm on the key's full history before reporting.
                // That search is the exponential one, hence its own smaller budget; when it
                // runs out the reduced counterexample stands, marked unconfirmed.
                match lincheck::check_with_budget(&model, &of_key(&ops), CONFIRM_BUDGET) {
                    Outcome::Unknown { .. } => unconfirmed = true,
                    full => o = full,
                }
            }
            match o {
                Outcome::Linearizable => {}
                Outcome::NotLinearizable(_) => {
                    outcome = o;
                    break;
                }
                Outcome::Unknown { .. } => {
                    if outcome.is_linearizable() {
                        outcome = o;
                    }
                }
            }
        }
        match outcome {
            Outcome::Linearizable => Verdict::Ok,
            Outcome::Unknown { partition } => Verdict::Unknown { partition },
            Outcome::NotLinearizable(v) => {
                let mut s = String::new();
                let _ = writeln!(
                    s,
                    "{} is not linearizable (first at t={}us){}",
                    v.partition,
                    v.cut,
                    if unconfirmed {
                        " [found without unobserved indeterminate writes; the full history's \
                         check ran out of budget, so a failed CAS might yet be explained by one]"
                    } else {
                        ""
                    }
                );
                let _ = writeln!(s, "  offending op(s):");
                for op in &v.culprits {
                    let _ = writeln!(s, "    {}", describe(op));
                }
                let skip = v.prefix.len().saturating_sub(25);
                let _ = writeln!(
                    s,
                    "  failing prefix ({} ops, last {} shown):",
                    v.prefix.len(),
                    v.prefix.len() - skip
                );
                for op in &v.prefix[skip..] {
                    let _ = writeln!(s, "    {}", describe(op));
                }
                let n = v.longest_linearization.len();
                let _ = writeln!(s, "  longest linearization ({n} ops), last 10:");
                for op in &v.longest_linearization[n.saturating_sub(10)..] {
                    let _ = writeln!(s, "    {}", describe(op));
                }
                Verdict::Violation {
                    confirmed: !unconfirmed,
                    partition: v.partition.clone(),
                    culprits: v.culprits.iter().map(describe).collect(),
                    report: s,
                }
            }
        }
    }
}

/// Indeterminate writes and CASes whose (unique) new value nobody ever observed, removed.
///
/// Why: every indeterminate op stays pending to the end of the history, and the search may
/// linearize any subset of them anywhere, so a few hundred timed-out writes (an isolated node
/// times out every write sent to it) make the search exponential. Why it is sound: such ops are
/// optional (they may never have happened), so a linearization of the reduced history is one of
/// the full history with them left out. The converse can fail only when an unobserved write is
/// what explains a failed CAS, which is why a violation is re-checked on the full history.
pub fn drop_unobserved(ops: &[Op]) -> Vec<Op> {
    use std::collections::HashSet;
    let mut observed: HashSet<(&Key, &Value)> = HashSet::new();
    for op in ops {
        match (&op.input, &op.output) {
            (KvInput::Read { key }, Some(KvOutput::Read(Some(v)))) => {
                observed.insert((key, v));
            }
            (
                KvInput::Cas {
                    key,
                    expected: Some(e),
                    ..
                },
                Some(KvOutput::Cas(true)),
            ) => {
                observed.insert((key, e));
            }
            _ => {}
        }
    }
    ops.iter()
        .filter(|op| {
            if op.complete.is_some() {
                return true;
            }
            match &op.input {
                KvInput::Write { key, value }
                | KvInput::Cas {
                    key, new: value, ..
                } => observed.contains(&(key, value)),
                KvInput::Read { .. } => false,
            }
        })
        .cloned()
        .collect()
}

/// The checker's answer, with enough to print.
#[derive(Debug, Clone)]
pub enum Verdict {
    Ok,
    Violation {
        /// False when only the reduced history was shown not linearizable (see `check`).
        confirmed: bool,
        partition: String,
        culprits: Vec<String>,
        report: String,
    },
    /// The search budget ran out: neither proof nor counterexample.
    Unknown {
        partition: String,
    },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Violation { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta {
            kind,
            node: 0,
            read_mode: None,
            term: None,
        }
    }

    fn w(key: &str, value: &str) -> KvInput<Key, Value> {
        KvInput::Write {
            key: key.into(),
            value: value.into(),
        }
    }

    fn r(key: &str) -> KvInput<Key, Value> {
        KvInput::Read { key: key.into() }
    }

    #[test]
    fn unobserved_indeterminate_writes_are_dropped_observed_ones_kept() {
        let h = History::new();
        h.indeterminate(1, 0, w("k", "lost"), meta(Kind::Put));
        h.indeterminate(2, 1, w("k", "seen"), meta(Kind::Put));
        h.completed(
            3,
            2,
            r("k"),
            KvOutput::Read(Some("seen".into())),
            meta(Kind::Get),
        );
        let kept = drop_unobserved(&h.ops());
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|o| o.input != w("k", "lost")));
        assert!(h.check(1_000_000).is_ok());
    }

    /// The recorder and check can fail: a read of the old value after a newer write
    /// completed is reported, with the read as the culprit.
    #[test]
    fn a_stale_read_is_a_violation() {
        let h = History::new();
        // Equal microsecond stamps would make the ops concurrent (and the read legal).
        let tick = || std::thread::sleep(std::time::Duration::from_millis(2));
        let t0 = h.now();
        h.completed(1, t0, w("k", "old"), KvOutput::Write, meta(Kind::Put));
        tick();
        let t1 = h.now();
        h.completed(1, t1, w("k", "new"), KvOutput::Write, meta(Kind::Put));
        tick();
        let t2 = h.now();
        h.completed(
            2,
            t2,
            r("k"),
            KvOutput::Read(Some("old".into())),
            meta(Kind::Get),
        );
        match h.check(1_000_000) {
            Verdict::Violation { culprits, .. } => {
                assert!(culprits[0].contains("Read"), "{culprits:?}");
            }
            other => panic!("stale read not caught: {other:?}"),
        }
    }
}
