//! Raft timing from the tick and duration flags, with one rule of precedence between them.

use std::time::Duration;

use super::Flags;

/// Timing flags that do not make a usable Raft timing.
#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    #[error("--heartbeat-timeout must be within 1..=1000 ticks")]
    HeartbeatTicks,
    #[error("--election-timeout-ticks must be at most 100000")]
    ElectionTicks,
    /// A duration flag given explicitly that the tick flags say otherwise about.
    #[error(
        "{flag} {given:?} contradicts --tick-interval {tick:?} x {ticks_flag} {ticks} = \
         {derived:?}; give one or the other"
    )]
    Contradiction {
        flag: &'static str,
        given: Duration,
        tick: Duration,
        ticks_flag: &'static str,
        ticks: u64,
        derived: Duration,
    },
    #[error(
        "the election timeout must be at least 3 ticks and longer than the heartbeat interval \
         (--election-timeout must be at least 3 heartbeat intervals)"
    )]
    ElectionTooShort,
}

/// A duration flag's value: plain numbers are milliseconds, as etcd's --heartbeat-interval and
/// --election-timeout; otherwise humantime's forms (`100ms`, `1s`).
pub(super) fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s).map_err(|source| DurationError {
        value: s.to_string(),
        source,
    })
}

/// A duration flag's value that is neither milliseconds nor a humantime duration.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {value:?}: {source}")]
pub struct DurationError {
    value: String,
    #[source]
    source: humantime::DurationError,
}

/// Raft timing after applying the precedence between tick and duration flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub tick_interval: Duration,
    pub heartbeat_tick: usize,
    pub election_tick: usize,
}

impl Timing {
    pub fn heartbeat_interval(&self) -> Duration {
        self.tick_interval * self.heartbeat_tick as u32
    }
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_tick as u32
    }

    /// One source of truth: with no tick flag, the duration flags (one tick = one heartbeat
    /// interval); with any tick flag, tick x count, where the duration flags only fill in what
    /// the tick flags leave out. Explicit durations that disagree with tick flags are rejected
    /// rather than one of them silently ignored.
    pub fn from_flags(f: &Flags) -> Result<Timing, TimingError> {
        let (hb_given, el_given) = f.explicit_durations;
        if f.heartbeat_interval.is_zero() {
            return Err(TimingError::NotPositive("--heartbeat-interval"));
        }
        let tick = f.tick_interval.unwrap_or(f.heartbeat_interval);
        if tick.is_zero() {
            return Err(TimingError::NotPositive("--tick-interval"));
        }
        let hb = f.heartbeat_timeout.unwrap_or(1);
        if hb == 0 || hb > 1000 {
            return Err(TimingError::HeartbeatTicks);
        }
        let el = match f.election_timeout_ticks {
            Some(n) => n,
            None => (f.election_timeout.as_nanos() / tick.as_nanos()) as u64,
        };
        if el > 100_000 {
            return Err(TimingError::ElectionTicks);
        }
        let t = Timing {
            tick_interval: tick,
            heartbeat_tick: hb as usize,
            election_tick: el as usize,
        };
        let tick_flags = f.tick_interval.is_some() || f.heartbeat_timeout.is_some();
        if hb_given && tick_flags && t.heartbeat_interval() != f.heartbeat_interval {
            return Err(TimingError::Contradiction {
                flag: "--heartbeat-interval",
                given: f.heartbeat_interval,
                tick,
                ticks_flag: "--heartbeat-timeout",
                ticks: hb,
                derived: t.heartbeat_interval(),
            });
        }
        if el_given
            && f.election_timeout_ticks.is_some()
            && t.election_timeout() != f.election_timeout
        {
            return Err(TimingError::Contradiction {
                flag: "--election-timeout",
                given: f.election_timeout,
                tick,
                ticks_flag: "--election-timeout-ticks",
                ticks: el,
                derived: t.election_timeout(),
            });
        }
        if t.election_tick < 3 || t.election_tick <= t.heartbeat_tick {
            return Err(TimingError::ElectionTooShort);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_ms_numbers_and_units() {
        assert_eq!(parse_duration("100").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert!(parse_duration("soon").is_err());
    }

    fn timing(args: &[&str]) -> Result<Timing, String> {
        let mut all = vec!["deimos"];
        all.extend_from_slice(args);
        Timing::from_flags(&Flags::try_parse_with_sources(all).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tick_flags_override_and_contradictions_are_rejected() {
        let d = timing(&[]).unwrap();
        assert_eq!(d.tick_interval, Duration::from_millis(100));
        assert_eq!((d.heartbeat_tick, d.election_tick), (1, 10));
        let t = timing(&["--tick-interval", "50ms", "--election-timeout-ticks", "20"]).unwrap();
        assert_eq!(t.election_timeout(), Duration::from_secs(1));
        assert_eq!(t.heartbeat_interval(), Duration::from_millis(50));
        // Defaulted durations fill in what the tick flags leave out.
        let t = timing(&["--tick-interval", "50ms", "--heartbeat-timeout", "2"]).unwrap();
        assert_eq!((t.heartbeat_tick, t.election_tick), (2, 20));
        // Explicit durations that agree are fine; ones that disagree are errors.
        assert!(timing(&[
            "--heartbeat-interval",
            "100ms",
            "--tick-interval",
            "50ms",
            "--heartbeat-timeout",
            "2"
        ])
        .is_ok());
        let e = timing(&["--heartbeat-interval", "100ms", "--tick-interval", "50ms"]).unwrap_err();
        assert!(e.contains("contradicts --tick-interval"), "{e}");
        assert!(timing(&["--election-timeout", "1s", "--election-timeout-ticks", "5"]).is_err());
        assert!(timing(&["--heartbeat-timeout", "5", "--election-timeout-ticks", "5"]).is_err());
        assert!(timing(&["--heartbeat-timeout", "0"]).is_err());
    }
}
