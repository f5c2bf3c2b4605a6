//! The Ready plan checked as a list, without I/O: each test states one ordering rule the driver
//! relies on for safety.

use super::{plan, Step};
use crate::config::UnsafeKnobs;
use crate::ready::Ready;
use crate::types::{
    Entry, EntryPayload, HardState, Index, LeaseEvent, Message, MessageBody, ReadState, Role,
    Snapshot, SoftState,
};

fn entry(index: Index) -> Entry {
    Entry {
        term: 2,
        index,
        payload: EntryPayload::Normal(vec![1]),
    }
}

fn entries(lo: Index, hi: Index) -> Vec<Entry> {
    (lo..=hi).map(entry).collect()
}

fn msg(to: u64, body: MessageBody) -> Message {
    Message {
        from: 1,
        to,
        term: 2,
        body,
    }
}

fn append(to: u64, commit: Index) -> Message {
    msg(
        to,
        MessageBody::Append {
            prev_index: 5,
            prev_term: 2,
            entries: entries(6, 7),
            commit,
        },
    )
}

/// Every kind of message a Ready can carry: replication traffic and what must wait.
fn all_messages() -> Vec<Message> {
    vec![
        msg(2, MessageBody::VoteResp { reject: false }),
        append(2, 5),
        msg(
            3,
            MessageBody::Heartbeat {
                commit: 5,
                round: 3,
            },
        ),
        msg(
            2,
            MessageBody::AppendResp {
                reject: false,
                index: 7,
                hint_index: 0,
                hint_term: 0,
            },
        ),
        msg(3, MessageBody::PreVoteResp { reject: false }),
        msg(2, MessageBody::HeartbeatResp { round: 3 }),
        msg(
            3,
            MessageBody::InstallSnapshot {
                snapshot: Snapshot::default(),
            },
        ),
        msg(
            2,
            MessageBody::Vote {
                last_index: 7,
                last_term: 2,
                transfer: false,
            },
        ),
        msg(
            3,
            MessageBody::ReadIndexResp {
                ctx: vec![0; 8],
                index: 5,
            },
        ),
    ]
}

/// A busy Ready: new entries 6..=7, commit advanced to 7 (4..=7 to apply), all kinds of
/// messages, a read confirmed, lease events.
fn busy() -> Ready {
    Ready {
        hard_state: Some(HardState {
            term: 2,
            vote: Some(1),
            commit: 7,
        }),
        entries: entries(6, 7),
        committed_entries: entries(4, 7),
        messages: all_messages(),
        read_states: vec![ReadState {
            index: 7,
            ctx: vec![0; 8],
        }],
        lease_events: vec![LeaseEvent::RoundSent { term: 2, round: 3 }],
        ..Ready::default()
    }
}

fn with_snapshot(mut rd: Ready, index: Index) -> Ready {
    let mut snap = Snapshot::default();
    snap.meta.index = index;
    snap.meta.term = 2;
    rd.snapshot = Some(snap);
    rd.soft_state = Some(SoftState {
        leader: Some(2),
        role: Role::Follower,
    });
    rd
}

/// The plans of every test Ready, on each role, for the rules that hold for all of them.
fn all_plans(knobs: UnsafeKnobs) -> Vec<Vec<Step>> {
    let mut plans = Vec::new();
    for role in [Role::Leader, Role::Follower, Role::Candidate] {
        for stored in [0, 3, 5, 7, 20] {
            plans.push(plan(busy(), role, stored, knobs));
            plans.push(plan(with_snapshot(busy(), 5), role, stored, knobs));
            plans.push(plan(Ready::default(), role, stored, knobs));
        }
    }
    plans
}

fn first(steps: &[Step], what: impl Fn(&Step) -> bool) -> Option<usize> {
    steps.iter().position(what)
}

fn persist_at(steps: &[Step]) -> usize {
    first(steps, |s| matches!(s, Step::Persist { .. })).expect("every plan persists")
}

fn is_send(s: &Step) -> bool {
    matches!(s, Step::SendBeforePersist(_) | Step::SendAfterPersist(_))
}

/// The indexes applied by each `Apply` step, with the step's position.
fn applies(steps: &[Step]) -> Vec<(usize, Vec<Index>)> {
    steps
        .iter()
        .enumerate()
        .filter_map(|(at, s)| match s {
            Step::Apply(es) => Some((at, es.iter().map(|e| e.index).collect())),
            _ => None,
        })
        .collect()
}

#[test]
fn commit_index_is_published_before_the_first_message_that_carries_it_leaves() {
    for steps in all_plans(UnsafeKnobs::default()) {
        let publish = first(&steps, |s| matches!(s, Step::PublishStatus)).unwrap();
        if let Some(send) = first(&steps, is_send) {
            assert!(publish < send, "{steps:#?}");
        }
    }
}

#[test]
fn the_old_order_knob_publishes_the_commit_index_only_after_the_early_send() {
    let knobs = UnsafeKnobs {
        publish_commit_after_send: true,
        ..UnsafeKnobs::default()
    };
    let steps = plan(busy(), Role::Leader, 5, knobs);
    let send = first(&steps, |s| matches!(s, Step::SendBeforePersist(_))).unwrap();
    let publish = first(&steps, |s| matches!(s, Step::PublishStatus)).unwrap();
    assert!(send < publish, "{steps:#?}");
}

