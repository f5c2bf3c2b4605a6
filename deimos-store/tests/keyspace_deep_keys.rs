//! What one key can cost. The key space is a flat map from full path to node, so a key
//! `d` levels deep also stores its `d - 1` ancestor directories, each under its own full path:
//! the bytes stored grow with depth x length. Both are capped (`MAX_KEY_DEPTH` levels,
//! `MAX_KEY_BYTES` bytes), so what one write can make the store hold is linear in the key's
//! length with a factor of at most `MAX_KEY_DEPTH`, and for the worst key allowed it stays well
//! under what one write's value may already cost (1 MiB). Before the caps a key 2,048 levels
//! deep cost memory quadratic in its depth.

#[path = "keyspace_common.rs"]
mod common;

use common::*;
use deimos_store::keyspace::{Store, MAX_KEY_BYTES, MAX_KEY_DEPTH};

/// Total bytes of the records (paths and encoded nodes) the store holds.
fn stored_bytes(s: &Store) -> usize {
    s.records().map(|(k, v)| k.len() + v.len()).sum()
}

/// The deepest key of `len` bytes: `MAX_KEY_DEPTH` levels of equal segments.
fn deepest_key(len: usize) -> String {
    let seg = len / MAX_KEY_DEPTH - 1;
    let mut k = String::new();
    for i in 0..MAX_KEY_DEPTH {
        k.push('/');
        k.push_str(&format!("{:0>width$}", i, width = seg));
    }
    k
}

#[test]
fn one_key_costs_at_most_its_length_times_the_depth_cap() {
    for len in [256, 1024, MAX_KEY_BYTES] {
        let key = deepest_key(len);
        assert!(key.len() <= len, "{} > {len}", key.len());
        let mut s = Store::new();
        s.apply(&put(&key, "v", Opts::default()))
            .expect("deepest allowed key");
        let bytes = stored_bytes(&s);
        eprintln!(
            "{}-byte key, {MAX_KEY_DEPTH} levels: {bytes} bytes stored ({:.1}x)",
            key.len(),
            bytes as f64 / key.len() as f64
        );
        // Paths: at most depth x length; each node's encoding: indexes and flags, < 64 bytes.
        assert!(
            bytes <= MAX_KEY_DEPTH * (key.len() + 64),
            "{bytes} bytes for a {}-byte key",
            key.len()
        );
        assert!(
            bytes < 1 << 20,
            "the worst key costs less than one value may"
        );
    }
}

#[test]
fn keys_deeper_or_longer_than_the_caps_are_refused() {
    let mut s = Store::new();
    let empty = stored_bytes(&s);
    let too_deep = "/a".repeat(MAX_KEY_DEPTH + 1);
    assert!(s.apply(&put(&too_deep, "v", Opts::default())).is_err());
    let too_long = format!("/{}", "x".repeat(MAX_KEY_BYTES));
    assert!(s.apply(&put(&too_long, "v", Opts::default())).is_err());
    assert_eq!(stored_bytes(&s), empty, "nothing of a refused key is kept");
}
