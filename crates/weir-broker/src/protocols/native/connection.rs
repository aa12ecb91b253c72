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
//!
//! Memory a connection holds is bounded (see [`crate::protocols::in_flight`]): requests and answers are
//! charged to the connection's and the broker's byte budgets; a produce that does not fit is
//! answered `busy`, a pull answer that does not fit too, anything else waits, and while the
//! connection's unsent answers fill its share the reader stops reading. The read buffer grows with the bytes that arrived, never with a frame's
//! announced size, and both buffers are given back while the connection is quiet. A
//! connection silent for `connection_idle_timeout_ms` with nothing in flight is closed, and
//! so is one whose peer takes none of its answers for `connection_stall_timeout_ms`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::codec::{Decoder, Encoder};
use weir_proto::frame::HEADER_LEN;
use weir_proto::{ApiKey, ErrorCode, Frame, FrameCodec, Header, OutFrame, pb};

use crate::core::session::ConnectionId;
use crate::error::RequestError;
use crate::metrics_catalog::{CONNECTIONS, REQUESTS_TOTAL};
use crate::protocols::in_flight::{ConnectionBudget, Pool};
use crate::protocols::native::dispatch::dispatch;
use crate::protocols::native::handlers::{Reply, RequestContext};
use crate::protocols::native::outbox::{Outboxes, Outgoing};
use crate::protocols::socket::{Inbound, Stop, write_progressing};
use crate::state::BrokerState;

/// Requests one connection may have in flight; the reader stops reading at this many.
const MAX_IN_FLIGHT: u32 = 4096;
/// Answers queued for the writer before handlers wait.
const RESPONSE_QUEUE: usize = 1024;
/// The writer sends once this much is buffered, even if more answers are queued.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// How long a stopping connection waits for its requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one connection until the peer closes it, it fails, it stays idle too long, or the
/// broker shuts down.
pub(crate) async fn serve(
    state: Arc<BrokerState>,
    outboxes: Arc<Outboxes>,
    stream: TcpStream,
    peer: SocketAddr,
    connection: ConnectionId,
    budget: ConnectionBudget,
    shutdown: watch::Receiver<bool>,
) {
    tracing::debug!(%peer, connection, "connection opened");
    metrics::gauge!(CONNECTIONS).increment(1.0);
    let _ = stream.set_nodelay(true);
    let (mut read, write) = stream.into_split();
    let codec = FrameCodec::new(state.max_frame_len);
    let stall_limit = match state.config.connection_stall_timeout_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let (tx, rx) = mpsc::channel::<Outgoing>(RESPONSE_QUEUE);
    let writer = tokio::spawn(write_loop(rx, write, codec, peer, stall_limit));
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
        budget: Arc::new(budget),
        idle_timeout_ms: state.config.connection_idle_timeout_ms,
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
        Stop::Shutdown => {
            let _ =
                tokio::time::timeout(DRAIN_TIMEOUT, in_flight.acquire_many(MAX_IN_FLIGHT)).await;
            let _ = closed_tx.send(true);
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, writer).await;
        }
        Stop::Closed => {
            // Answers in flight still go out (the peer may only have closed its write side),
            // but nobody waits for a long poll's answer.
            let _ = closed_tx.send(true);
        }
        Stop::Failed => {
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
    tx: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    closed: watch::Receiver<bool>,
    budget: Arc<ConnectionBudget>,
    idle_timeout_ms: u64,
}