#[test]
fn only_replication_traffic_leaves_before_persist() {
    for steps in all_plans(UnsafeKnobs::default()) {
        let persist = persist_at(&steps);
        for (at, step) in steps.iter().enumerate() {
            match step {
                Step::SendBeforePersist(ms) => {
                    assert!(at < persist);
                    assert!(ms.iter().all(|m| m.body.may_precede_persist()), "{ms:#?}");
                }
                Step::SendAfterPersist(ms) => {
                    assert!(at > persist);
                    assert!(ms.iter().all(|m| !m.body.may_precede_persist()), "{ms:#?}");
                }
                _ => {}
            }
        }
    }
    // And every message is sent exactly once, votes and acknowledgements after the write.
    let steps = plan(busy(), Role::Leader, 5, UnsafeKnobs::default());
    let sent: Vec<&Message> = steps
        .iter()
        .flat_map(|s| match s {
            Step::SendBeforePersist(ms) | Step::SendAfterPersist(ms) => ms.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(sent.len(), all_messages().len());
    let late = first(&steps, |s| matches!(s, Step::SendAfterPersist(_))).unwrap();
    match &steps[late] {
        Step::SendAfterPersist(ms) => assert!(ms.iter().any(|m| matches!(
            m.body,
            MessageBody::VoteResp { .. } | MessageBody::AppendResp { .. }
        ))),
        _ => unreachable!(),
    }
}

#[test]
fn a_leader_applies_what_it_has_stored_before_persist_and_the_rest_after() {
    let steps = plan(busy(), Role::Leader, 5, UnsafeKnobs::default());
    let persist = persist_at(&steps);
    let applies = applies(&steps);
    assert_eq!(applies.len(), 2, "{steps:#?}");
    assert!(applies[0].0 < persist && applies[0].1 == vec![4, 5]);
    assert!(applies[1].0 > persist && applies[1].1 == vec![6, 7]);
}

#[test]
fn entries_not_yet_stored_are_applied_only_after_persist() {
    // Whatever the role, an entry is applied before this Ready's write only if an earlier
    // Ready stored it (on a leader, whose quorum then had it before it could commit).
    for role in [Role::Leader, Role::Follower] {
        for stored in [0, 3, 5, 7, 20] {
            let steps = plan(busy(), role, stored, UnsafeKnobs::default());
            let persist = persist_at(&steps);
            for (at, indexes) in applies(&steps) {
                assert!(
                    at > persist || indexes.iter().all(|&i| i <= stored),
                    "{steps:#?}"
                );
            }
            // And nothing committed is left unapplied.
            let all: Vec<Index> = applies(&steps).into_iter().flat_map(|(_, i)| i).collect();
            assert_eq!(all, vec![4, 5, 6, 7]);
        }
    }
}

#[test]
fn a_follower_applies_only_after_persist() {
    for role in [Role::Follower, Role::Candidate, Role::PreCandidate] {
        let steps = plan(busy(), role, 20, UnsafeKnobs::default());
        let persist = persist_at(&steps);
        let applies = applies(&steps);
        assert_eq!(applies.len(), 1, "{steps:#?}");
        assert!(applies[0].0 > persist && applies[0].1 == vec![4, 5, 6, 7]);
    }
}

#[test]
fn a_snapshot_is_installed_before_anything_is_applied() {
    for steps in all_plans(UnsafeKnobs::default()) {
        let Some(install) = first(&steps, |s| matches!(s, Step::InstallSnapshot(_))) else {
            continue;
        };
        for (at, _) in applies(&steps) {
            assert!(install < at, "{steps:#?}");
        }
        let published = first(&steps, |s| matches!(s, Step::PublishSnapshotApplied(5)));
        assert!(published.is_some_and(|p| p > install), "{steps:#?}");
    }
    // A snapshot replaces the log: what was stored past it is not ours to apply before persist.
    let steps = plan(
        with_snapshot(busy(), 5),
        Role::Leader,
        20,
        UnsafeKnobs::default(),
    );
    let persist = persist_at(&steps);
    for (at, indexes) in applies(&steps) {
        assert!(
            at > persist || indexes.iter().all(|&i| i <= 5),
            "{steps:#?}"
        );
    }
}

#[test]
fn reads_are_answered_after_everything_is_applied() {
    for steps in all_plans(UnsafeKnobs::default()) {
        let Some(reads) = first(&steps, |s| matches!(s, Step::AnswerReads(_))) else {
            continue;
        };
        for (at, _) in applies(&steps) {
            assert!(at < reads, "{steps:#?}");
        }
    }
}

#[test]
fn advance_is_last_and_every_plan_persists_once() {
    for knobs in [
        UnsafeKnobs::default(),
        UnsafeKnobs {
            publish_commit_after_send: true,
            send_all_before_persist: true,
            ..UnsafeKnobs::default()
        },
    ] {
        for steps in all_plans(knobs) {
            assert!(matches!(steps.last(), Some(Step::Advance)), "{steps:#?}");
            let advances = steps.iter().filter(|s| matches!(s, Step::Advance)).count();
            let persists = steps
                .iter()
                .filter(|s| matches!(s, Step::Persist { .. }))
                .count();
            assert_eq!((advances, persists), (1, 1), "{steps:#?}");
        }
    }
}
