//! Faults injected into a running cluster: what each one does and how it is undone.
//!
//! The nemesis works on the harness's [`Cluster`] (processes) and the proxy's [`Net`] (links)
//! from one thread, between the clients' requests; clients only know the nodes' client URLs,
//! which survive restarts, so they need no coordination with it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng as _, RngCore, SeedableRng};

use crate::harness::Cluster;
use crate::proxy::Net;

/// How long the cluster may take to agree on a leader after a fault is undone. Generous: on a
/// loaded 2-core machine an election after SIGCONT or a heal can take several timeouts.
pub const RECOVERY: Duration = Duration::from_secs(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` a node (the leader half of the time) and restart it after the hold.
    Kill9,
    /// `kill -9` every node at once, restart them all.
    Kill9All,
    /// `SIGSTOP` the leader, `SIGCONT` after the hold: a paused leader that wakes up believing
    /// it still leads is exactly what the lease must survive.
    Stop,
    /// Cut the leader off from every other node.
    PartitionLeader,
    /// Split the cluster into a random minority and majority (the leader lands on either side).
    Split,
    /// Restart one node with its clock running 8% fast or slow (within the 10% tolerance),
    /// steer leadership to it, then isolate it: a leader whose lease clock is slow is where a
    /// too-small drift allowance would show.
    Skew,
    /// Replace a random follower as an operator replaces a dead machine: remove it through the
    /// API, stop it, wipe its data dir, add it back with the same name and peer URL (the same
    /// member id) and start it empty with `--initial-cluster-state existing`. It catches up
    /// from the log or, once the log is compacted past it, from a snapshot (issue 22).
    Replace,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill9,
        FaultKind::Kill9All,
        FaultKind::Stop,
        FaultKind::PartitionLeader,
        FaultKind::Split,
        FaultKind::Skew,
        FaultKind::Replace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill9 => "kill9",
            FaultKind::Kill9All => "kill9-all",
            FaultKind::Stop => "stop",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::Split => "split",
            FaultKind::Skew => "skew",
            FaultKind::Replace => "replace",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "kill9" | "kill" => Ok(FaultKind::Kill9),
            "kill9-all" | "kill-all" | "crash" => Ok(FaultKind::Kill9All),
            "stop" | "pause" => Ok(FaultKind::Stop),
            // `partition` alone means what the issue lists first: isolate the leader.
            "partition" | "partition-leader" => Ok(FaultKind::PartitionLeader),
            "split" => Ok(FaultKind::Split),
            "skew" | "clock" => Ok(FaultKind::Skew),
            "replace" | "replace-member" => Ok(FaultKind::Replace),
            other => Err(format!(
                "unknown fault {other:?} (kill9, kill9-all, stop, partition, split, skew, replace)"
            )),
        }
    }
}

/// Parse `kill9,stop,partition`.
pub fn parse_faults(s: &str) -> Result<Vec<FaultKind>, String> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let f: FaultKind = part.parse()?;
        if !v.contains(&f) {
            v.push(f);
        }
    }
    Ok(v)
}

/// The seeded generator of clients and the nemesis: a run is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(StdRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(StdRng::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        self.0.gen_range(0..n.max(1))
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.0.gen_bool(p.clamp(0.0, 1.0))
    }

    /// Uniform in `lo..hi`, to the millisecond; `lo` when the range is empty.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.0.gen_range(0..span.max(1)))
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        v.shuffle(&mut self.0);
    }
}

/// Injects faults and remembers what it did.
pub struct Nemesis {
    pub rng: Rng,
    /// How long a fault is held before it is undone.
    pub hold: (Duration, Duration),
    /// Faults injected, by kind.
    pub counts: BTreeMap<FaultKind, usize>,
    /// Human-readable log of every step, with times since the start.
    pub log: Vec<String>,
    started: Instant,
    /// The node currently running with a skewed clock, if any.
    skewed: Option<usize>,
    skew_flip: bool,
}

/// Clock rates for the skew fault: 8% slow or fast, inside the 10% drift tolerance.
pub const SKEW_RATES: [f64; 2] = [0.92, 1.08];

impl Nemesis {
    pub fn new(seed: u64, hold: (Duration, Duration)) -> Nemesis {
        Nemesis {
            rng: Rng::new(seed),
            hold,
            counts: BTreeMap::new(),
            log: Vec::new(),
            started: Instant::now(),
            skewed: None,
            skew_flip: false,
        }
    }

    pub fn note(&mut self, msg: String) {
        let line = format!("[{:>6.1}s] {msg}", self.started.elapsed().as_secs_f64());
        if std::env::var_os("DEIMOS_JEPSEN_VERBOSE").is_some() {
            eprintln!("nemesis: {line}");
        }
        self.log.push(line);
    }

    fn hold_time(&mut self) -> Duration {
        let (lo, hi) = self.hold;
        self.rng.duration(lo, hi)
    }

    /// The current leader (waiting for one if needed).
    fn leader(&self, c: &Cluster) -> usize {
        c.wait_leader(RECOVERY)
    }

    /// Inject one fault of `kind`, hold it, undo it, and wait until the cluster has a leader
    /// again. Returns after recovery, so faults never overlap.
    pub fn run_one(&mut self, kind: FaultKind, c: &mut Cluster, net: &Net) {
        *self.counts.entry(kind).or_default() += 1;
        let n = c.len();
        let hold = self.hold_time();
        match kind {
            FaultKind::Kill9 => {
                let target = if self.rng.chance(0.5) {
                    self.leader(c)
                } else {
                    self.rng.below(n)
                };
                self.note(format!("kill -9 n{} for {hold:?}", target + 1));
                c.kill9(target);
                std::thread::sleep(hold);
                c.restart(target);
                self.note(format!("restarted n{}", target + 1));
            }
            FaultKind::Kill9All => {
                self.note(format!("kill -9 all nodes for {hold:?}"));
                c.kill9_all();
                std::thread::sleep(hold);
                for i in 0..n {
                    c.restart(i);
                }
                self.note("restarted all".into());
            }
            FaultKind::Stop => {
                let l = self.leader(c);
                self.note(format!("SIGSTOP leader n{} for {hold:?}", l + 1));
                c.sigstop(l);
                std::thread::sleep(hold);
                c.sigcont(l);
                self.note(format!("SIGCONT n{}", l + 1));
            }
            FaultKind::PartitionLeader => {
                let l = self.leader(c);
                self.note(format!("isolate leader n{} for {hold:?}", l + 1));
                net.isolate(l, n);
                std::thread::sleep(hold);
                net.heal();
                self.note("healed".into());
            }
            FaultKind::Split => {
                let mut all: Vec<usize> = (0..n).collect();
                self.rng.shuffle(&mut all);
                let (minority, majority) = all.split_at((n - 1) / 2);
                let l = c.leader();
                self.note(format!(
                    "split minority {:?} | majority {:?} (leader {:?}) for {hold:?}",
                    names(minority),
                    names(majority),
                    l.map(|l| format!("n{}", l + 1))
                ));
                net.partition(minority, majority);
                std::thread::sleep(hold);
                net.heal();
                self.note("healed".into());
            }
            FaultKind::Skew => self.skew(c, net, hold),
            FaultKind::Replace => self.replace(c, hold),
        }
        let l = c.wait_leader(RECOVERY);
        self.note(format!("recovered: leader n{}", l + 1));
    }

    /// See [`FaultKind::Skew`].
    fn skew(&mut self, c: &mut Cluster, net: &Net, hold: Duration) {
        let n = c.len();
        // Put the previously skewed node back to real time first: one skewed node at a time.
        if let Some(prev) = self.skewed.take() {
            set_clock_rate(c, prev, None);
            c.kill9(prev);
            c.restart(prev);
            self.note(format!("n{} back to clock rate 1.0", prev + 1));
            c.wait_leader(RECOVERY);
        }
        let target = self.leader(c);
        let rate = SKEW_RATES[usize::from(self.skew_flip)];
        self.skew_flip = !self.skew_flip;
        set_clock_rate(c, target, Some(rate));
        c.kill9(target);
        c.restart(target);
        self.skewed = Some(target);
        self.note(format!("n{} restarted with clock rate {rate}", target + 1));
        // Steer leadership to the skewed node by isolating whoever else leads, briefly.
        for _ in 0..6 {
            let l = c.wait_leader(RECOVERY);
            if l == target {
                break;
            }
            net.isolate(l, n);
            std::thread::sleep(Duration::from_millis(1500));
            net.heal();
        }
        let l = c.wait_leader(RECOVERY);
        self.note(format!(
            "leader is n{}{}; isolating it for {hold:?}",
            l + 1,
            if l == target { " (skewed)" } else { "" }
        ));
        net.isolate(l, n);
        std::thread::sleep(hold);
        net.heal();
        self.note("healed".into());
    }

    /// See [`FaultKind::Replace`]. The member stays out for the hold time, so the remaining
    /// voters run (and compact) without it. Panics, with the node logs, if the cluster refuses
    /// the removal or the add for [`RECOVERY`]: that is a failure of the system under test.
    fn replace(&mut self, c: &mut Cluster, hold: Duration) {
        let l = self.leader(c);
        let followers: Vec<usize> = (0..c.len())
            .filter(|&i| i != l && c.node(i).is_running())
            .collect();
        let Some(&target) = followers.get(self.rng.below(followers.len().max(1))) else {
            self.note("replace: no running follower; skipped".into());
            return;
        };
        let name = format!("n{}", target + 1);
        fn or_fail<T>(r: Result<T, String>, name: &str, c: &Cluster) -> T {
            r.unwrap_or_else(|e| panic!("replace {name}: {e}\n{}", c.log_tails(40)))
        }
        let id = c.member_id(target).unwrap_or_else(|| "?".into());
        or_fail(c.remove_member(target, RECOVERY), &name, c);
        self.note(format!(
            "removed {name} ({id}); wiping it, out for {hold:?}"
        ));
        c.stop_and_wipe(target);
        std::thread::sleep(hold);
        let id = or_fail(c.add_and_start(target, RECOVERY), &name, c);
        self.note(format!(
            "re-added {name} ({id}) with the same URL, started empty"
        ));
        // A member that never catches up (issue 22: it stalled at the snapshot it installed)
        // is the failure this fault exists for, whatever the history says.
        let took = or_fail(c.wait_caught_up(&c.running(), RECOVERY), &name, c);
        let snapshots = c.metric(target, "deimos_raft_snapshots_installed_total", &[]);
        self.note(format!(
            "{name} caught up in {took:?} ({snapshots} snapshot(s) installed)"
        ));
    }

    /// Undo anything still in effect (a skewed clock stays: it is a standing condition, not a
    /// failure) and wait for a leader.
    pub fn heal_all(&mut self, c: &mut Cluster, net: &Net) {
        net.heal();
        for i in 0..c.len() {
            if !c.node(i).is_running() {
                c.restart(i);
            }
        }
        c.wait_leader(RECOVERY);
    }

    /// `faults=[kill9 x3, stop x2]`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        format!("[{}]", parts.join(", "))
    }
}

fn names(v: &[usize]) -> Vec<String> {
    v.iter().map(|i| format!("n{}", i + 1)).collect()
}

/// Set (or clear, with `None`) node `i`'s `--unsafe-clock-rate` for its next start.
pub fn set_clock_rate(c: &mut Cluster, i: usize, rate: Option<f64>) {
    let args = &mut c.node_mut(i).extra_args;
    if let Some(p) = args.iter().position(|a| a == "--unsafe-clock-rate") {
        args.drain(p..(p + 2).min(args.len()));
    }
    if let Some(r) = rate {
        args.push("--unsafe-clock-rate".into());
        args.push(r.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_reject_typos() {
        assert_eq!(
            parse_faults("kill9,stop,partition,split,skew,replace").expect("valid"),
            vec![
                FaultKind::Kill9,
                FaultKind::Stop,
                FaultKind::PartitionLeader,
                FaultKind::Split,
                FaultKind::Skew,
                FaultKind::Replace
            ]
        );
        assert_eq!(
            parse_faults("kill9,kill9").expect("dup"),
            vec![FaultKind::Kill9]
        );
        assert!(parse_faults("kill9,partiton").is_err());
        for f in FaultKind::ALL {
            assert_eq!(f.name().parse::<FaultKind>(), Ok(f));
        }
    }

    #[test]
    fn the_rng_is_reproducible_from_its_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        assert!((0..1000).all(|_| a.below(3) < 3));
    }
}
