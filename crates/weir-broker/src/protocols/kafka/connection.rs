//! One Kafka client connection: a reader that splits the stream into requests and starts each,
//! and a writer that sends the responses **in request order** (Kafka clients match responses
//! to requests by order and fail on a correlation-id mismatch), even when a later request
//! finishes first.
//!
//! ```text
//! frame     = length:i32 (big-endian, bytes that follow) request
//! request   = request header (api key:i16, version:i16, correlation id:i32, client id, …)
//!             request body (the API's fields, per version)
//! response  = length:i32 response header (correlation id:i32, tagged fields if flexible)
//!             response body
//! ```
//!
//! Each request gets a slot in a queue before it starts; the writer takes the slots in order
//! and waits for each one's response. A request is polled once here in the reader: most (a
//! produce in `async` flush mode, a fetch that finds data, metadata) finish in that poll and
//! cost no task; one that has to wait (a long poll, a `sync` flush, a group join) moves to its
//! own task. Polling inline keeps a connection's produce requests in the log in the order
//! they came, which idempotent producers with several requests in flight rely on.
//!
//! Because answers leave in order, a request behind a long-polling fetch would wait out that
//! fetch's `max_wait_ms` (librdkafka sends its ListOffsets and Metadata on the connection it
//! fetches on). So each new request wakes the fetches waiting ahead of it on its connection
//! ([`Request::queued`]), and they answer with what they have; the client fetches again.
//!
//! Memory is bounded as on the native listener (see [`crate::protocols::in_flight`]): requests
//! and responses are charged to the connection's and the broker's budgets and the reader
//! waits while they are spent; at most [`MAX_IN_FLIGHT`] requests wait for their turn. A
//! frame over `max_frame_size`, an unknown API or an unsupported version closes the
//! connection (as Kafka does: the stream can no longer be trusted).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use crate::core::session::ConnectionId;
use crate::metrics_catalog::CONNECTIONS;
use crate::protocols::in_flight::{Charge, ConnectionBudget, Pool};
use crate::protocols::kafka::dispatch::{self, Listener, Response};
use crate::protocols::kafka::versions;
use crate::protocols::socket::{Inbound, Stop, write_progressing};

/// Requests of one connection waiting for their turn to be answered.
const MAX_IN_FLIGHT: usize = 1024;
/// The writer sends once this much is buffered, even if more responses are ready.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// How long a stopping connection waits for its responses to go out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A request's place in the response order.
type Slot = oneshot::Receiver<Answer>;

/// What the writer does for one request.
enum Answer {
    /// Sends this encoded response (and then gives back the bytes it holds of the budget).
    Send(BytesMut, Charge),
    /// Sends nothing (a produce with acks=0).
    Nothing,
    /// Closes the connection: the response could not be encoded, and a client missing one
    /// response would match every later one to the wrong request.
    Close,
}

/// The request as the handlers see it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The decoded header (API, version, correlation id, client id).
    pub header: RequestHeader,
    /// The API.
    pub api: ApiKey,
    /// The client's address.
    pub peer: SocketAddr,
    /// Notified when a later request of the same connection starts: a long poll ahead of it
    /// answers then, as the later one's answer has to wait for it.
    pub queued: Arc<Notify>,
}

/// Serves one Kafka connection until the peer closes it, it fails, it stays idle too long,
/// or the broker shuts down.
pub(crate) async fn serve(
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    connection: ConnectionId,
    budget: ConnectionBudget,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::debug!(%peer, connection, "kafka connection opened");
    metrics::gauge!(CONNECTIONS).increment(1.0);
    let _ = stream.set_nodelay(true);
    let (mut read, write) = stream.into_split();
    let (slots, slots_rx) = mpsc::channel::<Slot>(MAX_IN_FLIGHT);
    let stall_limit = match listener.state.config.connection_stall_timeout_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let writer = tokio::spawn(write_loop(slots_rx, write, peer, stall_limit));
    // Tells requests still waiting (long polls, joins) that nobody will read their answer.
    let (closed_tx, closed_rx) = watch::channel(false);
    let reader = Reader {
        listener,
        budget: Arc::new(budget),
        slots,
        closed: closed_rx,
        peer,
        queued: Arc::new(Notify::new()),
    };
    let stop = reader.run(&mut read, &mut shutdown).await;
    drop(reader);
    let _ = closed_tx.send(true);
    if stop != Stop::Failed {
        // Responses already made still go out.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, writer).await;
    } else {
        writer.abort();
    }
    metrics::gauge!(CONNECTIONS).decrement(1.0);
    tracing::debug!(%peer, connection, "kafka connection closed");
}

struct Reader {
    listener: Arc<Listener>,
    budget: Arc<ConnectionBudget>,
    slots: mpsc::Sender<Slot>,
    closed: watch::Receiver<bool>,
    peer: SocketAddr,
    /// Wakes this connection's waiting long polls when a request queues behind them.
    queued: Arc<Notify>,
}

