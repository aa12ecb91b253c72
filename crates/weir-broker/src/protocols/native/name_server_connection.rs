//! A connection to a name-server-only process (`weir nameserver`): frames in, answers out, in
//! order. It answers `RegisterBroker`, `GetRoute` and `GetCluster` — each a quick look-up in
//! the registry, answered where it is read — and refuses every other request with
//! `unsupported_api`, naming what a name server serves. A framing error closes the connection;
//! so does `idle_timeout` without a frame, or shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::{Decoder, Encoder};
use weir_proto::{ApiKey, ErrorCode, Frame, FrameCodec, OutFrame, pb};

use crate::error::RequestError;
use crate::protocols::native::dispatch::{api_of, decode};
use crate::protocols::native::handlers::Reply;
use crate::protocols::native::handlers::route;
use crate::routing::name_server::NameServer;

/// What every connection of a name-server process shares.
#[derive(Debug)]
pub(crate) struct NameServerContext {
    /// The registry.
    pub name_server: Arc<NameServer>,
    /// The heartbeat interval told to registering brokers, ms.
    pub heartbeat_interval_ms: u64,
    /// Largest frame accepted or sent.
    pub max_frame_len: u32,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
}

/// Serves one connection until the peer closes it, it fails or idles, or shutdown.
pub(crate) async fn serve(
    ctx: Arc<NameServerContext>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut codec = FrameCodec::new(ctx.max_frame_len);
    let mut inbound = BytesMut::new();
    let mut outbound = BytesMut::new();
    loop {
        loop {
            match codec.decode(&mut inbound) {
                Ok(Some(frame)) => {
                    if let Some(answer) = answer(&ctx, frame)
                        && let Err(e) = codec.encode(answer, &mut outbound)
                    {
                        tracing::warn!(%peer, error = %e, "answer does not fit in a frame");
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "framing error; closing the connection");
                    return;
                }
            }
        }
        if !outbound.is_empty() {
            if stream.write_all(&outbound).await.is_err() {
                return;
            }
            outbound.clear();
        }
        tokio::select! {
            read = tokio::time::timeout(ctx.idle_timeout, stream.read_buf(&mut inbound)) => match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
            },
            _ = crate::shutdown::requested(&mut shutdown) => return,
        }
    }
}

/// The answer to one frame (none to a one-way request or a stray response).
fn answer(ctx: &NameServerContext, frame: Frame) -> Option<OutFrame> {
    let header = frame.header;
    if header.is_response() || header.is_oneway() {
        return None;
    }
    let out = match handle(ctx, &frame) {
        Ok(reply) => OutFrame {
            header: header.response(ErrorCode::None),
            meta: reply.meta,
            payload: reply.payload,
        },
        Err(error) => OutFrame::new(
            header.response(error.code),
            &pb::ErrorResponse {
                message: error.message,
            },
            Bytes::new(),
        ),
    };
    Some(out)
}

fn handle(ctx: &NameServerContext, frame: &Frame) -> Result<Reply, RequestError> {
    let key = api_of(&frame.header)?;
    match key {
        ApiKey::GetRoute => route::route_of(&ctx.name_server, decode(&frame.meta)?),
        ApiKey::RegisterBroker => route::register(
            &ctx.name_server,
            ctx.heartbeat_interval_ms,
            decode(&frame.meta)?,
        ),
        ApiKey::GetCluster => Ok(route::cluster_of(&ctx.name_server)),
        other => Err(RequestError::new(
            ErrorCode::UnsupportedApi,
            format!(
                "this is a name server: it answers get_route, register_broker and get_cluster only; send {} to a broker (ask get_route which one)",
                other.name()
            ),
        )),
    }
}
