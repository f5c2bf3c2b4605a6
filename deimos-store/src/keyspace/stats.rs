//! Operation counters for `/v2/stats/store`, in etcd's field names and order.
//!
//! Counters are atomics so that reads (`Store::get`, which takes `&self`) can count without
//! exclusive access. They are per-process observability, not replicated state: they are not
//! persisted and do not take part in record equality.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the counters, serialised exactly as etcd's `/v2/stats/store`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    #[serde(rename = "getsSuccess")]
    pub gets_success: u64,
    #[serde(rename = "getsFail")]
    pub gets_fail: u64,
    #[serde(rename = "setsSuccess")]
    pub sets_success: u64,
    #[serde(rename = "setsFail")]
    pub sets_fail: u64,
    #[serde(rename = "deleteSuccess")]
    pub delete_success: u64,
    #[serde(rename = "deleteFail")]
    pub delete_fail: u64,
    #[serde(rename = "updateSuccess")]
    pub update_success: u64,
    #[serde(rename = "updateFail")]
    pub update_fail: u64,
    #[serde(rename = "createSuccess")]
    pub create_success: u64,
    #[serde(rename = "createFail")]
    pub create_fail: u64,
    #[serde(rename = "compareAndSwapSuccess")]
    pub compare_and_swap_success: u64,
    #[serde(rename = "compareAndSwapFail")]
    pub compare_and_swap_fail: u64,
    #[serde(rename = "compareAndDeleteSuccess")]
    pub compare_and_delete_success: u64,
    #[serde(rename = "compareAndDeleteFail")]
    pub compare_and_delete_fail: u64,
    #[serde(rename = "expireCount")]
    pub expire_count: u64,
    pub watchers: u64,
}

/// Which counter pair an operation feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Set,
    Delete,
    Update,
    Create,
    CompareAndSwap,
    CompareAndDelete,
}

const PAIRS: usize = 7;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    success: [AtomicU64; PAIRS],
    fail: [AtomicU64; PAIRS],
    expire: AtomicU64,
}

impl Counters {
    pub fn record(&self, op: Op, ok: bool) {
        let i = op as usize;
        let arr = if ok { &self.success } else { &self.fail };
        arr[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn expired(&self, n: u64) {
        self.expire.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, watchers: u64) -> StoreStats {
        let s = |op: Op| self.success[op as usize].load(Ordering::Relaxed);
        let f = |op: Op| self.fail[op as usize].load(Ordering::Relaxed);
        StoreStats {
            gets_success: s(Op::Get),
            gets_fail: f(Op::Get),
            sets_success: s(Op::Set),
            sets_fail: f(Op::Set),
            delete_success: s(Op::Delete),
            delete_fail: f(Op::Delete),
            update_success: s(Op::Update),
            update_fail: f(Op::Update),
            create_success: s(Op::Create),
            create_fail: f(Op::Create),
            compare_and_swap_success: s(Op::CompareAndSwap),
            compare_and_swap_fail: f(Op::CompareAndSwap),
            compare_and_delete_success: s(Op::CompareAndDelete),
            compare_and_delete_fail: f(Op::CompareAndDelete),
            expire_count: self.expire.load(Ordering::Relaxed),
            watchers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_json_names() {
        let c = Counters::default();
        c.record(Op::Get, true);
        c.record(Op::Get, false);
        c.record(Op::CompareAndDelete, false);
        c.expired(3);
        let s = c.snapshot(2);
        assert_eq!((s.gets_success, s.gets_fail), (1, 1));
        assert_eq!(s.compare_and_delete_fail, 1);
        assert_eq!(s.expire_count, 3);
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.starts_with(r#"{"getsSuccess":1,"getsFail":1,"setsSuccess":0,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0"#));
        assert!(j.ends_with(r#""compareAndDeleteFail":1,"expireCount":3,"watchers":2}"#));
    }
}