impl Reader {
    async fn run(
        &self,
        read: &mut OwnedReadHalf,
        mut codec: FrameCodec,
        mut shutdown: watch::Receiver<bool>,
    ) -> Stop {
        let peer = self.ctx.peer;
        let mut inbound = Inbound::new(peer, self.idle_timeout_ms);
        loop {
            loop {
                match codec.decode(&mut inbound.buf) {
                    Ok(Some(frame)) => {
                        if !self.start(frame).await {
                            return Stop::Shutdown;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "framing error; closing the connection");
                        return Stop::Failed;
                    }
                }
            }
            let nothing_in_flight = || self.in_flight.available_permits() == MAX_IN_FLIGHT as usize;
            if let Err(stop) = inbound
                .read_more(
                    read,
                    &self.budget,
                    nothing_in_flight,
                    self.tx.closed(),
                    &mut shutdown,
                )
                .await
            {
                return stop;
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
        let size = HEADER_LEN + frame.meta.len() + frame.payload.len();
        let charge = if header.api_key == ApiKey::Produce as u16 {
            match self.budget.try_charge(Pool::Requests, size) {
                Ok(charge) => charge,
                Err(spent) => {
                    // Refused before any work: the client backs off and sends it again.
                    drop(frame);
                    metrics::counter!(REQUESTS_TOTAL, "api" => "produce", "code" => ErrorCode::Busy.name())
                        .increment(1);
                    let busy = RequestError::new(
                        ErrorCode::Busy,
                        format!("broker busy: {spent}; retry later"),
                    );
                    respond(&self.tx, &self.budget, self.ctx.peer, header, Err(busy)).await;
                    return true;
                }
            }
        } else {
            self.budget.charge(Pool::Requests, size).await
        };
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return false;
        };
        let state = self.state.clone();
        let tx = self.tx.clone();
        let budget = self.budget.clone();
        let ctx = self.ctx;
        let mut request = Box::pin(async move {
            let result = dispatch(&state, ctx, frame).await;
            // The request's bytes are stored or dropped by now.
            drop(charge);
            respond(&tx, &budget, ctx.peer, header, result).await;
            drop(permit);
        });
        let done =
            std::future::poll_fn(|cx| Poll::Ready(request.as_mut().poll(cx).is_ready())).await;
        if !done {
            // A long poll (a pull, a shared-group receive) whose connection closed is
            // dropped where it waits: it must not take messages for a client that is gone (a
            // receive would hide them and spend one of their attempts).
            if header.api_key == ApiKey::Pull as u16 || header.api_key == ApiKey::Receive as u16 {
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

/// Queues the answer to a request (none for a one-way request), charged to the budgets: a
/// pull answer with records that does not fit becomes a `busy` answer, any other waits.
async fn respond(
    tx: &mpsc::Sender<Outgoing>,
    budget: &ConnectionBudget,
    peer: SocketAddr,
    header: Header,
    result: Result<Reply, RequestError>,
) {
    let mut out = match result {
        Ok(reply) => OutFrame {
            header: header.response(ErrorCode::None),
            meta: reply.meta,
            payload: reply.payload,
        },
        Err(error) => error_answer(peer, header, error),
    };
    if header.is_oneway() {
        return;
    }
    let size = HEADER_LEN + out.meta.len() + out.payload.len();
    let charge = if header.api_key == ApiKey::Pull as u16 && !out.payload.is_empty() {
        match budget.try_charge(Pool::Answers, size) {
            Ok(charge) => charge,
            Err(spent) => {
                // A pull only reads: dropping its records costs nothing but the client's
                // next pull, and this connection cannot pile up answers it does not read.
                let busy = RequestError::new(
                    ErrorCode::Busy,
                    format!("answer held back: {spent}; pull again later"),
                );
                out = error_answer(peer, header, busy);
                budget
                    .charge(Pool::Answers, HEADER_LEN + out.meta.len())
                    .await
            }
        }
    } else {
        budget.charge(Pool::Answers, size).await
    };
    // Fails only when the writer is gone (the connection failed): nobody to answer.
    let _ = tx.send((out, charge)).await;
}

/// The answer carrying `error`, logged as its code deserves.
fn error_answer(peer: SocketAddr, header: Header, error: RequestError) -> OutFrame {
    log_rejection(peer, &header, &error);
    OutFrame::new(
        header.response(error.code),
        &pb::ErrorResponse {
            message: error.message,
        },
        Bytes::new(),
    )
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

/// Sends queued answers, coalescing all that are ready into one write. The answers' charges
/// are given back once they are written. A peer that takes none of them for `stall_limit`
/// loses its connection.
async fn write_loop(
    mut rx: mpsc::Receiver<Outgoing>,
    mut write: OwnedWriteHalf,
    mut codec: FrameCodec,
    peer: SocketAddr,
    stall_limit: Option<Duration>,
) {
    let mut charges = Vec::new();
    while let Some((frame, charge)) = rx.recv().await {
        // Allocated per burst: a quiet connection holds no write buffer.
        let mut buf = BytesMut::new();
        encode(&mut codec, frame, &mut buf);
        charges.push(charge);
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok((frame, charge)) => {
                    encode(&mut codec, frame, &mut buf);
                    charges.push(charge);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = write_progressing(&mut write, &buf, stall_limit).await {
            tracing::debug!(%peer, error = %e, "write failed; dropping the connection's answers");
            return;
        }
        charges.clear();
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
