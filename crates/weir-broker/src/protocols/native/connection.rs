//! One client connection: a reader that splits the byte stream into frames and starts a
//! request for each, and a writer task that sends the answers.
//!
//! Many requests are in flight at once and answered in any order, matched by request id.
//! Each request's future is first polled right here in the reader: most requests (a produce
//! in `async` flush mode, a pull that finds data, any admin request) finish in that one poll
//! and cost no task spawn; one that has to wait (a long poll, a `sync` flush) is moved to a
//! task of its own, so it never blocks the requests after it. Polling inline also keeps
//! produce requests of one connection in the order they came, as the store takes its place
//! in the log on the first poll.
//!
//! Answers go through a channel to the writer, which coalesces whatever is queued into one
//! buffer and one `write_all`. A framing error (a frame over the limit, a bad length) closes
//! this connection only; the stream can no longer be trusted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::codec::{Decoder, Encoder};
use weir_proto::{ApiKey, ErrorCode, Frame, FrameCodec, Header, OutFrame, pb};

use crate::core::session::ConnectionId;
use crate::error::RequestError;
use crate::metrics_catalog::CONNECTIONS;
use crate::protocols::native::dispatch::dispatch;
use crate::protocols::native::handlers::{Reply, RequestContext};
use crate::protocols::native::outbox::Outboxes;
use crate::state::BrokerState;

/// Requests one connection may have in flight; the reader stops reading at this many.
const MAX_IN_FLIGHT: u32 = 4096;
/// Answers queued for the writer before handlers wait.
const RESPONSE_QUEUE: usize = 1024;
/// The writer sends once this much is buffered, even if more answers are queued.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// How long a stopping connection waits for its requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the reader stopped.
enum Outcome {
    /// The peer closed its side.
    Closed,
    /// The broker is shutting down.
    Shutdown,
    /// The stream broke or stopped making sense.
    Failed,
}

/// Serves one connection until the peer closes it, it fails, or the broker shuts down.
pub(crate) async fn serve(
    state: Arc<BrokerState>,
    outboxes: Arc<Outboxes>,
    stream: TcpStream,
    peer: SocketAddr,
    connection: ConnectionId,
    shutdown: watch::Receiver<bool>,
) {
    tracing::debug!(%peer, connection, "connection opened");
    metrics::gauge!(CONNECTIONS).increment(1.0);
    let _ = stream.set_nodelay(true);
    let (mut read, write) = stream.into_split();
    let codec = FrameCodec::new(state.max_frame_len);
    let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
    let writer = tokio::spawn(write_loop(rx, write, codec, peer));
    outboxes.opened(connection, tx.clone());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize));
    // Tells requests still waiting (long polls) that nobody will read their answer.
    let (closed_tx, closed_rx) = watch::channel(false);
    let reader = Reader {
        state: state.clone(),
        ctx: RequestContext { connection, peer },
        tx,
        in_flight: in_flight.clone(),
        closed: closed_rx,
    };
    let outcome = reader.run(&mut read, codec, shutdown).await;
    // The writer ends once the last sender (the reader's, then each request's) is gone.
    drop(reader);
    // A member heartbeating on this connection is gone the moment it closes.
    state
        .groups
        .connection_closed(connection, &|topic| state.queues_of(topic));
    outboxes.closed(connection);
    state.transactions.connection_closed(connection);
    match outcome {
        Outcome::Shutdown => {
            let _ =
                tokio::time::timeout(DRAIN_TIMEOUT, in_flight.acquire_many(MAX_IN_FLIGHT)).await;
            let _ = closed_tx.send(true);
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, writer).await;
        }
        Outcome::Closed => {
            // Answers in flight still go out (the peer may only have closed its write side),
            // but nobody waits for a long poll's answer.
            let _ = closed_tx.send(true);
        }
        Outcome::Failed => {
            let _ = closed_tx.send(true);
            writer.abort();
        }
    }
    metrics::gauge!(CONNECTIONS).decrement(1.0);
    tracing::debug!(%peer, connection, "connection closed");
}

struct Reader {
    state: Arc<BrokerState>,
    ctx: RequestContext,
    tx: mpsc::Sender<OutFrame>,
    in_flight: Arc<Semaphore>,
    closed: watch::Receiver<bool>,
}

