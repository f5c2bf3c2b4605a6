//! `cargo xtask auth-cost`: what turning v2 auth on costs, measured on one cluster.
//!
//! Two clusters never give the same figures on a shared 2-core machine (which member leads,
//! page cache, the neighbours of the moment), and that difference is larger than the cost being
//! measured. So one 3-node cluster is used for both sides: auth is switched off and on between
//! runs (`PUT`/`DELETE /v2/auth/enable`, replicated like any other change), the runs of each
//! pair alternate in ABBA order (off,on then on,off) so that drift cancels, and the ratio of a
//! workload is the median of its per-pair ratios. With auth on, the bench runs as an ordinary
//! user whose role grants `/bench*`, so every request pays for the credential check and the
//! permission match, as a real client's would. Leader CPU per operation is reported beside
//! throughput: it is the steadier of the two.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;

use super::cluster::*;
use super::paired::*;
use super::runs::*;
use super::*;

#[derive(Debug, Args)]
pub struct AuthCostArgs {
    /// ABBA pairs per workload (each pair is one run with auth off and one with it on).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=50))]
    pairs: u32,
    #[command(flatten)]
    run: PairedRun,
    /// Report path.
    #[arg(long, default_value = "auth-cost-report.md")]
    out: PathBuf,
}

const ROOT: &str = "root:xtask-root-pw";
const BENCHER: &str = "bencher:xtask-bench-pw";

pub fn run(a: AuthCostArgs) -> Result<()> {
    a.run.check()?;
    install_ctrlc_handler(false);
    let root = workspace_root();
    if !a.run.no_build {
        build(&root, true)?;
    }
    let bin_dir = release_dir(&root);
    let (ctl, deimos) = (bin_dir.join("deimosctl"), bin_dir.join("deimos"));
    for b in [&ctl, &deimos] {
        if !b.exists() {
            return Err(format!(
                "{} not found (build it or drop --no-build)",
                b.display()
            ));
        }
    }
    let bench = a.run.bench_args(&a.out);
    let base = base_dir();
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let outcome = measure(&ctl, &deimos, &base, &a, &bench);
    let _ = std::fs::remove_dir_all(&base);
    let pairs = outcome?;
    let report = report(&a, &pairs);
    print!("{report}");
    std::fs::write(&a.out, &report).map_err(|e| format!("{}: {e}", a.out.display()))?;
    eprintln!("report written to {}", a.out.display());
    Ok(())
}

fn measure(
    ctl: &Path,
    deimos: &Path,
    base: &Path,
    a: &AuthCostArgs,
    bench: &BenchArgs,
) -> Result<Vec<Pair>> {
    eprintln!("starting 3-node Deimos ...");
    let p = prepare(start_deimos(deimos, base, false)?, ctl, bench)?;
    let leader = p.leader.clone();
    let admin = |args: &[&str], creds: Option<&str>| -> Result<()> {
        let mut cmd = Command::new(ctl);
        cmd.args(["--endpoints", &leader]);
        if let Some(c) = creds {
            cmd.args(["--username", c]);
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("deimosctl {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "deimosctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let bencher = BENCHER.split(':').next().unwrap_or("bencher");
    admin(&["user", "add", ROOT], None)?;
    admin(&["role", "add", "bench"], None)?;
    admin(
        &["role", "grant", "bench", "--path", "/bench*", "--readwrite"],
        None,
    )?;
    admin(&["user", "add", BENCHER], None)?;
    admin(&["user", "grant", bencher, "--roles", "bench"], None)?;
    let mut auth_on = false;
    let mut set_auth = |on: bool| {
        if on == auth_on {
            return Ok(());
        }
        auth_on = on;
        if on {
            admin(&["auth", "enable"], None)
        } else {
            admin(&["auth", "disable"], Some(ROOT))
        }
    };

    let mut pairs = Vec::new();
    for pair in 1..=a.pairs {
        eprintln!("pair {pair} of {}", a.pairs);
        for &w in &a.run.workloads {
            let mut got: [Option<RunResult>; 2] = [None, None];
            for side in order(pair) {
                let on = side == Side::B;
                set_auth(on)?;
                let target = Target {
                    system: System::Deimos,
                    round: pair,
                    leader: &leader,
                    members: &p.members,
                    credentials: on.then_some(BENCHER),
                };
                got[usize::from(on)] = Some(run_one(ctl, &target, w, a.run.clients, bench)?);
            }
            if role(System::Deimos, &leader).ok().as_deref() != Some("leader") {
                return Err(format!(
                    "{leader} lost leadership during pair {pair}; the figures would compare a \
                     leader with a follower"
                ));
            }
            if let Some(on) = &got[1] {
                let errors = on.json.get("errors").and_then(serde_json::Value::as_u64);
                if errors != Some(0) {
                    return Err(format!(
                        "the run with auth on had {errors:?} errors: the bench user's grant \
                         does not cover the bench keys, so it measured refusals"
                    ));
                }
            }
            if let [Some(off), Some(on)] = got {
                pairs.push(Pair {
                    pair,
                    workload: w,
                    a: off,
                    b: on,
                });
            }
        }
    }
    Ok(pairs)
}

fn report(a: &AuthCostArgs, pairs: &[Pair]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Auth cost: the same cluster with v2 auth off and on\n");
    let _ = writeln!(
        s,
        "{} ABBA pairs x {} s runs, {} clients, 1000 keys, 256-byte values; auth on = bench as a \
         user whose role grants /bench*. Ratio = on/off, median over pairs.\n",
        a.pairs, a.run.duration, a.run.clients
    );
    s.push_str(&tables(&a.run.workloads, pairs, "off", "on"));
    s
}
