//! One TCP connection to a Weir server, shared by many concurrent requests.
//!
//! A writer task drains a queue of outgoing frames, coalescing whatever is queued into one
//! `write` call; a reader task splits the incoming stream into frames and hands each response
//! to the request waiting for its `request_id`. When the connection fails, every request in
//! flight fails at once with [`ClientError::ConnectionLost`] (retriable), and the connection
//! reports itself closed so the connection pool opens a new one.
//!
//! The server may also send requests of its own on the connection (server-to-client requests,
//! such as a transaction check-back): a frame without the response flag goes to the
//! [`RequestHandler`] set with [`Connection::set_request_handler`], which may answer through a
//! [`Replier`]. Without a handler such frames are dropped (logged).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tracing::{debug, trace};
use weir_proto::frame::flags;
use weir_proto::{ApiKey, ErrorCode, FrameCodec, Header, OutFrame, pb};

use crate::error::{ClientError, Result};

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// How long to wait for the TCP connection to open.
    pub connect_timeout: Duration,
    /// How long to wait for a response, unless a call says otherwise.
    pub request_timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame_len: u32,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_frame_len: weir_proto::frame::DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// A response: its protobuf body and its raw payload.
#[derive(Debug, Clone)]
pub struct Response {
    /// The protobuf body.
    pub meta: Bytes,
    /// Raw records, or empty.
    pub payload: Bytes,
}

type Waiter = oneshot::Sender<Result<Response>>;

/// Handles a request frame the server sent on a connection; must not block (spawn the work).
pub type RequestHandler = Arc<dyn Fn(weir_proto::Frame, Replier) + Send + Sync>;

/// Sends frames back on the connection a server-to-client request came on.
#[derive(Debug, Clone)]
pub struct Replier {
    outgoing: mpsc::WeakUnboundedSender<OutFrame>,
}

impl Replier {
    /// Sends a one-way request on the connection (no response is wanted or matched).
    pub fn send_oneway(&self, api: ApiKey, meta: Bytes, payload: Bytes) -> Result<()> {
        let lost = || ClientError::ConnectionLost {
            addr: String::new(),
            reason: "connection closed".to_owned(),
        };
        let outgoing = self.outgoing.upgrade().ok_or_else(lost)?;
        let mut header = Header::request(api, 0);
        header.flags |= flags::ONEWAY;
        outgoing
            .send(OutFrame {
                header,
                meta,
                payload,
            })
            .map_err(|_| lost())
    }
}

/// State shared by the handles and the reader and writer tasks.
struct Shared {
    addr: String,
    /// Requests waiting for a response; `None` once the connection has failed.
    pending: Mutex<Option<HashMap<u32, Waiter>>>,
    /// Handles the server's own requests.
    handler: Mutex<Option<RequestHandler>>,
    /// The writer's queue, weak so the writer still ends when the last handle is dropped.
    outgoing: mpsc::WeakUnboundedSender<OutFrame>,
}

impl Shared {
    /// Fails every waiting request and refuses new ones.
    fn close(&self, reason: &str) {
        let waiters = self.pending.lock().take();
        if let Some(waiters) = waiters {
            debug!(addr = %self.addr, reason, in_flight = waiters.len(), "connection closed");
            for (_, waiter) in waiters {
                let _ = waiter.send(Err(ClientError::ConnectionLost {
                    addr: self.addr.clone(),
                    reason: reason.to_owned(),
                }));
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.pending.lock().is_none()
    }
}

struct Inner {
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<OutFrame>,
    next_id: AtomicU32,
    config: ConnectionConfig,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer ends by itself when `outgoing` is dropped; the reader must be stopped.
        self.reader.abort();
        self.shared.close("connection dropped");
    }
}

/// A cheaply clonable handle to one connection; the connection closes when the last handle
/// is dropped.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.shared.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Removes a request's waiter when the request is abandoned (timed out or dropped).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(map) = self.shared.pending.lock().as_mut() {
            map.remove(&self.id);
        }
    }
}

