//! `cargo xtask <command>`: project automation that is easier to keep correct in Rust than in shell.
//!
//! Each subcommand lives in its own module so others can add commands (`ci`, `cluster`, ...)
//! without touching the existing ones: add a module, a variant to [`Command`] and one match arm.

mod bench;

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
}

fn main() -> ExitCode {
    let args = Xtask::parse();
    let result = match args.command {
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
