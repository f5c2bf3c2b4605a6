//! `deimos`: one member of a Deimos cluster.

mod api;
mod config;
mod node;
mod stats;
mod transport;

use std::process::ExitCode;

use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;

use config::{url_addr, Flags, NodeConfig};

fn install_metrics() -> Result<(), String> {
    // Real histograms (not summaries) so dashboards can aggregate quantiles across nodes.
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    api::cluster::set_prometheus(handle);
    stats::describe();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&flags.log).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    match run(flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("deimos: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(flags: Flags) -> Result<(), String> {
    let cfg = NodeConfig::from_flags(flags)?;
    install_metrics()?;
    let mut client_listeners = Vec::new();
    for u in &cfg.flags.listen_client_urls {
        let addr = url_addr(u)?;
        client_listeners.push(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listen on {u}: {e}"))?,
        );
    }
    let mut peer_listeners = Vec::new();
    for u in &cfg.flags.listen_peer_urls {
        let addr = url_addr(u)?;
        peer_listeners.push(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listen on {u}: {e}"))?,
        );
    }
    let (app, _driver) = node::start(cfg)?;
    for l in peer_listeners {
        tokio::spawn(api::serve(app.clone(), l, api::Listener::Peer));
    }
    for l in client_listeners {
        tokio::spawn(api::serve(app.clone(), l, api::Listener::Client));
    }
    tracing::info!(client = ?app.cfg.flags.listen_client_urls, peer = ?app.cfg.flags.listen_peer_urls, "serving");
    shutdown_signal().await;
    tracing::info!("shutting down");
    node::step_down(&app).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
