//! A fault-injecting TCP proxy in front of every node's peer port, so tests can cut individual
//! links between real processes without privileges (no iptables, no namespaces).
//!
//! How a link is identified: node `i` listens for peers on its own loopback address
//! ([`node_ip`]`(i)`) and the server's peer client connects *from* that address, while the
//! cluster is told (bootstrap and advertise URLs) that node `j` is at the proxy's address. The
//! proxy for `j` therefore sees every connection from `i` to `j` with source IP `node_ip(i)`,
//! and can tell links apart. A connection from an unknown source is passed through.
//!
//! What a cut looks like: a blocked link is a black hole, not a reset — bytes are read and
//! discarded and nothing comes back, so the sender learns of the partition only through its own
//! timeouts, as with a pulled cable. A connection that saw its link blocked stays dead; on heal
//! the dead ones are shut down so that the peers' connection pools reconnect at once instead of
//! waiting out a request timeout per pooled connection.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Node `i`'s own loopback address: 127.0.0.(11 + i). Anything in 127/8 is local on Linux.
pub fn node_ip(i: usize) -> Ipv4Addr {
    let last = u8::try_from(11 + i).expect("fewer than 240 nodes");
    Ipv4Addr::new(127, 0, 0, last)
}

/// Which node a source address belongs to.
fn node_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] >= 11 => {
            Some(usize::from(v4.octets()[3] - 11))
        }
        _ => None,
    }
}

/// One proxied connection: both sockets, so that a heal can close it from outside.
struct Conn {
    from: usize,
    to: usize,
    dead: AtomicBool,
    /// Pump threads that have finished, out of `pumps`: a finished connection is forgotten so
    /// a long run with many restarts does not keep its sockets open.
    done: AtomicUsize,
    pumps: usize,
    down: TcpStream,
    up: Option<TcpStream>,
}

impl Conn {
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        let _ = self.down.shutdown(Shutdown::Both);
        if let Some(u) = &self.up {
            let _ = u.shutdown(Shutdown::Both);
        }
    }
}

#[derive(Default)]
struct State {
    /// Directed links `(from, to)` that drop everything.
    blocked: HashSet<(usize, usize)>,
    conns: Vec<Arc<Conn>>,
}

/// The link table shared by every node's proxy.
#[derive(Clone, Default)]
pub struct Net {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Net {
    pub fn new() -> Net {
        Net::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.lock().blocked.contains(&(from, to))
    }

    /// Drop everything sent from `from` to `to` (one direction).
    pub fn block(&self, from: usize, to: usize) {
        let mut st = self.lock();
        st.blocked.insert((from, to));
        for c in &st.conns {
            if c.from == from && c.to == to {
                // Silently dead: the pumps discard from now on (see module doc).
                c.dead.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Cut both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.block(x, y);
                self.block(y, x);
            }
        }
    }

    /// Cut `node` off from every other node of a cluster of `n`.
    pub fn isolate(&self, node: usize, n: usize) {
        let others: Vec<usize> = (0..n).filter(|&j| j != node).collect();
        self.partition(&[node], &others);
    }

    /// Restore every link and close the connections that died while cut.
    pub fn heal(&self) {
        let mut st = self.lock();
        st.blocked.clear();
        let (dead, live): (Vec<_>, Vec<_>) = st
            .conns
            .drain(..)
            .partition(|c| c.dead.load(Ordering::SeqCst));
        st.conns = live;
        drop(st);
        for c in dead {
            c.kill();
        }
    }

