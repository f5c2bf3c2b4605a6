//! What a bench run reports: latency percentiles from an HDR histogram, throughput, the
//! client's own CPU time, and the table or JSON printed at the end.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{ReadMode, Target};
use crate::output::{Output, Table};

/// Highest latency the histogram tracks exactly (10 minutes, in µs); larger samples saturate.
const MAX_TRACKED_US: u64 = 600_000_000;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The result of one bench run; `-o json` prints exactly this.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub workload: String,
    pub mode: Option<ReadMode>,
    pub read_ratio: Option<f64>,
    pub target: Target,
    pub endpoints: Vec<String>,
    pub clients: u32,
    pub keys: u64,
    pub value_size: u64,
    /// Requests completed (ok + errors).
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// The first error seen, to tell a misconfiguration from overload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub duration_s: f64,
    /// Successful requests per second of wall time.
    pub throughput_ops: f64,
    pub latency_ms: LatencyMs,
    /// CPU seconds (user + system) this client process used during the run, so a report can
    /// tell server cost from load-generator cost on a machine they share. None off Linux.
    pub client_cpu_s: Option<f64>,
}

/// A histogram in microseconds with the bounds the bench uses.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("constant histogram bounds are valid")
}

/// Records one latency; sub-microsecond samples count as 1 µs, huge ones saturate at the bound.
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    hist.saturating_record(us);
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles of a histogram in ms; all zero when empty.
pub fn latency_ms(hist: &Histogram<u64>) -> LatencyMs {
    if hist.is_empty() {
        return LatencyMs {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
            mean: 0.0,
        };
    }
    LatencyMs {
        p50: us_to_ms(hist.value_at_quantile(0.50)),
        p90: us_to_ms(hist.value_at_quantile(0.90)),
        p99: us_to_ms(hist.value_at_quantile(0.99)),
        p999: us_to_ms(hist.value_at_quantile(0.999)),
        max: us_to_ms(hist.max()),
        mean: hist.mean() / 1000.0,
    }
}

/// Throughput over wall time, guarding against a zero-length run.
pub fn throughput(ok: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s <= 0.0 {
        0.0
    } else {
        ok as f64 / s
    }
}

/// Parses user + system CPU seconds from a `/proc/<pid>/stat` line (fields 14 and 15, in
/// USER_HZ ticks, which Linux fixes at 100 for user space). The command name may contain spaces
/// and parentheses, so fields are counted after the last `)`.
pub fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

