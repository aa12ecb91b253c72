//! Socket helpers the listeners share: reading a connection's bytes into a buffer that grows
//! with what arrives and is given back while the connection is quiet, and writing answers to
//! a peer that must keep taking them.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics_catalog::CONNECTIONS_IDLE_CLOSED_TOTAL;
use crate::protocols::in_flight::ConnectionBudget;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// The buffer of a connection's first read after a quiet spell.
const FIRST_READ: usize = 4 * 1024;
/// A connection with nothing to read for this long gives its buffer back.
const QUIET_RELEASE: Duration = Duration::from_secs(1);

/// Why a connection's reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The peer closed its side, or the connection stayed idle too long.
    Closed,
    /// The broker is shutting down.
    Shutdown,
    /// The stream broke, or the connection's writer is gone.
    Failed,
}

/// The reading side of a connection: its buffer (allocated when bytes arrive, grown with
/// them, given back when the connection is quiet) and its idle clock.
pub(crate) struct Inbound {
    /// Bytes read and not yet taken by the protocol's frame decoder.
    pub buf: BytesMut,
    last_read: Instant,
    idle_timeout: Option<Duration>,
    peer: SocketAddr,
}

impl Inbound {
    /// A connection's reading side; `idle_timeout_ms` 0 never closes it for being idle.
    pub(crate) fn new(peer: SocketAddr, idle_timeout_ms: u64) -> Inbound {
        Inbound {
            buf: BytesMut::new(),
            last_read: Instant::now(),
            idle_timeout: (idle_timeout_ms > 0).then(|| Duration::from_millis(idle_timeout_ms)),
            peer,
        }
    }

    /// Waits until more bytes are in [`Inbound::buf`]. Reads only while the connection's
    /// answers are being taken (a peer that does not read them stops being read: TCP pushes
    /// back on it). A connection silent for the idle timeout while `nothing_in_flight()` is
    /// closed; `writer_gone` ends the reading when the connection's writer stops.
    pub(crate) async fn read_more(
        &mut self,
        read: &mut OwnedReadHalf,
        budget: &ConnectionBudget,
        nothing_in_flight: impl Fn() -> bool,
        writer_gone: impl Future<Output = ()>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let peer = self.peer;
        budget.answer_room_for(READ_CHUNK).await;
        let quiet = tokio::time::sleep(QUIET_RELEASE);
        tokio::pin!(quiet);
        tokio::pin!(writer_gone);
        loop {
            tokio::select! {
                ready = read.readable() => {
                    if let Err(e) = ready {
                        tracing::debug!(%peer, error = %e, "read failed");
                        return Err(Stop::Failed);
                    }
                    if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                        // A first read gets a small buffer; the decoder grows it as a
                        // frame's bytes arrive.
                        self.buf.reserve(if self.buf.is_empty() { FIRST_READ } else { READ_CHUNK });
                    }
                    match read.try_read_buf(&mut self.buf) {
                        Ok(0) => return Err(Stop::Closed),
                        Ok(_) => {
                            self.last_read = Instant::now();
                            return Ok(());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "read failed");
                            return Err(Stop::Failed);
                        }
                    }
                }
                () = &mut quiet => {
                    // Keep only the bytes that arrived (a stalled frame's head).
                    if self.buf.capacity() > self.buf.len() {
                        self.buf = BytesMut::from(&self.buf[..]);
                    }
                    if let Some(idle) = self.idle_timeout
                        && self.last_read.elapsed() >= idle
                        && nothing_in_flight()
                    {
                        tracing::debug!(%peer, ?idle, "idle connection closed");
                        metrics::counter!(CONNECTIONS_IDLE_CLOSED_TOTAL).increment(1);
                        return Err(Stop::Closed);
                    }
                    quiet.as_mut().reset(Instant::now() + QUIET_RELEASE);
                }
                () = &mut writer_gone => return Err(Stop::Failed),
                _ = crate::shutdown::requested(shutdown) => return Err(Stop::Shutdown),
            }
        }
    }
}

/// Writes all of `buf`, failing with `TimedOut` if the peer takes no byte for `stall_limit`
/// (a slow reader that keeps taking bytes is never cut off).
pub(crate) async fn write_progressing(
    write: &mut OwnedWriteHalf,
    buf: &[u8],
    stall_limit: Option<Duration>,
) -> std::io::Result<()> {
    let mut written = 0;
    while written < buf.len() {
        let step = write.write(&buf[written..]);
        let n = match stall_limit {
            Some(limit) => tokio::time::timeout(limit, step)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?,
            None => step.await?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(())
}
