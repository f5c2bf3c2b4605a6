//! `deimos`: one member of a Deimos cluster.

mod api;
mod body;
mod config;
mod error;
mod etcd_compat;
mod etcd_metrics;
mod identity;
mod limits;
mod node;
mod proxy;
mod shutdown;
mod stats;
mod tls;
mod transport;

use std::process::ExitCode;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use config::{is_https, url_addr, Flags, NodeConfig, ProxyMode};
use error::StartError;
use tls::TlsFiles;

/// mimalloc instead of glibc malloc: a request allocates and frees many small buffers across
/// threads, and glibc's arena locking and consolidation showed up as ~14% of the leader's CPU
/// under a PUT load (`perf`, 64 clients).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hand memory freed by this thread back to the OS, at most every [`COLLECT_EVERY`] per thread.
/// mimalloc keeps freed pages in the heap of the thread that allocated them until that heap
/// runs a collection, which an idle worker may not do for a long time: after 10k connections
/// (about 30 KiB each, with transparent huge pages) closed, RSS stayed at 300 MB. Every runtime
/// worker calls this as it goes idle (`on_thread_park`), so each collects its own heap; a
/// forced collection costs well under a millisecond on a quiet heap.
fn return_free_memory() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let due = LAST.with(|last| {
        let now = std::time::Instant::now();
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect has no preconditions; it only walks mimalloc's own structures.
        unsafe { libmimalloc_sys::mi_collect(true) }
    }
}

const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// No transparent huge pages for this process. mimalloc asks for them on its arena
/// (`MADV_HUGEPAGE`), and khugepaged then collapses any 2 MiB range with a single live 4 KiB
/// page into a whole resident huge page; freed memory inside it can no longer be handed back.
/// After a 20,000-connection flood that kept 6 extra huge pages (20 -> 32 MB RSS, `smaps`:
/// AnonHugePages 4 -> 16 MB) in one run of three. Refused only by kernels older than 3.15, where
/// the old behaviour stays.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a flag of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        eprintln!(
            "deimos: could not disable transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn install_metrics() -> Result<(), StartError> {
    // Real histograms (not summaries) so dashboards can aggregate quantiles across nodes.
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(StartError::Metrics)?
        .install_recorder()
        .map_err(StartError::Metrics)?;
    // `install_recorder` leaves upkeep to us: without it every histogram sample is kept until
    // the next scrape, so a node nobody scrapes grows by 8 bytes per request without bound.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    api::cluster::set_prometheus(handle);
    stats::describe();
    transport::inbound::describe();
    Ok(())
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(return_free_memory)
        .build();
    match rt {
        Ok(rt) => rt.block_on(serve()),
        Err(e) => {
            eprintln!("deimos: cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve() -> ExitCode {
    let flags = Flags::parse_with_sources();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&flags.log).unwrap_or_else(|_| "info".into());
    // Colour only on a terminal: a log file or journal should not hold escape codes.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    for w in &flags.warnings {
        tracing::warn!("{w}");
    }
    match run(flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("deimos: {e}");
            ExitCode::from(1)
        }
    }
}

/// Pending connections the kernel queues for one listener (it caps this at `somaxconn`). A burst
/// of connects beyond the queue has its SYNs dropped and each retried a second later, so the
/// queue is as deep as Go's listeners (etcd) make theirs rather than tokio's default 1024.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted member rebinds while old connections linger.
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// Bind every URL of a listener flag; https ones get a TLS acceptor from `files`.
async fn bind_all(
    urls: &[String],
    files: &TlsFiles,
    what: &str,
) -> Result<Vec<(TcpListener, Option<TlsAcceptor>)>, StartError> {
    let mut out = Vec::new();
    for u in urls {
        let addr = url_addr(u)?;
        let tls = if is_https(u) {
            Some(TlsAcceptor::from(files.server_config(what)?))
        } else {
            None
        };
        let l = listen(addr).map_err(|source| StartError::Listen {
            url: u.clone(),
            source,
        })?;
        out.push((l, tls));
    }
    Ok(out)
}

async fn run(flags: Flags) -> Result<(), StartError> {
    let cfg = NodeConfig::from_flags(flags)?;
    install_metrics()?;
    limits::describe();
    let budget = limits::Budget::plan(
        limits::raise_nofile(),
        cfg.flags.max_client_connections,
        cfg.flags.max_peer_connections,
        cfg.flags.proxy != ProxyMode::Off,
    )?;
    if let Some(asked) = budget.clamped_from {
        tracing::warn!(
            asked,
            allowed = budget.client,
            nofile = budget.nofile,
            "--max-client-connections is more than the descriptor limit allows; using the limit"
        );
    }
    tracing::info!(
        nofile = budget.nofile,
        client = budget.client,
        peer = budget.peer,
        reserved = limits::RESERVED_FDS,
        "connection limits"
    );
    // One cap per listener kind, shared by all its URLs: the budget counts descriptors, not ports.
    let client_limit = limits::ConnLimit::new("client", budget.client);
    let peer_limit = limits::ConnLimit::new("peer", budget.peer);
    let client_tls = TlsFiles {
        cert: cfg.flags.cert_file.clone(),
        key: cfg.flags.key_file.clone(),
        ca: cfg.flags.ca_file.clone(),
    };
    let peer_tls = TlsFiles {
        cert: cfg.flags.peer_cert_file.clone(),
        key: cfg.flags.peer_key_file.clone(),
        ca: cfg.flags.peer_ca_file.clone(),
    };
    let client_listeners = bind_all(
        &cfg.flags.listen_client_urls,
        &client_tls,
        "client listener",
    )
    .await?;
    if cfg.flags.proxy != ProxyMode::Off {
        // The proxy reaches the cluster with the peer TLS settings, as etcd's proxy does.
        let upstream_tls = match peer_tls.ca {
            Some(_) => Some(peer_tls.client_config("proxy client")?),
            None => None,
        };
        let p = proxy::Proxy::new(&cfg, upstream_tls);
        for (l, tls) in client_listeners {
            tokio::spawn(proxy::serve(p.clone(), l, tls, client_limit.clone()));
        }
        tokio::spawn(proxy::refresh_loop(p.clone()));
        tracing::info!(client = ?cfg.flags.listen_client_urls, endpoints = ?cfg.flags.proxy_endpoints, mode = ?cfg.flags.proxy, "proxy serving");
        shutdown::signal().await;
        tracing::info!("shutting down");
        return Ok(());
    }
    // Peer TLS is always mutual: the peer CA verifies connecting members.
    let peer_listeners = bind_all(&cfg.flags.listen_peer_urls, &peer_tls, "peer listener").await?;
    let (app, driver) = node::start(cfg).await?;
    for (l, tls) in peer_listeners {
        tokio::spawn(api::serve(
            app.clone(),
            l,
            api::Listener::Peer,
            tls,
            peer_limit.clone(),
        ));
    }
    for (l, tls) in client_listeners {
        tokio::spawn(api::serve(
            app.clone(),
            l,
            api::Listener::Client,
            tls,
            client_limit.clone(),
        ));
    }
    tracing::info!(client = ?app.cfg.flags.listen_client_urls, peer = ?app.cfg.flags.listen_peer_urls, "serving");
    tokio::select! {
        _ = shutdown::signal() => {}
        _ = app.stop.notified() => {}
    }
    tracing::info!(grace = ?shutdown::GRACE, "shutting down");
    shutdown::arm(shutdown::GRACE, shutdown::force_exit);
    node::step_down(&app).await;
    tokio::task::block_in_place(|| driver.stop());
    Ok(())
}
