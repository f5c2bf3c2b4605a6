//! redb persistence: raft log, hard state, applied key space (in progress).