impl Reader {
    async fn run(
        &self,
        read: &mut (impl AsyncReadExt + Unpin),
        mut codec: FrameCodec,
        mut shutdown: watch::Receiver<bool>,
    ) -> Outcome {
        let peer = self.ctx.peer;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        if !self.start(frame).await {
                            return Outcome::Shutdown;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "framing error; closing the connection");
                        return Outcome::Failed;
                    }
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                read = read.read_buf(&mut buf) => match read {
                    Ok(0) => return Outcome::Closed,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "read failed");
                        return Outcome::Failed;
                    }
                },
                _ = crate::shutdown::requested(&mut shutdown) => return Outcome::Shutdown,
            }
        }
    }

    /// Starts one request: polls it once here, and spawns it if it has to wait. Returns false
    /// when the connection is to stop.
    async fn start(&self, frame: Frame) -> bool {
        let header = frame.header;
        if header.is_response() {
            tracing::warn!(peer = %self.ctx.peer, request_id = header.request_id, "ignoring a response frame sent to the broker");
            return true;
        }
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return false;
        };
        let state = self.state.clone();
        let tx = self.tx.clone();
        let ctx = self.ctx;
        let mut request = Box::pin(async move {
            let result = dispatch(&state, ctx, frame).await;
            respond(&tx, ctx.peer, header, result).await;
            drop(permit);
        });
        let done =
            std::future::poll_fn(|cx| Poll::Ready(request.as_mut().poll(cx).is_ready())).await;
        if !done {
            if header.api_key == ApiKey::Pull as u16 {
                let mut closed = self.closed.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = request => {}
                        _ = crate::shutdown::requested(&mut closed) => {}
                    }
                });
            } else {
                tokio::spawn(request);
            }
        }
        true
    }
}

/// Queues the answer to a request (none for a one-way request).
async fn respond(
    tx: &mpsc::Sender<OutFrame>,
    peer: SocketAddr,
    header: Header,
    result: Result<Reply, RequestError>,
) {
    let out = match result {
        Ok(reply) => OutFrame {
            header: header.response(ErrorCode::None),
            meta: reply.meta,
            payload: reply.payload,
        },
        Err(error) => {
            log_rejection(peer, &header, &error);
            OutFrame::new(
                header.response(error.code),
                &pb::ErrorResponse {
                    message: error.message,
                },
                Bytes::new(),
            )
        }
    };
    if header.is_oneway() {
        return;
    }
    // Fails only when the writer is gone (the connection failed): nobody to answer.
    let _ = tx.send(out).await;
}

fn log_rejection(peer: SocketAddr, header: &Header, error: &RequestError) {
    let api = ApiKey::from_u16(header.api_key).map_or("unknown", ApiKey::name);
    let id = header.request_id;
    match error.code {
        ErrorCode::Internal | ErrorCode::StorageError | ErrorCode::DiskFull => {
            tracing::error!(%peer, api, request_id = id, code = %error.code, message = %error.message, "request failed")
        }
        ErrorCode::UnsupportedApi
        | ErrorCode::UnsupportedVersion
        | ErrorCode::MalformedRequest
        | ErrorCode::CorruptMessage
        | ErrorCode::MessageTooLarge
        | ErrorCode::InvalidArgument
        | ErrorCode::InvalidTopicName => {
            tracing::warn!(%peer, api, request_id = id, code = %error.code, message = %error.message, "request rejected")
        }
        _ => {
            tracing::debug!(%peer, api, request_id = id, code = %error.code, message = %error.message, "request rejected")
        }
    }
}

/// Sends queued answers, coalescing all that are ready into one write.
async fn write_loop(
    mut rx: mpsc::Receiver<OutFrame>,
    mut write: OwnedWriteHalf,
    mut codec: FrameCodec,
    peer: SocketAddr,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    while let Some(frame) = rx.recv().await {
        encode(&mut codec, frame, &mut buf);
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(frame) => encode(&mut codec, frame, &mut buf),
                Err(_) => break,
            }
        }
        if let Err(e) = write.write_all(&buf).await {
            tracing::debug!(%peer, error = %e, "write failed; dropping the connection's answers");
            return;
        }
        buf.clear();
    }
    let _ = write.shutdown().await;
}

/// Encodes an answer; one too large for a frame becomes an `internal` error answer.
fn encode(codec: &mut FrameCodec, frame: OutFrame, buf: &mut BytesMut) {
    let header = frame.header;
    if let Err(e) = codec.encode(frame, buf) {
        tracing::error!(request_id = header.request_id, error = %e, "answer does not fit in a frame");
        let error = OutFrame::new(
            Header {
                error_code: ErrorCode::Internal as u16,
                ..header
            },
            &pb::ErrorResponse {
                message: format!("answer does not fit in a frame: {e}"),
            },
            Bytes::new(),
        );
        let _ = codec.encode(error, buf);
    }
}
