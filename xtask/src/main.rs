//! `cargo xtask <command>`: project automation that is easier to keep correct in Rust than in shell.
//!
//! Each subcommand lives in its own module so others can add commands (`ci`, `cluster`, ...)
//! without touching the existing ones: add a module, a variant to [`Command`] and one match arm.

mod bench;
mod ci;
mod cluster;
mod jepsen;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Deimos project automation")]
struct Xtask {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark a local 3-node Deimos cluster against a local 3-node etcd 3.4 and write a report.
    Bench(bench::BenchArgs),
    /// Same-run A/B of two Deimos binaries: two clusters, ABBA-ordered runs, median ratios.
    Ab(bench::ab::AbArgs),
    /// What turning v2 auth on costs: one cluster, auth off and on in ABBA-ordered runs.
    AuthCost(bench::auth_cost::AuthCostArgs),
    /// What CI runs: fmt --check, clippy -D warnings, the whole test suite in release.
    Ci(ci::CiArgs),
    /// A local 3-node cluster to play with: start | stop | status.
    Cluster(cluster::ClusterArgs),
    /// Fault injection against a real cluster, checked for linearizability.
    Jepsen(jepsen::JepsenArgs),
}

fn main() -> ExitCode {
    let args = Xtask::parse();
    let result = match args.command {
        Command::Bench(a) => bench::run(a),
        Command::Ab(a) => bench::ab::run(a),
        Command::AuthCost(a) => bench::auth_cost::run(a),
        Command::Ci(a) => ci::run(a),
        Command::Cluster(a) => cluster::run(a),
        Command::Jepsen(a) => jepsen::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
