//! The key-value register model: every key an independent register, with read, write and
//! compare-and-set; histories are partitioned per key.

use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;

use super::check;
use super::history::{Operation, Outcome};
use super::model::Model;

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
