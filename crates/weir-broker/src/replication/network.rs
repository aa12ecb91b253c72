//! The Raft network of a broker group: each replica's Raft listener, and a client per peer.
//!
//! One TCP connection per (replica, peer) direction carries one request at a time:
//!
//! ```text
//! frame:    len u32 BE | postcard body (len bytes)
//! request:  Request { from, from_addr, rpc: Append | Vote | PreVote | Snapshot }
//! response: Response::Append(Result<..>) | Response::Vote(Result<..>)
//!           | Response::Snapshot(Result<..>)                         (error: its text)
//! ```
//!
//! A snapshot goes over a connection of its own, its head followed by the pieces of the
//! commit log (drawn in `snapshot.rs`).
//!
//! Every request names its sender's node id and native (client) address, so a follower
//! knows where its leader takes writes and can name it in `NOT_LEADER` answers.
//! A connection that fails or times out is dropped and dialled again on the next request;
//! openraft backs off from a peer that cannot be reached.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::snapshot::{Head, PIECE_LEN, Piece, Receiving, SnapshotData};
use super::{Raft, TypeConfig};

/// Largest frame accepted: a batch of entries up to the Raft payload limit, with room.
pub(crate) const MAX_FRAME: usize = 256 << 20;

/// How long dialling a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A Raft request.
#[derive(Debug, Serialize, Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot(Box<Head>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    from: u64,
    from_addr: String,
    rpc: Rpc,
}

#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Append(Result<AppendEntriesResponse<TypeConfig>, String>),
    Vote(Result<VoteResponse<TypeConfig>, String>),
    Snapshot(Result<SnapshotResponse<TypeConfig>, String>),
}

/// Native addresses of the group's replicas, as their requests name them.
#[derive(Debug, Default)]
pub(crate) struct PeerAddrs(Mutex<HashMap<u64, String>>);

impl PeerAddrs {
    /// The native address of replica `node`, when it has sent a request (or is this node).
    pub fn get(&self, node: u64) -> Option<String> {
        self.0.lock().get(&node).cloned()
    }

    /// Records `node`'s native address.
    pub fn set(&self, node: u64, addr: &str) {
        let mut map = self.0.lock();
        if map.get(&node).map(String::as_str) != Some(addr) {
            map.insert(node, addr.to_owned());
        }
    }
}

async fn read_frame<S: AsyncReadExt + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let len = s.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "raft frame of {len} bytes is over the limit of {MAX_FRAME}"
        )));
    }
    let mut buf = vec![0; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<S: AsyncWriteExt + Unpin>(s: &mut S, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    s.write_u32(len).await?;
    s.write_all(body).await?;
    s.flush().await
}

/// Makes a client per peer.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    /// This node's id and native address, sent with every request.
    pub me: u64,
    pub my_addr: String,
    /// How this node dials each peer's Raft listener (from `raft_peers`; membership
    /// addresses otherwise).
    pub dial: Arc<HashMap<u64, String>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        let addr = self
            .dial
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        Peer {
            target,
            addr,
            me: self.me,
            my_addr: self.my_addr.clone(),
            conn: None,
        }
    }
}

/// A client of one peer's Raft listener.
#[derive(Debug)]
pub(crate) struct Peer {
    target: u64,
    addr: String,
    me: u64,
    my_addr: String,
    conn: Option<BufStream<TcpStream>>,
}

#[derive(Debug)]
enum CallError {
    Unreachable(std::io::Error),
    Failed(String),
}

impl Peer {
    async fn call(&mut self, rpc: Rpc, ttl: Duration) -> Result<Response, CallError> {
        let request = Request {
            from: self.me,
            from_addr: self.my_addr.clone(),
            rpc,
        };
        let body = postcard::to_stdvec(&request).map_err(|e| CallError::Failed(e.to_string()))?;
        let result = tokio::time::timeout(ttl, self.exchange(&body)).await;
        match result {
            Ok(Ok(bytes)) => postcard::from_bytes(&bytes).map_err(|e| {
                self.conn = None;
                CallError::Failed(format!("undecodable raft response: {e}"))
            }),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(CallError::Failed(format!(
                    "raft request to node {} timed out after {ttl:?}",
                    self.target
                )))
            }
        }
    }

    async fn exchange(&mut self, body: &[u8]) -> Result<Vec<u8>, CallError> {
        if self.conn.is_none() {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| CallError::Unreachable(std::io::ErrorKind::TimedOut.into()))?
                .map_err(CallError::Unreachable)?;
            stream.set_nodelay(true).map_err(CallError::Unreachable)?;
            self.conn = Some(BufStream::new(stream));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(CallError::Failed("no connection".into()));
        };
        write_frame(conn, body)
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?;
        read_frame(conn)
            .await
            .map_err(|e| CallError::Failed(e.to_string()))
    }
}

