//! A TCP proxy per directed Raft link, whose behaviour can be switched at any moment: pass the
//! bytes, refuse (close every connection), drop them silently (a partition the peers only
//! notice by their timeouts) or delay them.
//!
//! Each link is a listener on a free loopback port. A connection accepted there is joined to a
//! fresh connection to the link's target; each direction is a reader that stamps every chunk it
//! reads with the time it may leave (now, or now + the delay) and a writer that sends it then:
//!
//! ```text
//!   dialer ──▶ [listener P(i→j)] ── reader ─(chunk, leave at)─▶ writer ──▶ target j
//!          ◀──                    ◀─ writer ◀─(chunk, leave at)─ reader ◀──
//! ```
//!
//! The proxy runs on its own small runtime, so it keeps working whatever the test's threads
//! are doing (blocked on a process, sleeping between faults).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a link does with its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Forward every byte at once.
    Pass,
    /// Close every open connection at once and every new one as soon as it is accepted.
    Refuse,
    /// Keep connections open but discard every byte, both ways: a silent partition.
    Drop,
    /// Forward every byte this many milliseconds late (order kept).
    Delay(u64),
}

/// Chunks read but not yet written, per direction of a connection.
const CHUNKS_IN_FLIGHT: usize = 256;

/// One directed link: its listener's address and its mode switch.
struct Link {
    addr: SocketAddr,
    mode: watch::Sender<LinkMode>,
}

/// Every proxied link of a cluster, keyed by (from node, to node).
pub struct Proxies {
    runtime: Option<Runtime>,
    links: BTreeMap<(u64, u64), Link>,
}

impl Proxies {
    /// No links yet; starts the proxies' runtime.
    pub fn new() -> Proxies {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("raft-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        Proxies {
            runtime: Some(runtime),
            links: BTreeMap::new(),
        }
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("proxy runtime")
    }

    /// Opens the link `from → to` forwarding to `target` (which need not be listening yet:
    /// each accepted connection dials it), in `Pass` mode, and returns the address to dial.
    pub fn add_link(&mut self, from: u64, to: u64, target: SocketAddr) -> SocketAddr {
        // Bound here, so that the address is known and taken before this returns; callable
        // from anywhere, a runtime's thread included.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy listener");
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, mode_rx) = watch::channel(LinkMode::Pass);
        self.runtime().spawn(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => accept_loop(listener, target, mode_rx).await,
                Err(e) => panic!("proxy listener {addr}: {e}"),
            }
        });
        self.links.insert((from, to), Link { addr, mode });
        addr
    }

    /// The address node `from` dials to reach node `to`.
    pub fn addr(&self, from: u64, to: u64) -> SocketAddr {
        self.links[&(from, to)].addr
    }

    /// Switches link `from → to` to `mode`.
    pub fn set(&self, from: u64, to: u64, mode: LinkMode) {
        self.links[&(from, to)].mode.send_replace(mode);
    }

    /// Every link to and from `node` silently drops its traffic.
    pub fn isolate(&self, node: u64) {
        for (&(from, to), link) in &self.links {
            if from == node || to == node {
                link.mode.send_replace(LinkMode::Drop);
            }
        }
    }

    /// Every link passes its traffic again.
    pub fn heal(&self) {
        for link in self.links.values() {
            link.mode.send_replace(LinkMode::Pass);
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        // Safe from inside another runtime, unlike dropping it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<LinkMode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if *mode.borrow() == LinkMode::Refuse {
            drop(client);
            continue;
        }
        tokio::spawn(serve(client, target, mode.clone()));
    }
}

/// Joins `client` to a new connection to `target` until either side closes or the link
/// refuses.
async fn serve(client: TcpStream, target: SocketAddr, mode: watch::Receiver<LinkMode>) {
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let both = async {
        tokio::try_join!(
            direction(client_read, upstream_write, mode.clone()),
            direction(upstream_read, client_write, mode.clone()),
        )
    };
    let mode = mode.clone();
    tokio::select! {
        _ = both => {}
        () = refused(mode) => {}
    }
}

