//! `deimosctl`: the operator's command line for Deimos.
//!
//! It speaks only HTTP to the etcd v2 keys API (`/v2/keys`), the members API (`/v2/members`),
//! `/health` and Deimos's `/raft/status`, so it works unchanged against a real etcd 3.4 started
//! with `--enable-v2=true` (cluster/lease status then fall back to `/v2/stats/self`). Its commands,
//! short flags and exit statuses follow `etcdctl` v2 (`ETCDCTL_API=2`), so an operator's etcdctl
//! scripts run with `deimosctl` in its place.
//!
//! Exit status (also in `--help`), the same as etcdctl v2's, so scripts can branch on it:
//! - 0: success (also `--help` and `--version`)
//! - 1: bad arguments, or an unusable file (a corrupt or truncated snapshot)
//! - 2: cluster unreachable: no endpoint accepted a connection, or the request timed out
//! - 3: authentication refused (HTTP 401, or etcd error 110)
//! - 4: the server answered with an error or with something unexpected; etcd errors print as
//!   `Error: <errorCode>: <message> (<cause>) [<index>]` (e.g. `101` for a failed compare-and-swap)
//! - 5: `cluster-health` found a member that is not healthy

mod auth;
mod bench;
mod cli;
mod client;
mod cluster;
mod exec_watch;
mod health;
mod http;
mod keys;
mod members;
mod output;
mod snapshot;
mod tls;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::client::{CliError, Client, EXIT_OK, EXIT_SERVER_ERROR};
use crate::output::Output;

async fn run(cli: Cli) -> Result<(), CliError> {
    let endpoints = cli.endpoints.0;
    match cli.command {
        Command::Bench(cli::Workload::Watch(w)) => {
            let summary = bench::watch::run(w, &endpoints, cli.timeout).await?;
            bench::watch::print(&summary, cli.output);
            Ok(())
        }
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
            members::member(&mut c, cmd, cli.output).await
        }
        Command::Cluster(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            cluster::cluster(&mut c, cmd, cli.output).await
        }
        Command::ClusterHealth => {
            let mut c = Client::new(endpoints, cli.timeout);
            health::run(&mut c, cli.output).await
        }
        Command::User(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            auth::user(&mut c, cmd, cli.output).await
        }
        Command::Role(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            auth::role(&mut c, cmd, cli.output).await
        }
        Command::Auth(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            auth::auth(&mut c, cmd).await
        }
        Command::Lease(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            cluster::lease(&mut c, cmd, cli.output).await
        }
        Command::Snapshot(cmd) => {
            let mut c = Client::new(endpoints, cli.timeout);
            snapshot::run(&mut c, cmd, cli.output).await
        }
        Command::Backup {
            data_dir,
            backup_dir,
        } => snapshot::backup_command(data_dir, backup_dir, cli.output).await,
    }
}

/// etcdctl's endpoint variables, used when neither `--endpoints` nor `DEIMOSCTL_ENDPOINTS` is set.
/// (clap reads one variable per argument, so these become the default instead.)
fn etcdctl_endpoints() -> Option<String> {
    if std::env::var_os("DEIMOSCTL_ENDPOINTS").is_some() {
        return None;
    }
    ["ETCDCTL_ENDPOINTS", "ETCDCTL_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

fn parse_args() -> Result<Cli, clap::Error> {
    let mut cmd = Cli::command();
    if let Some(eps) = etcdctl_endpoints() {
        // clap's defaults are `'static`; leaking one string once per process is harmless.
        let eps: &'static str = Box::leak(eps.into_boxed_str());
        cmd = cmd.mut_arg("endpoints", |a| a.default_value(eps));
    }
    let mut matches = cmd.try_get_matches()?;
    Cli::from_arg_matches_mut(&mut matches)
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors exit 1, as etcdctl's.
            let _ = e.print();
            return ExitCode::from(cli::usage_exit_code(&e));
        }
    };
    let output = cli.output;
    if let Err(e) = tls::init(cli.cacert.as_ref(), cli.cert.as_ref(), cli.key.as_ref()) {
        let e = CliError::Usage(e);
        eprintln!("{e}");
        return ExitCode::from(e.exit_code());
    }
    if let Err(e) = auth::init(cli.username.as_deref()) {
        eprintln!("{e}");
        return ExitCode::from(e.exit_code());
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Bench(w) = &cli.command {
        if w.threads() > 0 {
            builder.worker_threads(usize::from(w.threads()));
        }
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SERVER_ERROR);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            // In JSON mode scripts also get the server's error body on stdout.
            if let (Output::Json, CliError::Etcd(_, body)) = (output, &e) {
                println!("{}", String::from_utf8_lossy(body).trim());
            }
            // cluster-health has already printed its verdict.
            if !matches!(e, CliError::Unhealthy(_)) {
                eprintln!("{e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
