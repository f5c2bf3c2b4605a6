//! Tests of the bench's argument parsing, run selection, ratios and report.
use super::*;
use clap::Parser;

#[derive(Parser)]
struct T {
    #[command(flatten)]
    a: BenchArgs,
}

#[test]
fn args_defaults_and_lists() {
    let t = T::try_parse_from(["x"]).expect("defaults");
    assert_eq!(t.a.clients, vec![1, 16, 64]);
    assert_eq!(t.a.workloads.len(), 5);
    assert_eq!(t.a.duration, 10);
    assert_eq!(t.a.rounds, 1);
    assert!(T::try_parse_from(["x", "--rounds", "0"]).is_err());
    let t = T::try_parse_from(["x", "--clients", "2,4", "--workloads", "put,get-quorum"])
        .expect("lists");
    assert_eq!(t.a.clients, vec![2, 4]);
    assert_eq!(
        t.a.workloads,
        vec![BenchWorkload::Put, BenchWorkload::GetQuorum]
    );
    assert!(T::try_parse_from(["x", "--clients", "0"]).is_err());
    assert!(T::try_parse_from(["x", "--workloads", "scan"]).is_err());
}

#[test]
fn proc_stat_cpu() {
    let line = "77 (etcd (x)) S 1 2 3 4 5 6 7 8 9 10 123 77 0 0 20 0 8 0 100";
    assert_eq!(parse_stat_cpu(line), Some(2.0));
    assert_eq!(parse_stat_cpu("77 (etcd) S"), None);
    let members = [(1, true), (2, false), (3, false)];
    let (l, f) = cpu_split(
        &members,
        &[Some(1.0), Some(1.0), None],
        &[Some(1.5), Some(1.25), Some(9.0)],
    );
    assert_eq!(l, Some(0.5));
    assert_eq!(f, Some(0.25), "a member without both samples is left out");
}

#[test]
fn the_median_run_of_each_cell_is_reported() {
    let run = |round, t: f64| RunResult {
        round,
        system: System::Deimos,
        workload: BenchWorkload::Put,
        clients: 16,
        json: serde_json::json!({ "throughput_ops": t }),
        leader_cpu_s: None,
        followers_cpu_s: None,
    };
    let one = [run(1, 5.0)];
    let three = [run(1, 9.0), run(2, 1.0), run(3, 4.0)];
    let four = [run(1, 9.0), run(2, 1.0), run(3, 4.0), run(4, 7.0)];
    let pick = |rs: &[RunResult]| find(rs, System::Deimos, BenchWorkload::Put, 16).map(|r| r.round);
    assert_eq!(pick(&one), Some(1));
    assert_eq!(pick(&three), Some(3), "4.0 is the median of 9, 1, 4");
    assert_eq!(pick(&four), Some(3), "the lower middle of an even count");
    assert_eq!(
        find(&three, System::Etcd, BenchWorkload::Put, 16).map(|r| r.round),
        None
    );
    assert_eq!(
        all_throughputs(&three, System::Deimos, BenchWorkload::Put, 16),
        "9, 1, 4"
    );
}

