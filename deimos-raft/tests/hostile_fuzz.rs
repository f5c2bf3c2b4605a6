//! Issue 18: the sans-IO core under adversarial messages, a million steps per run.
//!
//! A three-node cluster of `RawNode`s runs honestly (ticks, proposals, every message delivered)
//! while an injector hands its nodes messages that are well typed but adversarial, from any
//! sender — members included, so impersonation too. Two phases:
//!
//! 1. **Anything goes** (arbitrary senders, terms, indexes, entries, snapshots, conf changes,
//!    read contexts): no panic, and each node's own invariants hold after every step — its term
//!    never goes back (never wraps), commit never passes its last index, applied never passes
//!    commit. Nothing stronger can hold here: a forged message from the leader's id is
//!    indistinguishable from the leader (keeping such senders out is the peer plane's job).
//! 2. **Impossible messages** (what no honest node sends: malformed appends, absurd terms and
//!    indexes, acks beyond the log, acks of rounds never sent, TimeoutNow from non-leaders,
//!    forwarded conf changes, oversized read contexts), again from any sender: every one is
//!    refused (the refusal counters grow by exactly the number injected), and the cluster's
//!    invariants hold for the honest nodes — at most one leader per term, every index applied
//!    on two nodes applied identically — while it keeps committing.
//!
//! Deterministic: the seed is fixed (override with `DEIMOS_FUZZ_SEED`, and the step count with
//! `DEIMOS_FUZZ_STEPS`).

use std::collections::BTreeMap;

use deimos_raft::{
    ConfChange, ConfState, Config, Entry, EntryPayload, HardState, Index, LogStorage, MemStorage,
    Message, MessageBody, NodeId, RawNode, Role, Snapshot, SnapshotMeta, Term, MAX_INDEX,
    MAX_READ_CTX, MAX_TERM,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const IDS: [NodeId; 3] = [1, 2, 3];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

struct Cluster {
    nodes: BTreeMap<NodeId, RawNode<MemStorage>>,
    inbox: Vec<Message>,
    /// The first node to apply each index, and the entry it applied there.
    applied: BTreeMap<Index, (NodeId, Entry)>,
    /// Leader seen per term.
    leaders: BTreeMap<Term, NodeId>,
    last_term: BTreeMap<NodeId, Term>,
    steps: u64,
    proposals: u64,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let nodes = IDS
            .iter()
            .map(|&id| {
                let mut c = Config::new(id);
                c.election_tick = 10;
                c.heartbeat_tick = 1;
                c.seed = seed;
                let s = MemStorage::new(ConfState::new(IDS));
                (id, RawNode::new(&c, s).expect("node"))
            })
            .collect();
        Cluster {
            nodes,
            inbox: Vec::new(),
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            last_term: BTreeMap::new(),
            steps: 0,
            proposals: 0,
        }
    }

    /// Handle every Ready as the driver does (persist, send, apply, advance).
    fn drain(&mut self, cross_checks: bool) -> Result<(), String> {
        for (&id, n) in self.nodes.iter_mut() {
            while n.has_ready() {
                let rd = n.ready();
                if let Some(s) = &rd.snapshot {
                    n.storage_mut()
                        .apply_snapshot(s)
                        .map_err(|e| format!("node {id}: snapshot the core accepted: {e}"))?;
                }
                n.storage_mut()
                    .append(&rd.entries)
                    .map_err(|e| format!("node {id}: entries the core produced: {e}"))?;
                if let Some(hs) = rd.hard_state {
                    n.storage_mut()
                        .set_hard_state(&hs)
                        .map_err(|e| format!("node {id}: {e}"))?;
                }
                if cross_checks {
                    for e in rd.committed_entries {
                        match self.applied.get(&e.index) {
                            Some((other, f)) if *f != e => {
                                return Err(format!(
                                "index {} applied as {f:?} on node {other} but {e:?} on node {id}",
                                e.index
                            ))
                            }
                            Some(_) => {}
                            None => {
                                self.applied.insert(e.index, (id, e));
                            }
                        }
                    }
                }
                self.inbox.extend(rd.messages);
                n.advance();
            }
            check_local(id, n, &mut self.last_term)?;
            if cross_checks {
                let st = n.status();
                if st.role == Role::Leader {
                    if let Some(&other) = self.leaders.get(&st.term) {
                        if other != id {
                            return Err(format!(
                                "two leaders in term {}: {other} and {id}",
                                st.term
                            ));
                        }
                    }
                    self.leaders.insert(st.term, id);
                }
            }
        }
        Ok(())
    }

    /// Deliver what the honest nodes sent, then handle the consequences.
    fn deliver(&mut self, cross_checks: bool) -> Result<(), String> {
        for _ in 0..50 {
            if self.inbox.is_empty() {
                return Ok(());
            }
            for m in std::mem::take(&mut self.inbox) {
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    let _ = n.step(m);
                    self.steps += 1;
                }
            }
            self.drain(cross_checks)?;
        }
        Ok(())
    }

    fn honest_round(&mut self, rng: &mut StdRng, cross_checks: bool) -> Result<(), String> {
        for n in self.nodes.values_mut() {
            n.tick();
        }
        if rng.gen_bool(0.5) {
            let id = IDS[rng.gen_range(0..3)];
            if let Some(n) = self.nodes.get_mut(&id) {
                if n.status().role == Role::Leader
                    && n.propose(self.proposals.to_le_bytes().to_vec()).is_ok()
                {
                    self.proposals += 1;
                }
            }
        }
        self.drain(cross_checks)?;
        self.deliver(cross_checks)
    }

    fn max_term(&self) -> Term {
        self.nodes
            .values()
            .map(|n| n.status().term)
            .max()
            .unwrap_or(0)
    }

    fn max_last(&self) -> Index {
        self.nodes
            .values()
            .map(|n| n.status().last_index)
            .max()
            .unwrap_or(0)
    }

    fn refused_total(&self) -> u64 {
        self.nodes.values().map(|n| n.refused().total()).sum()
    }
}