/// Resolves once the link refuses.
async fn refused(mut mode: watch::Receiver<LinkMode>) {
    loop {
        if *mode.borrow_and_update() == LinkMode::Refuse {
            return;
        }
        if mode.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Carries one direction until its reader sees the end (then shuts the writer down) or an
/// error.
async fn direction(
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    mode: watch::Receiver<LinkMode>,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::try_join!(read_side(from, tx, mode), write_side(rx, to))?;
    Ok(())
}

async fn read_side(
    mut from: OwnedReadHalf,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    mode: watch::Receiver<LinkMode>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let leave_at = match *mode.borrow() {
            LinkMode::Pass => Instant::now(),
            LinkMode::Delay(ms) => Instant::now() + Duration::from_millis(ms),
            LinkMode::Drop | LinkMode::Refuse => continue,
        };
        if tx.send((leave_at, buf[..n].to_vec())).await.is_err() {
            return Ok(());
        }
    }
}

async fn write_side(
    mut rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut to: OwnedWriteHalf,
) -> std::io::Result<()> {
    while let Some((leave_at, chunk)) = rx.recv().await {
        tokio::time::sleep_until(leave_at).await;
        to.write_all(&chunk).await?;
    }
    to.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant as StdInstant;

    use super::*;

    /// An echo server on a free port (a blocking thread per connection).
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> StdStream {
        let stream = StdStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        stream
    }

    /// Sends `msg` and reads the echo; `None` when nothing came back in time, `Some(empty)`
    /// when the connection was closed.
    fn round_trip(stream: &mut StdStream, msg: &[u8]) -> Option<Vec<u8>> {
        if stream.write_all(msg).is_err() {
            return Some(Vec::new());
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < msg.len() {
            match stream.read(&mut buf) {
                Ok(0) => return Some(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(_) => return Some(got),
            }
        }
        Some(got)
    }

    fn one_link() -> (Proxies, SocketAddr) {
        let mut proxies = Proxies::new();
        let addr = proxies.add_link(1, 2, echo_server());
        (proxies, addr)
    }

    #[test]
    fn pass_forwards_both_ways() {
        let (_proxies, addr) = one_link();
        let mut stream = connect(addr);
        for i in 0..20 {
            let msg = format!("hello {i}");
            assert_eq!(
                round_trip(&mut stream, msg.as_bytes()).as_deref(),
                Some(msg.as_bytes())
            );
        }
    }

    #[test]
    fn refuse_closes_open_and_new_connections_and_pass_restores() {
        let (proxies, addr) = one_link();
        let mut open = connect(addr);
        assert_eq!(
            round_trip(&mut open, b"before").as_deref(),
            Some(&b"before"[..])
        );
        proxies.set(1, 2, LinkMode::Refuse);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            round_trip(&mut open, b"during").as_deref(),
            Some(&b""[..]),
            "an open connection is closed"
        );
        let mut new = connect(addr);
        assert_eq!(
            round_trip(&mut new, b"new").as_deref(),
            Some(&b""[..]),
            "a new connection is closed"
        );
        proxies.heal();
        let mut again = connect(addr);
        assert_eq!(
            round_trip(&mut again, b"after").as_deref(),
            Some(&b"after"[..])
        );
    }

    #[test]
    fn drop_keeps_connections_open_but_silent() {
        let (proxies, addr) = one_link();
        let mut open = connect(addr);
        assert_eq!(
            round_trip(&mut open, b"before").as_deref(),
            Some(&b"before"[..])
        );
        proxies.isolate(2);
        assert_eq!(round_trip(&mut open, b"lost"), None, "nothing comes back");
        let mut new = connect(addr);
        assert_eq!(
            round_trip(&mut new, b"lost too"),
            None,
            "new connections are silent too"
        );
        proxies.heal();
        // What was sent during the partition is gone; what is sent now comes back.
        assert_eq!(
            round_trip(&mut open, b"healed").as_deref(),
            Some(&b"healed"[..])
        );
        assert_eq!(
            round_trip(&mut new, b"healed").as_deref(),
            Some(&b"healed"[..])
        );
    }

    #[test]
    fn delay_holds_bytes_back_in_order() {
        let (proxies, addr) = one_link();
        proxies.set(1, 2, LinkMode::Delay(150));
        let mut stream = connect(addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let started = StdInstant::now();
        assert_eq!(
            round_trip(&mut stream, b"slow").as_deref(),
            Some(&b"slow"[..])
        );
        // Delayed on the way there and on the way back.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        let mut all = Vec::new();
        for i in 0..50u8 {
            stream.write_all(&[i]).unwrap();
            all.push(i);
        }
        let mut got = vec![0u8; all.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(got, all);
        proxies.set(1, 2, LinkMode::Pass);
        let started = StdInstant::now();
        assert_eq!(
            round_trip(&mut stream, b"fast").as_deref(),
            Some(&b"fast"[..])
        );
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn isolate_touches_only_the_links_of_one_node() {
        let mut proxies = Proxies::new();
        let echo = echo_server();
        for (from, to) in [(1, 2), (2, 1), (2, 3), (3, 2), (1, 3), (3, 1)] {
            proxies.add_link(from, to, echo);
        }
        proxies.isolate(1);
        for (from, to) in [(1, 2), (2, 1), (1, 3), (3, 1)] {
            let mut s = connect(proxies.addr(from, to));
            assert_eq!(round_trip(&mut s, b"x"), None, "{from}->{to} is cut");
        }
        for (from, to) in [(2, 3), (3, 2)] {
            let mut s = connect(proxies.addr(from, to));
            assert_eq!(
                round_trip(&mut s, b"x").as_deref(),
                Some(&b"x"[..]),
                "{from}->{to}"
            );
        }
    }
}
