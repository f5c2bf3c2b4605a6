//! What the checker reads and reports: client operations (`Operation`), the verdict on a history
//! (`Outcome`) and, for a violation, the narrowed-down report (`Violation`).

use std::fmt::{self, Debug};

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

    pub(super) fn is_determinate(&self) -> bool {
        self.complete.is_some()
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
