//! Forged peer traffic for the attack tests, built from the real wire types: a store proposal
//! inside a Raft message, encoded as the peer transport encodes a batch (postcard).

use deimos_raft::driver::envelope;
use deimos_raft::types::{EntryPayload, Message, MessageBody};
use deimos_store::keyspace::Command;
use deimos_store::machine::Proposal;

/// A `/raft/messages` batch holding one forwarded proposal that would set `key` to "forged".
pub fn forged_write(from: u64, to: u64, term: u64, key: &str) -> Vec<u8> {
    let cmd = Proposal::Keys(Command::Set {
        key: key.to_string(),
        value: "forged".into(),
        dir: false,
        expire_at_ms: None,
        refresh: false,
        prev_exist: None,
        prev_value: None,
        prev_index: None,
        now_ms: 0,
    });
    let m = Message {
        from,
        to,
        term,
        body: MessageBody::Propose {
            entries: vec![EntryPayload::Normal(envelope::wrap(from, 1, &cmd.encode()))],
        },
    };
    postcard::to_stdvec(&vec![m]).expect("encode")
}
