//! Deimos's replicated state machine — the etcd v2 key space — and its durable home in redb.
//!
//! `keyspace` is pure, deterministic state-machine logic (same commands in, same state out, on
//! every replica). `persist` stores the Raft log, hard state and the applied key space in one redb
//! database, updated atomically per batch.

pub mod auth;
pub mod keyspace;
pub mod machine;
pub mod persist;
pub mod recovery;