#[test]
fn ratios_pair_runs_of_the_same_round() {
    let run = |system, round, t: f64| RunResult {
        round,
        system,
        workload: BenchWorkload::Put,
        clients: 16,
        json: serde_json::json!({ "throughput_ops": t }),
        leader_cpu_s: None,
        followers_cpu_s: None,
    };
    use System::{Deimos as D, Etcd as E};
    let rs = [
        run(D, 1, 10.0),
        run(E, 1, 10.0),
        run(D, 2, 30.0),
        run(E, 2, 10.0),
        run(D, 3, 20.0),
        run(E, 3, 5.0),
        run(D, 4, 99.0), // etcd missing in round 4
        run(D, 5, 1.0),
        run(E, 5, 0.0), // no ratio to a zero
    ];
    let (d, e) = ((D, BenchWorkload::Put, 16), (E, BenchWorkload::Put, 16));
    assert_eq!(round_ratios(&rs, d, e), [1.0, 3.0, 4.0]);
    // The ratio of the medians (20 / 10) would hide that Deimos led by 3x or more in two
    // of the three paired rounds.
    assert_eq!(paired(&rs, d, e), Some(3.0));
    assert_eq!(paired(&rs[..4], d, e), Some(1.0), "lower middle of two");
    assert_eq!(paired(&rs[6..], d, e), None);
    assert_eq!(ratio(paired(&rs, d, e)), "3.00x");
    assert_eq!(ratio(None), "n/a");
    // The target line judges the paired ratio and shows the other beside it: the median
    // runs are 20 (of 1, 10, 20, 30, 99) and 5 (lower middle of 0, 5, 10, 10).
    let mut o = String::new();
    check(&mut o, "PUTs", &rs, (d, e), 3.5);
    assert_eq!(
        o,
        "- PUTs: 3.00x (target >= 3.5x): **missed** (ratio of the medians: 4.00x)\n"
    );
}

#[test]
fn report_side_by_side() {
    let a = T::try_parse_from([
        "x",
        "--clients",
        "16",
        "--workloads",
        "get-lease,get-quorum",
    ])
    .expect("args")
    .a;
    let mk = |s, w, t: f64, p99: f64| RunResult {
        round: 1,
        system: s,
        workload: w,
        clients: 16,
        json: serde_json::json!({"throughput_ops": t, "errors": 0, "ok": 1000,
            "client_cpu_s": 0.01, "latency_ms": {"p50": 0.5, "p99": p99}}),
        leader_cpu_s: Some(0.02),
        followers_cpu_s: None,
    };
    let results = vec![
        mk(System::Deimos, BenchWorkload::GetLease, 60000.0, 1.0),
        mk(System::Deimos, BenchWorkload::GetQuorum, 10000.0, 3.0),
        mk(System::Etcd, BenchWorkload::GetLease, 20000.0, 2.0),
    ];
    let ctx = Context {
        args_line: "cargo xtask bench".into(),
        etcd_version: "etcd Version: 3.4.23".into(),
        deimos_rev: "abc".into(),
        fs_type: "ext2/ext3".into(),
        leaders: vec![],
        load_before: "0.1 0.2 0.3".into(),
        load_after: "0.4 0.5 0.6".into(),
        warnings: vec!["etcd put with 16 clients: leader changed".into()],
    };
    let mounts = "/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n";
    assert_eq!(
        mount_fs_type(mounts, Path::new("/work/x")).as_deref(),
        Some("ext4")
    );
    assert_eq!(
        mount_fs_type(mounts, Path::new("/tmp/b")).as_deref(),
        Some("tmpfs")
    );
    let r = report(&a, &ctx, &results, &Extra::default());
    assert!(
        r.contains("| get lease | 16 | 60000 | 20000 | 3.00x |"),
        "{r}"
    );
    assert!(r.contains("| get quorum | 16 | 10000 | - | n/a |"), "{r}");
    assert!(r.contains("Deimos lease reads vs Deimos quorum reads, 16 clients: 6.00x"));
    assert!(
        r.contains("Deimos lease reads vs etcd plain GET, 16 clients: 3.00x (target >= 2x): met")
    );
    assert!(r.contains("1.000 ms vs 2.000 ms: met"));
    assert!(r.contains("quorum reads vs etcd, 16 clients: n/a"));
    assert!(r.contains("```json"));
    assert!(r.contains("## Warnings\n\n- etcd put with 16 clients: leader changed\n"));
    // 0.02 s of leader CPU and 0.01 s of client CPU over 1000 operations.
    assert!(
        r.contains("| get lease | 16 | 20.0 | - | 10.0 | 20.0 | - | 10.0 |"),
        "{r}"
    );
    assert!(r.contains("\"leader_cpu_s\": 0.02"), "{r}");
}