impl Connection {
    /// Opens a connection to `addr` (`host:port`).
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Connection> {
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                what: format!("connect to {addr}"),
                after: config.connect_timeout,
            })?
            .map_err(|error| ClientError::Connect {
                addr: addr.to_owned(),
                error,
            })?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let (outgoing, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            pending: Mutex::new(Some(HashMap::new())),
            handler: Mutex::new(None),
            outgoing: outgoing.downgrade(),
        });
        let codec = FrameCodec::new(config.max_frame_len);
        tokio::spawn(write_loop(write_half, queue, codec, shared.clone()));
        let reader = tokio::spawn(read_loop(read_half, codec, shared.clone()));
        debug!(addr, "connected");
        Ok(Connection {
            inner: Arc::new(Inner {
                shared,
                outgoing,
                next_id: AtomicU32::new(1),
                config,
                reader,
            }),
        })
    }

    /// The peer's address, as dialled.
    pub fn addr(&self) -> &str {
        &self.inner.shared.addr
    }

    /// Whether the connection has failed; a closed connection refuses every request.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// Whether `other` is a handle to this same connection.
    pub fn same_as(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Sets the handler of requests the server sends on this connection.
    pub fn set_request_handler(&self, handler: RequestHandler) {
        *self.inner.shared.handler.lock() = Some(handler);
    }

    /// Sends a request and waits for its response, up to the configured request timeout.
    pub async fn request(&self, api: ApiKey, meta: Bytes, payload: Bytes) -> Result<Response> {
        self.request_with_timeout(api, meta, payload, self.inner.config.request_timeout)
            .await
    }

    /// Sends a request and waits up to `timeout` for its response.
    ///
    /// An error response becomes [`ClientError::Server`].
    pub async fn request_with_timeout(
        &self,
        api: ApiKey,
        meta: Bytes,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Response> {
        let shared = &self.inner.shared;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match shared.pending.lock().as_mut() {
            Some(map) => map.insert(id, tx),
            None => return Err(self.lost("connection is closed")),
        };
        let _guard = PendingGuard { shared, id };
        let frame = OutFrame {
            header: Header::request(api, id),
            meta,
            payload,
        };
        if self.inner.outgoing.send(frame).is_err() {
            return Err(self.lost("writer stopped"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.lost("connection closed")),
            Err(_) => Err(ClientError::Timeout {
                what: format!("{} request to {}", api.name(), shared.addr),
                after: timeout,
            }),
        }
    }

    /// Sends a typed request and decodes the typed response body; returns the payload too.
    pub async fn call<Req, Resp>(
        &self,
        api: ApiKey,
        request: &Req,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(Resp, Bytes)>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let meta = Bytes::from(request.encode_to_vec());
        let timeout = timeout.unwrap_or(self.inner.config.request_timeout);
        let response = self
            .request_with_timeout(api, meta, payload, timeout)
            .await?;
        let body = Resp::decode(response.meta).map_err(|e| {
            ClientError::Protocol(format!("cannot decode {} response: {e}", api.name()))
        })?;
        Ok((body, response.payload))
    }

    /// Sends a one-way request: the server sends no response, not even an error.
    pub fn send_oneway(&self, api: ApiKey, meta: Bytes, payload: Bytes) -> Result<()> {
        if self.is_closed() {
            return Err(self.lost("connection is closed"));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut header = Header::request(api, id);
        header.flags |= flags::ONEWAY;
        self.inner
            .outgoing
            .send(OutFrame {
                header,
                meta,
                payload,
            })
            .map_err(|_| self.lost("writer stopped"))
    }

    fn lost(&self, reason: &str) -> ClientError {
        ClientError::ConnectionLost {
            addr: self.inner.shared.addr.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// Payloads at least this long are written from their own buffer (a vectored write) instead
/// of being copied behind their frame's header: a produced batch goes to the socket as built.
const WRITE_IN_PLACE: usize = 16 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Writes queued frames, as many per `write` as are waiting: headers, metas and small
/// payloads copied into one buffer, large payloads written in place.
async fn write_loop(
    mut socket: tokio::net::tcp::OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<OutFrame>,
    codec: FrameCodec,
    shared: Arc<Shared>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunks: Vec<Bytes> = Vec::new();
    while let Some(frame) = queue.recv().await {
        let mut next = Some(frame);
        let mut queued = 0usize;
        while let Some(frame) = next.take() {
            let request_id = frame.header.request_id;
            match codec.encode_head(&frame, &mut buf) {
                Ok(()) if frame.payload.len() >= WRITE_IN_PLACE => {
                    chunks.push(buf.split().freeze());
                    queued += frame.payload.len();
                    chunks.push(frame.payload);
                }
                Ok(()) => buf.extend_from_slice(&frame.payload),
                Err(e) => {
                    // Only this request is affected: the frame was never written.
                    let waiter = shared
                        .pending
                        .lock()
                        .as_mut()
                        .and_then(|m| m.remove(&request_id));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Err(ClientError::Protocol(e.to_string())));
                    }
                }
            }
            if buf.len() + queued < 1024 * 1024 && chunks.len() < MAX_IOVECS {
                next = queue.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            chunks.push(buf.split().freeze());
        }
        if let Err(e) = write_chunks(&mut socket, &mut chunks).await {
            shared.close(&format!("write failed: {e}"));
            return;
        }
    }
    let _ = socket.shutdown().await;
}

/// Writes every chunk, in order, with vectored writes; empties `chunks`.
async fn write_chunks(
    socket: &mut tokio::net::tcp::OwnedWriteHalf,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        if chunks[first].is_empty() {
            first += 1;
            continue;
        }
        let mut slices = [std::io::IoSlice::new(&[]); MAX_IOVECS];
        let mut n = 0;
        for (slot, chunk) in slices.iter_mut().zip(&chunks[first..]) {
            *slot = std::io::IoSlice::new(chunk);
            n += 1;
        }
        let mut written = socket.write_vectored(&slices[..n]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let len = chunks[first].len();
            if written >= len {
                written -= len;
                first += 1;
            } else {
                bytes::Buf::advance(&mut chunks[first], written);
                written = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}

/// Reads response frames and completes the matching requests.
async fn read_loop(
    mut socket: tokio::net::tcp::OwnedReadHalf,
    mut codec: FrameCodec,
    shared: Arc<Shared>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => deliver(&shared, frame),
                Ok(None) => break,
                Err(e) => {
                    shared.close(&format!("bad frame from server: {e}"));
                    return;
                }
            }
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) => {
                shared.close("closed by the server");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                shared.close(&format!("read failed: {e}"));
                return;
            }
        }
    }
}

fn deliver(shared: &Shared, frame: weir_proto::Frame) {
    if !frame.header.is_response() {
        let handler = shared.handler.lock().clone();
        match handler {
            Some(handler) => handler(
                frame,
                Replier {
                    outgoing: shared.outgoing.clone(),
                },
            ),
            None => {
                debug!(addr = %shared.addr, api = frame.header.api_key, "no handler for a request from the server")
            }
        }
        return;
    }
    let id = frame.header.request_id;
    let waiter = shared.pending.lock().as_mut().and_then(|m| m.remove(&id));
    let Some(waiter) = waiter else {
        trace!(addr = %shared.addr, id, "response to an abandoned request");
        return;
    };
    let result = if frame.header.error_code != 0 {
        let code = ErrorCode::from_u16(frame.header.error_code);
        let message = <pb::ErrorResponse as prost::Message>::decode(frame.meta)
            .map(|e| e.message)
            .unwrap_or_default();
        Err(ClientError::server(code, message))
    } else {
        Ok(Response {
            meta: frame.meta,
            payload: frame.payload.freeze(),
        })
    };
    let _ = waiter.send(result);
}
