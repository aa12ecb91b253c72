//! A TCP proxy between Kafka clients and the node that cuts connections mid-stream: a
//! connection is closed (both ways) once `cut_after` bytes have gone from the broker to the
//! client on it, `cuts` times in all — usually in the middle of a response, so the broker has
//! done the request but the client never hears of it and must send it again.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running proxy; its threads end with the test process.
pub struct Proxy {
    /// The address clients connect to.
    pub addr: String,
    cuts_done: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    /// Listens on a free loopback port; forwards to `upstream` once [`Proxy::forward_to`]
    /// names it (the node is started after the proxy, to advertise the proxy's address).
    pub fn bind() -> (Proxy, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        (
            Proxy {
                addr,
                cuts_done: Arc::default(),
                connections: Arc::default(),
            },
            listener,
        )
    }

    /// Starts forwarding `listener`'s connections to `upstream`, cutting as described above.
    pub fn forward_to(
        &self,
        listener: TcpListener,
        upstream: String,
        cuts: usize,
        cut_after: usize,
    ) {
        let cuts_left = Arc::new(AtomicUsize::new(cuts));
        let cuts_done = self.cuts_done.clone();
        let connections = self.connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                // client → broker: forwarded as it comes.
                std::thread::spawn(move || pipe(c2, s2, None));
                // broker → client: cut after `cut_after` bytes while cuts are left.
                let done = cuts_done.clone();
                let left = cuts_left.clone();
                std::thread::spawn(move || {
                    if pipe(server, client, Some((cut_after, left))) {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
    }

    /// How many connections were cut.
    pub fn cuts(&self) -> usize {
        self.cuts_done.load(Ordering::SeqCst)
    }

    /// How many connections went through.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Copies `from` → `to` until either ends, or until `limit.0` bytes went through while
/// `limit.1` cuts are left (then takes one, closes both ways on both sockets and returns true).
fn pipe(mut from: TcpStream, mut to: TcpStream, limit: Option<(usize, Arc<AtomicUsize>)>) -> bool {
    let mut buf = [0u8; 4096];
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match &limit {
            Some((limit, left))
                if sent + n >= *limit
                    && left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                        .is_ok() =>
            {
                let part = limit.saturating_sub(sent);
                let _ = to.write_all(&buf[..part]);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return true;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    false
}