#[test]
fn ceiling_row_and_latency_targets() {
    let a = T::try_parse_from(["x", "--clients", "1,16", "--workloads", "put,get-lease"])
        .expect("args")
        .a;
    let mk = |s, w, c, round, t: f64, p50: f64| RunResult {
        round,
        system: s,
        workload: w,
        clients: c,
        json: serde_json::json!({"throughput_ops": t, "errors": 0, "ok": 10,
            "latency_ms": {"p50": p50, "p99": p50 * 2.0}}),
        leader_cpu_s: None,
        followers_cpu_s: None,
    };
    use BenchWorkload::{GetLease, Put};
    use System::{Ceiling as H, Deimos as D, Etcd as E};
    let results = vec![
        mk(D, GetLease, 16, 1, 90.0, 0.2),
        mk(H, GetLease, 16, 1, 100.0, 0.1),
        mk(D, GetLease, 16, 2, 80.0, 0.2),
        mk(H, GetLease, 16, 2, 100.0, 0.1),
        // p50 ratios 0.5 and 1.5 per round: the paired figure is the lower middle, 0.5.
        mk(D, Put, 1, 1, 10.0, 0.5),
        mk(E, Put, 1, 1, 10.0, 1.0),
        mk(D, Put, 1, 2, 10.0, 1.5),
        mk(E, Put, 1, 2, 10.0, 1.0),
    ];
    let ctx = Context {
        args_line: "cargo xtask bench".into(),
        etcd_version: "3.4".into(),
        deimos_rev: "abc".into(),
        fs_type: "ext4".into(),
        leaders: vec![],
        load_before: "0".into(),
        load_after: "0".into(),
        warnings: vec![],
    };
    let r = report(&a, &ctx, &results, &Extra::default());
    assert!(
        r.contains("## Ceiling: Deimos lease reads vs a bare hyper server"),
        "{r}"
    );
    assert!(
        r.contains(
            "| 16 | 80 | 100 | 0.80x | 0.200 | 0.100 | 0.400 | 0.200 | - | - | 0.90x, 0.80x |"
        ),
        "{r}"
    );
    assert!(r.contains(
        "- lease reads vs the bare hyper ceiling, 16 clients: 0.80x (target >= 0.85x): **missed**"
    ));
    assert!(r.contains("- PUT p50 latency at 1 client, Deimos/etcd: 0.50x (target <= 0.8x): met"));
    assert!(r.contains(
        "- quorum GET p50 latency at 1 client, Deimos/etcd: n/a (target <= 0.8x): not measured"
    ));
    assert!(r.contains("\"system\": \"hyper\""), "{r}");
    // Without a ceiling run there is no ceiling section.
    let r = report(&a, &ctx, &results[4..], &Extra::default());
    assert!(!r.contains("## Ceiling"));
}

#[test]
fn a_scale_run_alone_reports_only_its_section() {
    let a = T::try_parse_from(["x", "--workloads", "scale", "--keys", "10", "--skip-etcd"])
        .expect("args")
        .a;
    assert_eq!(a.systems(), vec![System::Deimos]);
    let ctx = Context {
        args_line: "cargo xtask bench".into(),
        etcd_version: "not run".into(),
        deimos_rev: "abc".into(),
        fs_type: "ext4".into(),
        leaders: vec![],
        load_before: "0".into(),
        load_after: "0".into(),
        warnings: vec![],
    };
    let extra = Extra {
        watches: vec![],
        scales: vec![scale::ScaleResult {
            round: 1,
            system: System::Deimos,
            json: serde_json::json!({"ingest_ops": 1234.0}),
        }],
    };
    let r = report(&a, &ctx, &[], &extra);
    assert!(r.contains("## Scale: 10 keys"), "{r}");
    assert!(r.contains("| ingest, PUT/s | 1234 | - | n/a |"), "{r}");
    assert!(r.contains("\"workload\": \"scale\""), "{r}");
    for absent in [
        "## Results",
        "## Where the CPU goes",
        "## Acceptance targets",
    ] {
        assert!(!r.contains(absent), "{absent} in {r}");
    }
}