impl Reader {
    /// Reads and starts requests until the connection stops.
    async fn run(&self, read: &mut OwnedReadHalf, shutdown: &mut watch::Receiver<bool>) -> Stop {
        let peer = self.peer;
        let config = &self.listener.state.config;
        let max_frame = usize::try_from(config.max_frame_size).unwrap_or(usize::MAX);
        let mut codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(max_frame)
            .new_codec();
        let mut inbound = Inbound::new(peer, config.connection_idle_timeout_ms);
        loop {
            loop {
                match codec.decode(&mut inbound.buf) {
                    Ok(Some(frame)) => {
                        if let Err(why) = self.start(frame.freeze()).await {
                            tracing::warn!(%peer, why, "closing the kafka connection");
                            return Stop::Failed;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "kafka framing error; closing the connection");
                        return Stop::Failed;
                    }
                }
            }
            let nothing_in_flight = || self.slots.capacity() == MAX_IN_FLIGHT;
            if let Err(stop) = inbound
                .read_more(
                    read,
                    &self.budget,
                    nothing_in_flight,
                    self.slots.closed(),
                    shutdown,
                )
                .await
            {
                return stop;
            }
        }
    }

    /// Decodes one request, takes its place in the response order and starts it: polled once
    /// here, moved to a task if it has to wait. An error closes the connection.
    async fn start(&self, mut frame: Bytes) -> Result<(), String> {
        if frame.len() < 8 {
            return Err(format!("a {}-byte request has no header", frame.len()));
        }
        let api_code = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let api = ApiKey::try_from(api_code).map_err(|()| format!("unknown API key {api_code}"))?;
        let supported = versions::supports(api, version);
        if !supported && api != ApiKey::ApiVersions {
            return Err(format!("{api:?} v{version} is not supported"));
        }
        let charge = self.budget.charge(Pool::Requests, frame.len()).await;
        let (header, body) = if supported {
            let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
                .map_err(|e| format!("bad {api:?} v{version} request header: {e}"))?;
            let body = RequestKind::decode(api, &mut frame, version)
                .map_err(|e| format!("bad {api:?} v{version} request: {e}"))?;
            (header, Some(body))
        } else {
            // An ApiVersions of a version we do not know: answer v0 with the list, so the
            // client falls back (its body may be laid out in a way we cannot read).
            let mut at = frame.slice(4..8);
            let header = RequestHeader::default()
                .with_request_api_key(api_code)
                .with_request_api_version(version)
                .with_correlation_id(at.get_i32());
            (header, None)
        };
        let (tx, rx) = oneshot::channel();
        if self.slots.send(rx).await.is_err() {
            return Err("the writer is gone".to_owned());
        }
        // Its answer goes out after theirs: the long polls ahead of it answer now.
        self.queued.notify_waiters();
        let request = Request {
            header,
            api,
            peer: self.peer,
            queued: self.queued.clone(),
        };
        let listener = self.listener.clone();
        let budget = self.budget.clone();
        let mut task = Box::pin(async move {
            let response = dispatch::handle(&listener, &request, body).await;
            // The request's bytes are stored or dropped by now.
            drop(charge);
            let encoded = match response {
                Response::Send(kind) => Some(dispatch::encode(&request, &kind)),
                Response::Nothing => None,
            };
            let answer = match encoded {
                Some(Some(bytes)) => {
                    let charge = budget.charge(Pool::Answers, bytes.len()).await;
                    Answer::Send(bytes, charge)
                }
                Some(None) => Answer::Close,
                None => Answer::Nothing,
            };
            let _ = tx.send(answer);
        });
        let done = std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx).is_ready())).await;
        if !done {
            let mut closed = self.closed.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = task => {}
                    _ = crate::shutdown::requested(&mut closed) => {}
                }
            });
        }
        Ok(())
    }
}

/// Sends responses in request order, coalescing those that are ready into one write. A peer
/// that takes no byte for `stall_limit` loses its connection.
async fn write_loop(
    mut slots: mpsc::Receiver<Slot>,
    mut write: OwnedWriteHalf,
    peer: SocketAddr,
    stall_limit: Option<Duration>,
) {
    let mut next: Option<Slot> = None;
    let mut charges = Vec::new();
    loop {
        let slot = match next.take() {
            Some(slot) => slot,
            None => match slots.recv().await {
                Some(slot) => slot,
                None => break,
            },
        };
        // A request dropped with its connection has nothing to send.
        let Ok(first) = slot.await else { continue };
        let mut buf = BytesMut::new();
        let mut close = false;
        match first {
            Answer::Send(bytes, charge) => {
                buf = bytes;
                charges.push(charge);
            }
            Answer::Nothing => {}
            Answer::Close => close = true,
        }
        // Take the responses that are ready now, in order, into the same write.
        while !close && buf.len() < WRITE_BATCH_BYTES {
            let mut slot = match slots.try_recv() {
                Ok(slot) => slot,
                Err(_) => break,
            };
            match slot.try_recv() {
                Ok(Answer::Send(bytes, charge)) => {
                    buf.extend_from_slice(&bytes);
                    charges.push(charge);
                }
                Ok(Answer::Nothing) | Err(oneshot::error::TryRecvError::Closed) => {}
                Ok(Answer::Close) => close = true,
                Err(oneshot::error::TryRecvError::Empty) => {
                    next = Some(slot);
                    break;
                }
            }
        }
        if let Err(e) = write_progressing(&mut write, &buf, stall_limit).await {
            tracing::debug!(%peer, error = %e, "kafka write failed; dropping the connection's responses");
            return;
        }
        charges.clear();
        if close {
            break;
        }
    }
    let _ = write.shutdown().await;
}