fn check_local(
    id: NodeId,
    n: &RawNode<MemStorage>,
    last_term: &mut BTreeMap<NodeId, Term>,
) -> Result<(), String> {
    let st = n.status();
    let before = last_term.insert(id, st.term).unwrap_or(0);
    if st.term < before {
        return Err(format!(
            "node {id}: term went back from {before} to {}",
            st.term
        ));
    }
    if st.commit > st.last_index {
        return Err(format!(
            "node {id}: commit {} beyond last index {}",
            st.commit, st.last_index
        ));
    }
    if st.applied > st.commit {
        return Err(format!(
            "node {id}: applied {} beyond commit {}",
            st.applied, st.commit
        ));
    }
    let hs: HardState = n
        .storage()
        .initial_state()
        .map_err(|e| e.to_string())?
        .hard_state;
    if hs.term > st.term {
        return Err(format!("node {id}: persisted term {} ahead", hs.term));
    }
    Ok(())
}

fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.gen_range(0..xs.len())]
}

/// An index near the interesting ones, or absurd.
fn index(rng: &mut StdRng, last: Index) -> Index {
    match rng.gen_range(0..10) {
        0 => u64::MAX,
        1 => MAX_INDEX + rng.gen_range(0..3),
        2 => 0,
        _ => last.saturating_sub(5) + rng.gen_range(0..12),
    }
}

fn term(rng: &mut StdRng, cur: Term) -> Term {
    match rng.gen_range(0..12) {
        0 => u64::MAX,
        1 => MAX_TERM + rng.gen_range(0..3),
        2 => cur.saturating_sub(1),
        3 => cur + rng.gen_range(1..4),
        _ => cur,
    }
}

fn entries(rng: &mut StdRng, prev: Index, t: Term, well_formed: bool) -> Vec<Entry> {
    let n = rng.gen_range(0..4);
    (0..n)
        .map(|i| Entry {
            index: if well_formed {
                prev + 1 + i
            } else {
                index(rng, prev)
            },
            term: if well_formed { t } else { term(rng, t) },
            payload: match rng.gen_range(0..4) {
                0 => EntryPayload::Empty,
                1 => EntryPayload::ConfChange(conf_change(rng)),
                _ => EntryPayload::Normal(vec![rng.gen(); rng.gen_range(0..16)]),
            },
        })
        .collect()
}

fn conf_change(rng: &mut StdRng) -> ConfChange {
    let id = pick(rng, &[1, 2, 3, 4, 9, 0]);
    match rng.gen_range(0..3) {
        0 => ConfChange::AddVoter(id),
        1 => ConfChange::AddLearner(id),
        _ => ConfChange::RemoveNode(id),
    }
}

