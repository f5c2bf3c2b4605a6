//! The simulated network: partitions plus per-message loss, duplication and delay (which also
//! reorders, since every copy draws its own delay). All randomness comes from the run's single
//! seeded RNG, so a seed replays the same message fates.

use rand::rngs::StdRng;
use rand::Rng;

/// Message-level weather. Faults change it during a run; healing sets `calm()`.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a delivered message is delivered twice.
    pub duplicate: f64,
    /// Usual one-way delay range, microseconds.
    pub min_delay_us: u64,
    pub max_delay_us: u64,
    /// Probability of a much longer delay (reorders past many later messages).
    pub long_delay: f64,
    pub long_delay_max_us: u64,
}

impl NetConfig {
    /// A healthy network: no loss, but delays still vary and duplicates still happen, since neither
    /// is a fault Raft may rely on being absent.
    pub fn calm() -> Self {
        NetConfig {
            drop: 0.0,
            duplicate: 0.01,
            min_delay_us: 200,
            max_delay_us: 3_000,
            long_delay: 0.0,
            long_delay_max_us: 0,
        }
    }

    pub fn random(rng: &mut StdRng) -> Self {
        let max_delay_us = rng.gen_range(1_000..20_000);
        NetConfig {
            drop: if rng.gen_bool(0.3) {
                0.0
            } else {
                rng.gen_range(0.0..0.3)
            },
            duplicate: rng.gen_range(0.0..0.1),
            min_delay_us: rng.gen_range(100..1_000),
            max_delay_us,
            long_delay: rng.gen_range(0.0..0.05),
            long_delay_max_us: rng.gen_range(max_delay_us..200_000),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Network {
    pub cfg: NetConfig,
    /// Partition group of each node (by index); nodes talk only within their group.
    group: Vec<u8>,
}

impl Network {
    pub fn new(nodes: usize) -> Self {
        Network {
            cfg: NetConfig::calm(),
            group: vec![0; nodes],
        }
    }

    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b]
    }

    pub fn is_partitioned(&self) -> bool {
        self.group.iter().any(|&g| g != self.group[0])
    }

    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    /// Put each node in the given group.
    pub fn partition(&mut self, groups: Vec<u8>) {
        assert_eq!(groups.len(), self.group.len());
        self.group = groups;
    }

    /// Cut `node` off from everyone else.
    pub fn isolate(&mut self, node: usize) {
        self.heal();
        self.group[node] = 1;
    }

    pub fn groups(&self) -> &[u8] {
        &self.group
    }

    /// The fate of one message sent now from `from` to `to`: the delays of the copies that will
    /// arrive (none if lost). Partitions are checked again at delivery time, so a partition made
    /// while a message is in flight also cuts it.
    pub fn route(&self, rng: &mut StdRng, from: usize, to: usize) -> Vec<u64> {
        if !self.connected(from, to) || rng.gen_bool(self.cfg.drop) {
            return Vec::new();
        }
        let copies = if rng.gen_bool(self.cfg.duplicate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                if self.cfg.long_delay > 0.0 && rng.gen_bool(self.cfg.long_delay) {
                    rng.gen_range(self.cfg.max_delay_us..=self.cfg.long_delay_max_us)
                } else {
                    rng.gen_range(self.cfg.min_delay_us..=self.cfg.max_delay_us)
                }
            })
            .collect()
    }
}
