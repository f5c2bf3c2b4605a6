//! `deimosctl`: the operator's command line for Deimos.
//!
//! It speaks only HTTP to the etcd v2 keys API (`/v2/keys`), the members API (`/v2/members`) and
//! Deimos's `/raft/status`, so it works unchanged against a real etcd 3.4 started with
//! `--enable-v2=true` (cluster/lease status then fall back to `/v2/stats/self`).
//!
//! Exit status (also in `--help`), stable so scripts can branch on it:
//! - 0: success
//! - 1: the server answered with an error; etcd errors print as
//!   `Error: <errorCode>: <message> (<cause>) [<index>]` (e.g. `101` for a failed compare-and-swap)
//! - 2: bad arguments
//! - 3: unexpected response from the server
//! - 4: cluster unreachable: no endpoint accepted a connection, or the request timed out

mod bench;
mod cli;
mod client;
mod cluster;
mod http;
mod keys;
mod output;
mod tls;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::{CliError, Client, EXIT_OK, EXIT_PROTOCOL};
use crate::output::Output;

async fn run(cli: Cli) -> Result<(), CliError> {
    let endpoints = cli.endpoints.0;
    match cli.command {
        Command::Bench(w) => {
            let summary = bench::run(w, &endpoints, cli.timeout).await?;
            bench::print(&summary, cli.output);
            Ok(())
        }
        Command::Key(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            keys::run(&mut c, cmd, cli.output).await
        }
        Command::Member(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            cluster::member(&mut c, cmd, cli.output).await
        }
        Command::Cluster(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            cluster::cluster(&mut c, cmd, cli.output).await
        }
        Command::Lease(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            cluster::lease(&mut c, cmd, cli.output).await
        }
    }
}

fn main() -> ExitCode {
    // clap prints usage errors and exits with status 2 itself.
    let cli = Cli::parse();
    let output = cli.output;
    if let Err(e) = tls::init(cli.cacert.as_ref(), cli.cert.as_ref(), cli.key.as_ref()) {
        let e = CliError::Usage(e);
        eprintln!("{e}");
        return ExitCode::from(e.exit_code());
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Bench(w) = &cli.command {
        if w.opts().threads > 0 {
            builder.worker_threads(usize::from(w.opts().threads));
        }
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_PROTOCOL);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            // In JSON mode scripts also get the server's error body on stdout.
            if let (Output::Json, CliError::Etcd(_, body)) = (output, &e) {
                println!("{}", String::from_utf8_lossy(body).trim());
            }
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