    /// Start the proxy for node `to`: listen on `listen`, forward to `target` (the node's real
    /// peer listener). Returns the bound address (use port 0 to let the OS choose).
    pub fn spawn_proxy(
        &self,
        to: usize,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        // Non-blocking accept with a short sleep so the thread notices `stop`.
        listener.set_nonblocking(true)?;
        let net = self.clone();
        thread::Builder::new()
            .name(format!("proxy-{to}"))
            .spawn(move || loop {
                if net.stop.load(Ordering::SeqCst) {
                    return;
                }
                match listener.accept() {
                    Ok((down, peer)) => {
                        let _ = down.set_nonblocking(false);
                        net.accept(to, down, peer, target);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            })?;
        Ok(addr)
    }

    fn accept(&self, to: usize, down: TcpStream, peer: SocketAddr, target: SocketAddr) {
        let from = node_of(peer.ip()).unwrap_or(usize::MAX);
        let blocked = self.is_blocked(from, to);
        // A cut link never reaches the node; a live one connects through (an unreachable node
        // looks the same as behind the proxy: the connection is closed).
        let up = if blocked {
            None
        } else {
            match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                Ok(u) => Some(u),
                Err(_) => return,
            }
        };
        let _ = down.set_nodelay(true);
        if let Some(u) = &up {
            let _ = u.set_nodelay(true);
        }
        let (Ok(down2), up2) = (
            down.try_clone(),
            up.as_ref().map(TcpStream::try_clone).transpose(),
        ) else {
            return;
        };
        let Ok(up2) = up2 else { return };
        let conn = Arc::new(Conn {
            from,
            to,
            dead: AtomicBool::new(blocked),
            done: AtomicUsize::new(0),
            pumps: if up2.is_some() { 2 } else { 1 },
            down,
            up,
        });
        {
            let mut st = self.lock();
            st.conns.retain(|c| c.done.load(Ordering::SeqCst) < c.pumps);
            st.conns.push(conn.clone());
        }
        // Re-check after registering, so a block racing with this accept is not missed.
        if self.is_blocked(from, to) {
            conn.dead.store(true, Ordering::SeqCst);
        }
        match up2 {
            Some(up2) => {
                let c1 = conn.clone();
                let down_r = down2;
                let up_w = up2;
                let _ = thread::Builder::new()
                    .name("proxy-pump".into())
                    .spawn(move || pump(&c1, down_r, |c| c.up.as_ref()));
                let c2 = conn;
                let _ = thread::Builder::new()
                    .name("proxy-pump".into())
                    .spawn(move || pump(&c2, up_w, |c| Some(&c.down)));
            }
            None => {
                let c1 = conn;
                let _ = thread::Builder::new()
                    .name("proxy-sink".into())
                    .spawn(move || pump(&c1, down2, |_| None));
            }
        }
    }

    /// Stop accepting and close every connection (for the end of a test).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let conns: Vec<_> = self.lock().conns.drain(..).collect();
        for c in conns {
            c.kill();
        }
    }
}

/// Copy from `src` to the socket `dst(conn)` until EOF; once the connection is dead, discard.
fn pump(conn: &Conn, mut src: TcpStream, dst: impl Fn(&Conn) -> Option<&TcpStream>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.dead.load(Ordering::SeqCst) {
            continue;
        }
        let Some(mut out) = dst(conn) else { continue };
        if out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // One side ended: end the other so neither peer waits on a half-open connection, unless
    // the link is cut (then silence is the point; heal closes it).
    if !conn.dead.load(Ordering::SeqCst) {
        conn.kill();
    }
    conn.done.fetch_add(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on node 1's address.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind((node_ip(1), 0)).expect("bind 127.0.0.12");
        let addr = l.local_addr().expect("addr");
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut w = s.try_clone().expect("clone");
                    let mut r = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        addr
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        s.write_all(msg)?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf)?;
        Ok(buf)
    }

    #[test]
    fn node_addresses_map_back_to_nodes() {
        assert_eq!(node_of(IpAddr::V4(node_ip(0))), Some(0));
        assert_eq!(node_of(IpAddr::V4(node_ip(4))), Some(4));
        assert_eq!(node_of("127.0.0.1".parse().expect("ip")), None);
    }

    /// The partition is real: a blocked link carries nothing, in either the old or a new
    /// connection, and a heal closes the dead connection and lets a new one through.
    #[test]
    fn a_blocked_link_is_silent_and_heal_restores_it() {
        let net = Net::new();
        let target = echo_server();
        let proxy = net
            .spawn_proxy(1, "127.0.0.1:0".parse().expect("addr"), target)
            .expect("proxy");
        // Connections from 127.0.0.1 come from no node: their link is (usize::MAX, 1).
        let from = usize::MAX;
        let mut c = TcpStream::connect(proxy).expect("connect");
        assert_eq!(roundtrip(&mut c, b"ping").expect("echo"), b"ping");

        net.block(from, 1);
        assert!(
            roundtrip(&mut c, b"lost").is_err(),
            "old connection still carries data"
        );
        let mut c2 = TcpStream::connect(proxy).expect("connect while blocked");
        assert!(
            roundtrip(&mut c2, b"lost").is_err(),
            "new connection crosses a cut link"
        );

        net.heal();
        let mut buf = [0u8; 1];
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "a connection that died in the partition must be closed on heal"
        );
        let mut c3 = TcpStream::connect(proxy).expect("connect after heal");
        assert_eq!(
            roundtrip(&mut c3, b"back").expect("echo after heal"),
            b"back"
        );
        net.shutdown();
    }
}
