//! `deimos-bench-ceiling`: the ceiling row of `cargo xtask bench`.
//!
//! A bare hyper server that answers every request with one fixed response — the body and
//! headers of a real Deimos lease GET, captured by the bench. It runs with what the `deimos`
//! binary's client listener runs with (a multi-thread tokio runtime with the default worker
//! count, mimalloc, HTTP/1.1 keep-alive, `TCP_NODELAY`), so the gap between a Deimos lease read
//! and this server is what Deimos itself costs per read: routing, the lease check, the store
//! lookup, rendering and metrics. It is a measuring instrument, not part of a cluster.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flags; every one is required, so a run states exactly what it served.
#[derive(Debug, Parser)]
#[command(name = "deimos-bench-ceiling", version)]
struct Flags {
    /// Address to listen on (host:port).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// File whose bytes are the body of every response.
    #[arg(long)]
    body_file: PathBuf,
    /// A response header, `name: value`; repeat for more. `content-length` is added by hyper.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected `name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| format!("{s:?}: {e}"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    Ok((name, value))
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let body = match std::fs::read(&flags.body_file) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            eprintln!("deimos-bench-ceiling: {}: {e}", flags.body_file.display());
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deimos-bench-ceiling: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(flags.listen, body, flags.headers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deimos-bench-ceiling: {}: {e}", flags.listen);
            ExitCode::from(1)
        }
    }
}

async fn serve(
    addr: std::net::SocketAddr,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let headers = std::sync::Arc::new(headers);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of descriptors or a connection reset before accept: keep serving the rest.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (body, headers) = (body.clone(), headers.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<Incoming>| {
                let mut resp = Response::new(Full::new(body.clone()));
                for (name, value) in headers.iter() {
                    resp.headers_mut().append(name.clone(), value.clone());
                }
                async move { Ok::<_, Infallible>(resp) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(true);
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::parse_header;

    #[test]
    fn headers_parse_or_say_why_not() {
        let (n, v) = parse_header("X-Etcd-Index: 42").expect("valid");
        assert_eq!(n.as_str(), "x-etcd-index");
        assert_eq!(v.to_str().ok(), Some("42"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}
