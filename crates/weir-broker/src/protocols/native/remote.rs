//! One request to another Weir process over the native protocol, on a connection of its own:
//! how a broker registers with a name server and asks one for the cluster's status, and how a
//! follower asks its leader for a producer id.

use std::time::Duration;

use bytes::BytesMut;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use weir_proto::frame::encode_frame;
use weir_proto::{ApiKey, ErrorCode, FrameCodec, Header, pb};

/// How long one call to another process may take, connecting included.
pub(crate) const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` to `addr` and decodes its answer; an error answer, a failed connection or
/// a timeout ([`REMOTE_TIMEOUT`]) becomes a message.
pub(crate) async fn call<Req, Resp>(
    addr: &str,
    api: ApiKey,
    request: &Req,
    max_frame_len: u32,
) -> Result<Resp, String>
where
    Req: Message,
    Resp: Message + Default,
{
    match tokio::time::timeout(REMOTE_TIMEOUT, call_once(addr, api, request, max_frame_len)).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {REMOTE_TIMEOUT:?}")),
    }
}

async fn call_once<Req, Resp>(
    addr: &str,
    api: ApiKey,
    request: &Req,
    max_frame_len: u32,
) -> Result<Resp, String>
where
    Req: Message,
    Resp: Message + Default,
{
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let header = Header::request(api, 1);
    let mut out = BytesMut::new();
    encode_frame(&header, request, &[], &mut out);
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut codec = FrameCodec::new(max_frame_len);
    let mut buf = BytesMut::with_capacity(256);
    let frame = loop {
        if let Some(frame) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
            break frame;
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("receive: {e}"))?
            == 0
        {
            return Err("connection closed before the answer".to_owned());
        }
    };
    let code = ErrorCode::from_u16(frame.header.error_code);
    if code != ErrorCode::None {
        let message = pb::ErrorResponse::decode(frame.meta)
            .map(|r| r.message)
            .unwrap_or_default();
        return Err(format!("{code}: {message}"));
    }
    Resp::decode(frame.meta).map_err(|e| format!("answer does not decode: {e}"))
}

/// Asks the broker at `addr` (a group's leader) for a new producer id.
pub(crate) async fn producer_id(addr: &str, max_frame_len: u32) -> Result<u64, String> {
    call::<_, pb::InitProducerIdResponse>(
        addr,
        ApiKey::InitProducerId,
        &pb::Empty {},
        max_frame_len,
    )
    .await
    .map(|answer| answer.producer_id)
}
