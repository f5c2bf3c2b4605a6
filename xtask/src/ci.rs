//! `cargo xtask ci`: the gates CI runs, in the order that fails fastest — formatting, lints,
//! then the whole test suite in release (the fault suite's timings assume an optimised server).

use std::process::Command;
use std::time::Instant;

use clap::Args;

#[derive(Debug, Args)]
pub struct CiArgs {
    /// Skip `cargo test` (formatting and lints only).
    #[arg(long)]
    no_test: bool,
}

fn step(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    eprintln!("\n=== cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .current_dir(crate::cluster::workspace_root())
        .args(args)
        .status()
        .map_err(|e| format!("cargo {}: {e}", args.join(" ")))?;
    eprintln!(
        "=== cargo {}: {status} in {:.0}s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

pub fn run(a: CiArgs) -> Result<(), String> {
    step(&["fmt", "--all", "--", "--check"])?;
    step(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    if !a.no_test {
        step(&["test", "--workspace", "--release"])?;
    }
    Ok(())
}
