//! Injected time. The core counts ticks and never reads a clock; the lease service and the driver
//! read time only through `Clock`, so simulations control it, drift included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic clock. `now()` never goes backwards; its origin is arbitrary.
pub trait Clock: Send + Sync {
    /// Time since this clock's origin. Never less than a value returned before.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock (`Instant`, i.e. CLOCK_MONOTONIC on Linux).
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// The monotonic clock running at `rate` times real speed. With rate 1.0 it is the plain
/// monotonic clock; other rates let fault tests model a node whose oscillator drifts (the driver
/// scales its tick interval by the same rate).
#[derive(Debug, Clone)]
pub struct ScaledClock {
    inner: MonotonicClock,
    rate: f64,
}

impl ScaledClock {
    /// A monotonic clock whose origin is now, running at `rate` times real speed (1.0: real time).
    pub fn new(rate: f64) -> Self {
        ScaledClock {
            inner: MonotonicClock::new(),
            rate,
        }
    }

    /// The speed factor this clock runs at relative to real time.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Duration {
        self.inner.now().mul_f64(self.rate)
    }
}

/// A clock moved by hand (tests and simulation). Cloning shares the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves every clone to `t`. Time never goes backwards: an earlier `t` is ignored (and asserted
    /// against in debug builds).
    pub fn set(&self, t: Duration) {
        let n = t.as_nanos() as u64;
        let prev = self.nanos.fetch_max(n, Ordering::SeqCst);
        debug_assert!(n >= prev, "ManualClock must not go backwards");
    }

    /// Moves every clone forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_clock_runs_at_its_rate() {
        let fast = ScaledClock::new(2.0);
        let a = fast.now();
        std::thread::sleep(Duration::from_millis(20));
        let d = fast.now() - a;
        assert!(d >= Duration::from_millis(40), "{d:?}");
    }
}