fn rpc_error(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Failed(msg) => RPCError::Network(NetworkError::from_string(msg)),
    }
}

fn unexpected() -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string("unexpected raft response kind"))
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(Rpc::Append(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            Response::Append(Ok(r)) => Ok(r),
            Response::Append(Err(e)) => Err(RPCError::Network(NetworkError::from_string(e))),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(Rpc::Vote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            Response::Vote(Ok(r)) => Ok(r),
            Response::Vote(Err(e)) => Err(RPCError::Network(NetworkError::from_string(e))),
            _ => Err(unexpected()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(Rpc::PreVote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            Response::Vote(Ok(r)) => Ok(r),
            Response::Vote(Err(e)) => Err(RPCError::Network(NetworkError::from_string(e))),
            _ => Err(unexpected()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let SnapshotData::Local(local) = snapshot.snapshot else {
            return Err(StreamingError::Network(NetworkError::from_string(
                "a received snapshot is not sent on",
            )));
        };
        tracing::debug!(
            target = self.target,
            at = ?snapshot.meta.last_log_id,
            "sending a snapshot"
        );
        let send = self.send_snapshot(vote, snapshot.meta, &local);
        tokio::select! {
            result = send => result.map_err(|e| match e {
                CallError::Unreachable(e) => StreamingError::Unreachable(Unreachable::new(&e)),
                CallError::Failed(msg) => StreamingError::Network(NetworkError::from_string(msg)),
            }),
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

impl Peer {
    /// Sends a snapshot on a connection of its own: the head, the commit log in pieces, the
    /// end; then waits for the answer.
    async fn send_snapshot(
        &self,
        vote: VoteOf<TypeConfig>,
        meta: openraft::alias::SnapshotMetaOf<TypeConfig>,
        local: &super::snapshot::LocalSnapshot,
    ) -> Result<SnapshotResponse<TypeConfig>, CallError> {
        let failed = |e: std::io::Error| CallError::Failed(e.to_string());
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| CallError::Unreachable(std::io::ErrorKind::TimedOut.into()))?
            .map_err(CallError::Unreachable)?;
        stream.set_nodelay(true).map_err(CallError::Unreachable)?;
        let mut conn = BufStream::new(stream);
        // The segments are those on disk now: retention may have deleted older ones since
        // the snapshot was built.
        let span = local
            .store
            .log_span(local.end)
            .map_err(|e| CallError::Failed(e.to_string()))?;
        let head_at = meta.last_log_id;
        let head = Head {
            vote,
            meta,
            end: local.end,
            state: local.state.clone(),
            tombstones: span.tombstones.clone(),
        };
        let request = Request {
            from: self.me,
            from_addr: self.my_addr.clone(),
            rpc: Rpc::Snapshot(Box::new(head)),
        };
        let body = postcard::to_stdvec(&request).map_err(|e| CallError::Failed(e.to_string()))?;
        write_frame(&mut conn, &body).await.map_err(failed)?;
        let mut sent = 0u64;
        for (base, capacity) in &span.segments {
            let upto = (base + capacity).min(local.end);
            let mut at = *base;
            while at < upto {
                let len = (upto - at).min(PIECE_LEN);
                let store = Arc::clone(&local.store);
                let bytes =
                    tokio::task::spawn_blocking(move || store.read_log_bytes(at, len as usize))
                        .await
                        .map_err(|e| CallError::Failed(e.to_string()))?
                        .map_err(|e| CallError::Failed(e.to_string()))?;
                let piece = Piece {
                    base: *base,
                    capacity: *capacity,
                    pos: at - base,
                    bytes: bytes.to_vec(),
                };
                let body =
                    postcard::to_stdvec(&piece).map_err(|e| CallError::Failed(e.to_string()))?;
                write_frame(&mut conn, &body).await.map_err(failed)?;
                at += len;
                sent += len;
            }
        }
        let last = Piece {
            base: 0,
            capacity: 0,
            pos: 0,
            bytes: Vec::new(),
        };
        let body = postcard::to_stdvec(&last).map_err(|e| CallError::Failed(e.to_string()))?;
        write_frame(&mut conn, &body).await.map_err(failed)?;
        tracing::info!(
            target = self.target,
            at = ?head_at,
            bytes = sent,
            "snapshot sent"
        );
        let answer = read_frame(&mut conn).await.map_err(failed)?;
        match postcard::from_bytes(&answer) {
            Ok(Response::Snapshot(Ok(r))) => Ok(r),
            Ok(Response::Snapshot(Err(e))) => Err(CallError::Failed(e)),
            Ok(_) => Err(CallError::Failed("unexpected raft response kind".into())),
            Err(e) => Err(CallError::Failed(format!("undecodable raft response: {e}"))),
        }
    }
}

/// Serves the Raft listener: every connection's requests go to `raft`, one at a time.
pub(crate) async fn serve(
    listener: TcpListener,
    raft: Raft,
    peers: Arc<PeerAddrs>,
    raft_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = crate::shutdown::requested(&mut shutdown) => return,
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "raft accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let raft = raft.clone();
        let peers = peers.clone();
        let shutdown = shutdown.clone();
        let raft_dir = raft_dir.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, raft, peers, raft_dir, shutdown).await {
                tracing::debug!(%from, error = %e, "raft connection closed");
            }
        });
    }
}

async fn connection(
    stream: TcpStream,
    raft: Raft,
    peers: Arc<PeerAddrs>,
    raft_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = BufStream::new(stream);
    loop {
        let body = tokio::select! {
            b = read_frame(&mut stream) => b?,
            _ = crate::shutdown::requested(&mut shutdown) => return Ok(()),
        };
        let request: Request = postcard::from_bytes(&body).map_err(std::io::Error::other)?;
        peers.set(request.from, &request.from_addr);
        let response = match request.rpc {
            Rpc::Append(rpc) => {
                Response::Append(raft.append_entries(rpc).await.map_err(|e| e.to_string()))
            }
            Rpc::Vote(rpc) => Response::Vote(raft.vote(rpc).await.map_err(|e| e.to_string())),
            Rpc::PreVote(rpc) => {
                Response::Vote(raft.pre_vote(rpc).await.map_err(|e| e.to_string()))
            }
            Rpc::Snapshot(head) => {
                Response::Snapshot(receive_snapshot(&mut stream, &raft, &raft_dir, *head).await)
            }
        };
        let bytes = postcard::to_stdvec(&response).map_err(std::io::Error::other)?;
        write_frame(&mut stream, &bytes).await?;
    }
}

/// Receives a snapshot's pieces after its head, stages it and hands it to Raft.
async fn receive_snapshot(
    stream: &mut BufStream<TcpStream>,
    raft: &Raft,
    raft_dir: &std::path::Path,
    head: Head,
) -> Result<SnapshotResponse<TypeConfig>, String> {
    tracing::info!(at = ?head.meta.last_log_id, "receiving a snapshot from the leader");
    let mut receiving = Receiving::start(raft_dir).map_err(|e| e.to_string())?;
    let mut bytes = 0u64;
    loop {
        let body = read_frame(stream).await.map_err(|e| e.to_string())?;
        let piece: Piece = postcard::from_bytes(&body).map_err(|e| e.to_string())?;
        if piece.capacity == 0 {
            break;
        }
        bytes += piece.bytes.len() as u64;
        receiving =
            tokio::task::spawn_blocking(move || receiving.piece(&piece).map(|()| receiving))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
    }
    let vote = head.vote;
    let meta = head.meta.clone();
    let staged = tokio::task::spawn_blocking(move || receiving.finish(&head))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    tracing::info!(bytes, "snapshot received");
    let snapshot = openraft::storage::Snapshot {
        meta,
        snapshot: SnapshotData::Staged(staged),
    };
    raft.install_full_snapshot(vote, snapshot)
        .await
        .map_err(|e| e.to_string())
}