fn snapshot(rng: &mut StdRng, last: Index, t: Term) -> Snapshot {
    let mut voters: Vec<NodeId> = Vec::new();
    for id in [1, 2, 3, 4, 9] {
        if rng.gen_bool(0.5) {
            voters.push(id);
        }
    }
    Snapshot {
        meta: SnapshotMeta {
            index: index(rng, last),
            term: term(rng, t),
            conf: ConfState::new(voters),
        },
        data: vec![rng.gen(); rng.gen_range(0..8)],
    }
}

/// Anything well typed. Appends are often aimed at where the target's log really is (its
/// last entries, with their real terms), where inconsistent indexes do the most harm.
fn arbitrary(rng: &mut StdRng, c: &Cluster) -> Message {
    let (cur, last) = (c.max_term(), c.max_last());
    let to = pick(rng, &IDS);
    let t = term(rng, cur);
    let body = match rng.gen_range(0..14) {
        0 => MessageBody::PreVote {
            last_index: index(rng, last),
            last_term: term(rng, cur),
        },
        1 => MessageBody::PreVoteResp { reject: rng.gen() },
        2 => MessageBody::Vote {
            last_index: index(rng, last),
            last_term: term(rng, cur),
            transfer: rng.gen(),
        },
        3 => MessageBody::VoteResp { reject: rng.gen() },
        4 => {
            let prev = index(rng, last);
            let well_formed = rng.gen_bool(0.5);
            MessageBody::Append {
                prev_index: prev,
                prev_term: term(rng, cur),
                entries: entries(rng, prev, t, well_formed),
                commit: index(rng, last),
            }
        }
        5 => {
            let n = &c.nodes[&to];
            let st = n.status();
            let prev = st.last_index.saturating_sub(rng.gen_range(0..4));
            let prev_term = n.storage().term(prev).unwrap_or(st.term);
            let near = |rng: &mut StdRng| prev.saturating_sub(3) + rng.gen_range(0..8);
            let entries = (0..rng.gen_range(1..4))
                .map(|_| Entry {
                    index: near(rng),
                    term: pick(rng, &[prev_term, st.term, st.term + 1]),
                    payload: EntryPayload::Empty,
                })
                .collect();
            return Message {
                from: pick(rng, &IDS),
                to,
                term: st.term,
                body: MessageBody::Append {
                    prev_index: prev,
                    prev_term,
                    entries,
                    commit: near(rng),
                },
            };
        }
        6 => MessageBody::AppendResp {
            reject: rng.gen(),
            index: index(rng, last),
            hint_index: index(rng, last),
            hint_term: term(rng, cur),
        },
        7 => MessageBody::Heartbeat {
            commit: index(rng, last),
            round: rng.gen_range(0..1000),
        },
        8 => MessageBody::HeartbeatResp {
            round: pick(rng, &[0, 1, 5, 1_000_000, u64::MAX]),
        },
        9 => MessageBody::InstallSnapshot {
            snapshot: snapshot(rng, last, t),
        },
        10 => MessageBody::TimeoutNow,
        11 => MessageBody::Propose {
            entries: entries(rng, 0, t, false)
                .into_iter()
                .map(|e| e.payload)
                .collect(),
        },
        12 => MessageBody::ReadIndex {
            ctx: vec![rng.gen(); rng.gen_range(0..100)],
        },
        _ => MessageBody::ReadIndexResp {
            ctx: vec![rng.gen(); rng.gen_range(0..100)],
            index: index(rng, last),
        },
    };
    Message {
        from: pick(rng, &[1, 2, 3, 4, 9, u64::MAX]),
        to,
        term: t,
        body,
    }
}