pub(super) fn process_cpu_seconds() -> Option<f64> {
    cpu_seconds_from_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Human-readable result table.
pub fn render(s: &Summary) -> String {
    let label = match (&s.mode, s.read_ratio) {
        (Some(m), Some(r)) => format!("{} ({m:?}, {:.0}% reads)", s.workload, r * 100.0),
        (Some(m), None) => format!("{} ({m:?})", s.workload),
        _ => s.workload.clone(),
    }
    .to_lowercase();
    let mut t = Table::new(&[
        "WORKLOAD", "CLIENTS", "REQUESTS", "ERRORS", "OPS/S", "P50 MS", "P90 MS", "P99 MS",
        "P99.9 MS", "MAX MS",
    ]);
    let l = &s.latency_ms;
    t.row(vec![
        label,
        s.clients.to_string(),
        s.requests.to_string(),
        s.errors.to_string(),
        format!("{:.0}", s.throughput_ops),
        format!("{:.3}", l.p50),
        format!("{:.3}", l.p90),
        format!("{:.3}", l.p99),
        format!("{:.3}", l.p999),
        format!("{:.3}", l.max),
    ]);
    let mut out = t.render();
    if let Some(e) = &s.first_error {
        out.push_str(&format!("first error: {e}\n"));
    }
    out
}

pub fn print(s: &Summary, out: Output) {
    print_as(s, out, render);
}

/// A summary as `-o json` prints it (exactly the struct), or its table.
pub(super) fn print_as<T: Serialize>(s: &T, out: Output, table: fn(&T) -> String) {
    match out {
        Output::Json => match serde_json::to_string_pretty(s) {
            Ok(j) => println!("{j}"),
            Err(e) => eprintln!("Error: cannot encode summary: {e}"),
        },
        Output::Table | Output::Simple => print!("{}", table(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_uniform_samples() {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let l = latency_ms(&h);
        // 3 significant digits: within 0.1% of the true value.
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.001;
        assert!(close(l.p50, 5.0), "p50 {}", l.p50);
        assert!(close(l.p90, 9.0), "p90 {}", l.p90);
        assert!(close(l.p99, 9.9), "p99 {}", l.p99);
        assert!(close(l.p999, 9.99), "p99.9 {}", l.p999);
        assert!(close(l.max, 10.0), "max {}", l.max);
        assert!(close(l.mean, 5.0005), "mean {}", l.mean);
    }

    #[test]
    fn tail_is_visible() {
        let mut h = new_histogram();
        for _ in 0..990 {
            record(&mut h, Duration::from_micros(100));
        }
        for _ in 0..10 {
            record(&mut h, Duration::from_millis(50));
        }
        let l = latency_ms(&h);
        assert!((l.p50 - 0.1).abs() < 0.001);
        assert!((l.p99 - 0.1).abs() < 0.001, "p99 {}", l.p99);
        assert!((l.p999 - 50.0).abs() < 0.1, "p99.9 {}", l.p999);
    }

    #[test]
    fn extremes_do_not_panic() {
        let mut h = new_histogram();
        record(&mut h, Duration::from_nanos(10));
        record(&mut h, Duration::from_secs(100_000));
        let l = latency_ms(&h);
        assert_eq!(l.p50, 0.001);
        assert!(l.max >= 599_000.0);
        assert_eq!(latency_ms(&new_histogram()).max, 0.0);
    }

    #[test]
    fn merged_histograms() {
        let (mut a, mut b) = (new_histogram(), new_histogram());
        record(&mut a, Duration::from_millis(1));
        record(&mut b, Duration::from_millis(3));
        a.add(&b).expect("same bounds");
        assert_eq!(a.len(), 2);
        assert!((latency_ms(&a).max - 3.0).abs() < 0.01);
    }

    #[test]
    fn throughput_maths() {
        assert_eq!(throughput(1000, Duration::from_millis(500)), 2000.0);
        assert_eq!(throughput(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn cpu_from_proc_stat() {
        let line = "4242 (deimos ctl) (x) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 8 0 100 0 0";
        assert_eq!(cpu_seconds_from_stat(line), Some(3.25));
        assert_eq!(cpu_seconds_from_stat("4242 (x) S 1 2"), None);
        assert_eq!(cpu_seconds_from_stat("garbage"), None);
        if cfg!(target_os = "linux") {
            assert!(process_cpu_seconds().is_some());
        }
    }

    fn sample() -> Summary {
        Summary {
            workload: "get".into(),
            mode: Some(ReadMode::Quorum),
            read_ratio: None,
            target: Target::Etcd,
            endpoints: vec!["http://127.0.0.1:2379".into()],
            clients: 16,
            keys: 100,
            value_size: 8,
            requests: 1001,
            ok: 1000,
            errors: 1,
            first_error: Some("HTTP 500".into()),
            duration_s: 2.0,
            throughput_ops: 500.0,
            latency_ms: LatencyMs {
                p50: 1.0,
                p90: 2.0,
                p99: 3.0,
                p999: 4.0,
                max: 5.0,
                mean: 1.5,
            },
            client_cpu_s: Some(0.5),
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).expect("serializes");
        assert_eq!(v["workload"], "get");
        assert_eq!(v["mode"], "quorum");
        assert_eq!(v["target"], "etcd");
        assert_eq!(v["clients"], 16);
        assert_eq!(v["ok"], 1000);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["throughput_ops"], 500.0);
        assert_eq!(v["read_ratio"], serde_json::Value::Null);
        assert_eq!(v["client_cpu_s"], 0.5);
        let l = &v["latency_ms"];
        for (k, want) in [
            ("p50", 1.0),
            ("p90", 2.0),
            ("p99", 3.0),
            ("p99.9", 4.0),
            ("max", 5.0),
        ] {
            assert_eq!(l[k], want, "{k}");
        }
    }

    #[test]
    fn table_has_every_figure() {
        let s = render(&sample());
        let row: Vec<&str> = s.lines().nth(1).expect("row").split_whitespace().collect();
        assert_eq!(row[0], "get");
        assert_eq!(row[1], "(quorum)");
        assert_eq!(
            &row[2..],
            ["16", "1001", "1", "500", "1.000", "2.000", "3.000", "4.000", "5.000"]
        );
        assert!(s.contains("first error: HTTP 500"));
    }
}
