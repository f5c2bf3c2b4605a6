//! The replicated state machine the simulator runs on every node: one register per key, changed
//! only by client commands carried in `EntryPayload::Normal` entries.
//!
//! Why a toy store and not deimos-store: the simulator must stay deterministic, fast and inside
//! this crate, and a register per key is exactly the object the linearizability model describes,
//! so any disagreement between what clients saw and the model is Raft's (or the harness's) fault.

use std::collections::BTreeMap;

use deimos_raft::Index;

use super::lincheck::{KvInput, KvOutput};

pub type Key = u64;
pub type Value = u64;
pub type KvIn = KvInput<Key, Value>;
pub type KvOut = KvOutput<Value>;

/// What a client asks for. The variant also decides the path that serves it (see
/// `Sim::submit`): add a variant here and an arm there to test a new read or write path, e.g. a
/// lease read served locally by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// Linearizable read through ReadIndex on the node the client talks to; answered once that
    /// node has applied the confirmed read index.
    Read { key: Key },
    /// Answered at once from the local state machine, with no leadership check. Not
    /// linearizable (a deposed leader or a lagging follower answers stale data); it exists to show
    /// that the checker catches stale reads.
    LocalRead { key: Key },
    /// Served by the leader lease when the node holds a valid one at its local time (no
    /// messages; answered once the commit index at that moment is applied), else via ReadIndex.
    LeaseRead { key: Key },
    /// Replicated through the log; answered when the node the client talks to applies it.
    Write { key: Key, value: Value },
    /// Replicated through the log; the result is decided at apply time.
    Cas {
        key: Key,
        expected: Option<Value>,
        new: Value,
    },
}

impl ClientOp {
    /// The operation as the linearizability model sees it (paths do not matter there).
    pub fn spec(&self) -> KvIn {
        match *self {
            ClientOp::Read { key } | ClientOp::LocalRead { key } | ClientOp::LeaseRead { key } => {
                KvInput::Read { key }
            }
            ClientOp::Write { key, value } => KvInput::Write { key, value },
            ClientOp::Cas { key, expected, new } => KvInput::Cas { key, expected, new },
        }
    }

    /// True for operations that go through the log (and can therefore take effect after the
    /// client gave up).
    pub fn is_update(&self) -> bool {
        matches!(self, ClientOp::Write { .. } | ClientOp::Cas { .. })
    }
}

/// A client update as it travels in a log entry. `req` is unique per run and increases per
/// client, which is what lets the submitting node recognise its own request when it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub req: u64,
    pub client: u64,
    pub op: ClientOp,
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(42);
        let (tag, key, a, b) = match self.op {
            ClientOp::Write { key, value } => (1u8, key, value, 0),
            ClientOp::Cas {
                key,
                expected: None,
                new,
            } => (2, key, 0, new),
            ClientOp::Cas {
                key,
                expected: Some(e),
                new,
            } => (3, key, e, new),
            ClientOp::Read { .. } | ClientOp::LocalRead { .. } | ClientOp::LeaseRead { .. } => {
                panic!("reads are not replicated")
            }
        };
        out.push(tag);
        for x in [self.req, self.client, key, a, b] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    pub fn decode(data: &[u8]) -> Option<Command> {
        if data.len() != 41 {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(data[1 + 8 * i..9 + 8 * i].try_into().unwrap());
        let (req, client, key, a, b) = (u(0), u(1), u(2), u(3), u(4));
        let op = match data[0] {
            1 => ClientOp::Write { key, value: a },
            2 => ClientOp::Cas {
                key,
                expected: None,
                new: b,
            },
            3 => ClientOp::Cas {
                key,
                expected: Some(a),
                new: b,
            },
            _ => return None,
        };
        Some(Command { req, client, op })
    }
}

/// The state machine. Deterministic: every replica that applies the same entries ends equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    data: BTreeMap<Key, Value>,
    /// Highest request applied per client. The network duplicates forwarded proposals, so the same
    /// command can be appended twice; applying it once keeps a duplicate from looking like a
    /// linearizability bug of Raft. Replicated (it is part of the snapshot), hence deterministic.
    last_req: BTreeMap<u64, u64>,
    /// Index of the last entry applied (or of the snapshot restored).
    pub applied: Index,
}

impl KvStore {
    pub fn get(&self, key: Key) -> Option<Value> {
        self.data.get(&key).copied()
    }

    /// Apply a command; `None` if it was a duplicate or older than one already applied for its
    /// client, in which case it has no effect.
    pub fn apply(&mut self, cmd: &Command) -> Option<KvOut> {
        let last = self.last_req.entry(cmd.client).or_insert(0);
        if cmd.req <= *last {
            return None;
        }
        *last = cmd.req;
        Some(match cmd.op {
            ClientOp::Write { key, value } => {
                self.data.insert(key, value);
                KvOutput::Write
            }
            ClientOp::Cas { key, expected, new } => {
                let ok = self.data.get(&key).copied() == expected;
                if ok {
                    self.data.insert(key, new);
                }
                KvOutput::Cas(ok)
            }
            ClientOp::Read { .. } | ClientOp::LocalRead { .. } | ClientOp::LeaseRead { .. } => {
                unreachable!("reads are not replicated")
            }
        })
    }

    /// Snapshot image (excluding `applied`, which the snapshot metadata carries).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for map in [&self.data, &self.last_req] {
            out.extend_from_slice(&(map.len() as u64).to_le_bytes());
            for (k, v) in map {
                out.extend_from_slice(&k.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    pub fn restore(data: &[u8], applied: Index) -> KvStore {
        let mut pos = 0;
        let mut next = || {
            let x = u64::from_le_bytes(data[pos..pos + 8].try_into().unwrap());
            pos += 8;
            x
        };
        let mut maps = [BTreeMap::new(), BTreeMap::new()];
        for map in &mut maps {
            for _ in 0..next() {
                let k = next();
                let v = next();
                map.insert(k, v);
            }
        }
        let [data, last_req] = maps;
        KvStore {
            data,
            last_req,
            applied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_roundtrip_and_snapshot() {
        for op in [
            ClientOp::Write { key: 1, value: 7 },
            ClientOp::Cas {
                key: 2,
                expected: None,
                new: 3,
            },
            ClientOp::Cas {
                key: 2,
                expected: Some(0),
                new: 3,
            },
        ] {
            let c = Command {
                req: 9,
                client: 4,
                op,
            };
            assert_eq!(Command::decode(&c.encode()), Some(c));
        }
        let mut s = KvStore::default();
        let w = |req, value| Command {
            req,
            client: 1,
            op: ClientOp::Write { key: 5, value },
        };
        assert_eq!(s.apply(&w(1, 10)), Some(KvOutput::Write));
        assert_eq!(s.apply(&w(1, 11)), None, "duplicate must not apply");
        assert_eq!(s.get(5), Some(10));
        s.applied = 3;
        assert_eq!(KvStore::restore(&s.encode(), 3), s);
    }
}
