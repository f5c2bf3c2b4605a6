//! The etcd v2 key space: the replicated state machine (in progress).