/// Something no honest node sends, aimed at `to` (whose state decides what is impossible).
fn impossible(rng: &mut StdRng, c: &Cluster, to: NodeId) -> Message {
    let n = &c.nodes[&to];
    let st = n.status();
    let leader = st.role == Role::Leader;
    let from = pick(rng, &[1, 2, 3, 9]);
    let from = if from == to { 9 } else { from };
    let (t, last) = (st.term, st.last_index);
    let body = match rng.gen_range(0..8) {
        0 => {
            return Message {
                from,
                to,
                term: MAX_TERM + 1 + rng.gen_range(0..10),
                body: MessageBody::Heartbeat {
                    commit: 0,
                    round: 0,
                },
            }
        }
        1 => MessageBody::Append {
            prev_index: last,
            prev_term: t,
            // A gap right after prev_index.
            entries: vec![Entry {
                index: last + 2,
                term: t,
                payload: EntryPayload::Empty,
            }],
            commit: last,
        },
        2 => MessageBody::Append {
            prev_index: MAX_INDEX + 1,
            prev_term: t,
            entries: vec![],
            commit: 0,
        },
        3 if leader => MessageBody::AppendResp {
            reject: false,
            index: last + 1 + rng.gen_range(0..1000),
            hint_index: 0,
            hint_term: 0,
        },
        4 if leader => MessageBody::HeartbeatResp {
            round: u64::MAX - rng.gen_range(0..1000),
        },
        5 => {
            // TimeoutNow from someone who is not this node's leader.
            let from = IDS
                .iter()
                .copied()
                .find(|&i| i != to && Some(i) != st.leader)
                .unwrap_or(9);
            return Message {
                from,
                to,
                term: t,
                body: MessageBody::TimeoutNow,
            };
        }
        6 => MessageBody::Propose {
            entries: vec![EntryPayload::ConfChange(conf_change(rng))],
        },
        _ => MessageBody::ReadIndex {
            ctx: vec![0; MAX_READ_CTX + 1 + rng.gen_range(0..100)],
        },
    };
    Message {
        from,
        to,
        term: t,
        body,
    }
}

#[test]
fn a_million_adversarial_steps_break_nothing() {
    let seed = env_u64("DEIMOS_FUZZ_SEED").unwrap_or(0x5eed_f022);
    let total = env_u64("DEIMOS_FUZZ_STEPS").unwrap_or(1_000_000);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = std::time::Instant::now();

    // Phase 1: anything goes; each node's own invariants.
    let mut c = Cluster::new(seed);
    let phase1 = total * 7 / 10;
    while c.steps < phase1 {
        c.honest_round(&mut rng, false)
            .unwrap_or_else(|e| panic!("seed {seed}, step {}: {e}", c.steps));
        for _ in 0..8 {
            let m = arbitrary(&mut rng, &c);
            if let Some(n) = c.nodes.get_mut(&m.to) {
                let _ = n.step(m);
                c.steps += 1;
            }
            c.drain(false)
                .unwrap_or_else(|e| panic!("seed {seed}, step {}: {e}", c.steps));
        }
        c.deliver(false)
            .unwrap_or_else(|e| panic!("seed {seed}, step {}: {e}", c.steps));
    }
    let refused1 = c.refused_total();

    // Phase 2: a fresh cluster, impossible messages only; all refused, honest invariants hold.
    let mut c = Cluster::new(seed ^ 1);
    let phase2 = total - phase1;
    let mut injected = 0u64;
    let mut rounds = 0u64;
    while c.steps < phase2 {
        rounds += 1;
        c.honest_round(&mut rng, true)
            .unwrap_or_else(|e| panic!("seed {seed}, phase 2 step {}: {e}", c.steps));
        for _ in 0..4 {
            let to = pick(&mut rng, &IDS);
            let m = impossible(&mut rng, &c, to);
            let before = c.refused_total();
            let desc = format!("{m:?}");
            let _ = c.nodes.get_mut(&to).map(|n| n.step(m));
            c.steps += 1;
            injected += 1;
            assert_eq!(
                c.refused_total(),
                before + 1,
                "seed {seed}: an impossible message was not refused: {desc}"
            );
            c.drain(true)
                .unwrap_or_else(|e| panic!("seed {seed}, phase 2 step {}: {e}", c.steps));
        }
    }
    let committed = c
        .nodes
        .values()
        .map(|n| n.status().commit)
        .min()
        .unwrap_or(0);
    eprintln!(
        "{} steps in {:.1?}: phase 1 refused {refused1}; phase 2 refused all {injected} impossible \
         messages over {rounds} rounds, {} proposals, every node committed {committed}",
        phase1 + c.steps,
        started.elapsed(),
        c.proposals
    );
    assert!(
        refused1 > 0,
        "phase 1 refused nothing: the injector is not adversarial"
    );
    assert!(
        committed > rounds / 10,
        "the cluster stopped committing under impossible messages: {committed} after {rounds} rounds"
    );
}
