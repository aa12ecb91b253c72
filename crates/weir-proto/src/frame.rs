//! Frames of the native protocol: length-prefixed, a fixed header, a protobuf body ("meta") and
//! an optional raw payload of message records.
//!
//! All integers are big-endian (network order).
//!
//! ```text
//! offset  size  field
//!  0      4     frame_len u32    bytes after this field: 16 + meta_len + payload length
//!  4      2     api_key u16      which request (see [`ApiKey`]); echoed in the response
//!  6      2     api_version u16  version of the request's body; echoed in the response
//!  8      4     request_id u32   chosen by the client; the response carries the same id
//! 12      2     flags u16        bit 0: response; bit 1: one-way (no response wanted)
//! 14      2     error_code u16   responses only: 0 = ok, else an [`ErrorCode`], meta = ErrorResponse
//! 16      4     meta_len u32     bytes of the protobuf body that follows
//! 20      m     meta             protobuf message (proto/weir.proto) for this api key
//! 20+m    p     payload          raw message records, or nothing
//! ```
//!
//! Many requests may be in flight on one connection; responses may come in any order and are
//! matched by `request_id`. [`FrameCodec`] checks `frame_len` against its limit *before*
//! reserving memory for the frame, so a hostile length prefix cannot make a peer allocate, and
//! it grows its buffer at most [`RESERVE_AHEAD`] bytes ahead of the bytes that arrived, so a
//! peer that announces a large frame and stalls holds only what it sent.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

use crate::error_code::ErrorCode;

/// Bytes of the fixed header, the length prefix included.
pub const HEADER_LEN: usize = 20;
/// Bytes of the header after the length prefix; the smallest legal `frame_len`.
pub const MIN_FRAME_LEN: u32 = 16;
/// The most [`FrameCodec`] reserves beyond the bytes received while a frame is incomplete.
pub const RESERVE_AHEAD: usize = 64 * 1024;
/// Default limit on `frame_len` (the configurable `max_frame_size`): 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Bits of the header's `flags` field.
pub mod flags {
    /// The frame is a response.
    pub const RESPONSE: u16 = 1 << 0;
    /// The sender wants no response (one-way send).
    pub const ONEWAY: u16 = 1 << 1;
}

/// The requests of the native protocol, by their stable api key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    /// Append a batch of records to one queue.
    Produce = 1,
    /// Read records from one queue, long-polling when there are none.
    Pull = 2,
    /// Ask the name server which broker serves each of a topic's queues.
    GetRoute = 3,
    /// A broker registers its topics with a name server (and heartbeats).
    RegisterBroker = 4,
    /// Create a topic.
    CreateTopic = 5,
    /// Delete a topic.
    DeleteTopic = 6,
    /// List topics.
    ListTopics = 7,
    /// Describe one topic's queues and offsets.
    DescribeTopic = 8,
    /// Grow a topic's queue count.
    AddQueues = 9,
    /// A consumer group member heartbeats and learns its queues.
    GroupHeartbeat = 10,
    /// A consumer group member leaves.
    LeaveGroup = 11,
    /// Commit a group's offsets.
    CommitOffsets = 12,
    /// Fetch a group's offset for one queue.
    FetchOffset = 13,
    /// List consumer groups.
    ListGroups = 14,
    /// Describe a group: members, offsets, lag.
    DescribeGroup = 15,
    /// Reset a group's offsets on a topic.
    ResetOffsets = 16,
    /// Read one message by id.
    GetMessage = 17,
    /// Find messages by key.
    FindByKey = 18,
    /// Find the first queue offset stored at or after a time.
    OffsetForTime = 19,
    /// Hand a failed message back for retry (or the dead-letter topic).
    SendBack = 20,
    /// Shared group: take visible messages of a topic, hidden until acked or timed out.
    Receive = 30,
    /// Shared group: acknowledge deliveries by receipt.
    Ack = 31,
    /// Shared group: give deliveries back for a later retry by receipt.
    Nack = 32,
    /// Shared group: change how long a delivery stays hidden.
    ChangeInvisibility = 33,
    /// Copy a message to its group's dead-letter topic `%DLQ%<group>`.
    DeadLetter = 34,
    /// Commit or roll back a transaction's half message.
    EndTransaction = 40,
    /// A transactional producer tells the broker its group, so it can be checked back.
    RegisterProducer = 41,
    /// Broker to client (one-way): asks a producer group member for a transaction's state.
    CheckTransaction = 42,
    /// An idempotent producer asks for its producer id.
    InitProducerId = 43,
    /// Ask a name server for every broker group and replica it knows (cluster status).
    GetCluster = 50,
    /// Add a replica to a broker group or remove one (sent to the group's leader).
    ChangeReplicas = 51,
}

impl ApiKey {
    /// Every api key, in number order.
    pub const ALL: [ApiKey; 31] = [
        ApiKey::Produce,
        ApiKey::Pull,
        ApiKey::GetRoute,
        ApiKey::RegisterBroker,
        ApiKey::CreateTopic,
        ApiKey::DeleteTopic,
        ApiKey::ListTopics,
        ApiKey::DescribeTopic,
        ApiKey::AddQueues,
        ApiKey::GroupHeartbeat,
        ApiKey::LeaveGroup,
        ApiKey::CommitOffsets,
        ApiKey::FetchOffset,
        ApiKey::ListGroups,
        ApiKey::DescribeGroup,
        ApiKey::ResetOffsets,
        ApiKey::GetMessage,
        ApiKey::FindByKey,
        ApiKey::OffsetForTime,
        ApiKey::SendBack,
        ApiKey::Receive,
        ApiKey::Ack,
        ApiKey::Nack,
        ApiKey::ChangeInvisibility,
        ApiKey::DeadLetter,
        ApiKey::EndTransaction,
        ApiKey::RegisterProducer,
        ApiKey::CheckTransaction,
        ApiKey::InitProducerId,
        ApiKey::GetCluster,
        ApiKey::ChangeReplicas,
    ];

    /// The api key for a number, if it is one.
    pub fn from_u16(value: u16) -> Option<ApiKey> {
        ApiKey::ALL.into_iter().find(|k| *k as u16 == value)
    }

    /// A short lowercase name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            ApiKey::Produce => "produce",
            ApiKey::Pull => "pull",
            ApiKey::GetRoute => "get_route",
            ApiKey::RegisterBroker => "register_broker",
            ApiKey::CreateTopic => "create_topic",
            ApiKey::DeleteTopic => "delete_topic",
            ApiKey::ListTopics => "list_topics",
            ApiKey::DescribeTopic => "describe_topic",
            ApiKey::AddQueues => "add_queues",
            ApiKey::GroupHeartbeat => "group_heartbeat",
            ApiKey::LeaveGroup => "leave_group",
            ApiKey::CommitOffsets => "commit_offsets",
            ApiKey::FetchOffset => "fetch_offset",
            ApiKey::ListGroups => "list_groups",
            ApiKey::DescribeGroup => "describe_group",
            ApiKey::ResetOffsets => "reset_offsets",
            ApiKey::GetMessage => "get_message",
            ApiKey::FindByKey => "find_by_key",
            ApiKey::OffsetForTime => "offset_for_time",
            ApiKey::SendBack => "send_back",
            ApiKey::Receive => "receive",
            ApiKey::Ack => "ack",
            ApiKey::Nack => "nack",
            ApiKey::ChangeInvisibility => "change_invisibility",
            ApiKey::DeadLetter => "dead_letter",
            ApiKey::EndTransaction => "end_transaction",
            ApiKey::RegisterProducer => "register_producer",
            ApiKey::CheckTransaction => "check_transaction",
            ApiKey::InitProducerId => "init_producer_id",
            ApiKey::GetCluster => "get_cluster",
            ApiKey::ChangeReplicas => "change_replicas",
        }
    }
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Raw api key (see [`ApiKey`]); kept raw so an unknown key can still be answered.
    pub api_key: u16,
    /// Version of the body's schema.
    pub api_version: u16,
    /// Matches a response to its request.
    pub request_id: u32,
    /// See [`flags`].
    pub flags: u16,
    /// 0 for success; otherwise an [`ErrorCode`].
    pub error_code: u16,
}

impl Header {
    /// A request header.
    pub fn request(api_key: ApiKey, request_id: u32) -> Header {
        Header {
            api_key: api_key as u16,
            request_id,
            ..Header::default()
        }
    }

    /// The header of the response to this request, with `error`.
    pub fn response(&self, error: ErrorCode) -> Header {
        Header {
            flags: flags::RESPONSE,
            error_code: error as u16,
            ..*self
        }
    }

    /// Whether this frame is a response.
    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }

    /// Whether the sender wants no response.
    pub fn is_oneway(&self) -> bool {
        self.flags & flags::ONEWAY != 0
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The fixed header.
    pub header: Header,
    /// The protobuf body.
    pub meta: Bytes,
    /// Raw records; mutable so the broker can stamp them in place before appending.
    pub payload: BytesMut,
}

/// Why a byte stream is not a valid sequence of frames. Either way the connection is unusable.
#[derive(Debug, Error)]
pub enum FrameError {
    /// `frame_len` is above the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// `frame_len` or `meta_len` cannot be right.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The connection failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one frame into `dst`.
pub fn encode_frame(
    header: &Header,
    meta: &impl prost::Message,
    payload: &[u8],
    dst: &mut BytesMut,
) {
    let meta_len = meta.encoded_len();
    let frame_len = MIN_FRAME_LEN as usize + meta_len + payload.len();
    dst.reserve(4 + frame_len);
    dst.put_u32(frame_len as u32);
    dst.put_u16(header.api_key);
    dst.put_u16(header.api_version);
    dst.put_u32(header.request_id);
    dst.put_u16(header.flags);
    dst.put_u16(header.error_code);
    dst.put_u32(meta_len as u32);
    // Encoding into a BytesMut with enough room reserved cannot fail.
    let _ = meta.encode(dst);
    dst.put_slice(payload);
}

/// Splits a byte stream into [`Frame`]s, refusing frames above `max_frame_len`.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_len: u32,
}

impl FrameCodec {
    /// A codec accepting frames up to `max_frame_len` bytes (the length prefix excluded).
    pub fn new(max_frame_len: u32) -> FrameCodec {
        FrameCodec { max_frame_len }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let frame_len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if frame_len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len: frame_len,
                max: self.max_frame_len,
            });
        }
        if frame_len < MIN_FRAME_LEN {
            return Err(FrameError::Malformed("frame_len below the header size"));
        }
        let total = 4 + frame_len as usize;
        if src.len() < total {
            // Room for what is coming, but never more than a step ahead of the bytes that
            // arrived: a peer that announces a large frame and stalls holds no more memory
            // than it sent.
            src.reserve((total - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        let mut frame = src.split_to(total);
        frame.advance(4);
        let header = Header {
            api_key: frame.get_u16(),
            api_version: frame.get_u16(),
            request_id: frame.get_u32(),
            flags: frame.get_u16(),
            error_code: frame.get_u16(),
        };
        let meta_len = frame.get_u32() as usize;
        if meta_len > frame.len() {
            return Err(FrameError::Malformed("meta_len past the end of the frame"));
        }
        let meta = frame.split_to(meta_len).freeze();
        Ok(Some(Frame {
            header,
            meta,
            payload: frame,
        }))
    }
}

/// A frame to send: a header, an encoded protobuf body and a payload.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// The fixed header.
    pub header: Header,
    /// The encoded protobuf body.
    pub meta: Bytes,
    /// Raw records, or empty.
    pub payload: Bytes,
}

impl OutFrame {
    /// A frame with `meta` encoded now.
    pub fn new(header: Header, meta: &impl prost::Message, payload: Bytes) -> OutFrame {
        OutFrame {
            header,
            meta: meta.encode_to_vec().into(),
            payload,
        }
    }
}

impl FrameCodec {
    /// Writes `item` but its payload (the length prefix, the header and the meta), for a
    /// writer that sends the payload from its own buffer (a vectored write) instead of copying
    /// it. The frame's length counts the payload; `dst` must be followed on the wire by
    /// exactly `item.payload`.
    pub fn encode_head(&self, item: &OutFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let frame_len = MIN_FRAME_LEN as usize + item.meta.len() + item.payload.len();
        if frame_len > self.max_frame_len as usize {
            return Err(FrameError::TooLarge {
                len: u32::try_from(frame_len).unwrap_or(u32::MAX),
                max: self.max_frame_len,
            });
        }
        dst.reserve(4 + frame_len - item.payload.len());
        dst.put_u32(frame_len as u32);
        dst.put_u16(item.header.api_key);
        dst.put_u16(item.header.api_version);
        dst.put_u32(item.header.request_id);
        dst.put_u16(item.header.flags);
        dst.put_u16(item.header.error_code);
        dst.put_u32(item.meta.len() as u32);
        dst.put_slice(&item.meta);
        Ok(())
    }
}

impl Encoder<OutFrame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: OutFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_head(&item, dst)?;
        dst.extend_from_slice(&item.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(api in 1u16..20, ver in any::<u16>(), id in any::<u32>(), fl in any::<u16>(),
                      code in any::<u16>(), topic in "[a-z]{0,20}", payload in proptest::collection::vec(any::<u8>(), 0..500),
                      split in any::<prop::sample::Index>()) {
            let header = Header { api_key: api, api_version: ver, request_id: id, flags: fl, error_code: code };
            let meta = pb::ProduceRequest { topic: topic.clone(), queue_id: 3 };
            let mut wire = BytesMut::new();
            encode_frame(&header, &meta, &payload, &mut wire);
            let mut codec = FrameCodec::default();
            // Feed the bytes in two pieces: the first never yields a frame.
            let cut = split.index(wire.len());
            let mut buf = BytesMut::from(&wire[..cut]);
            prop_assert!(codec.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(&wire[cut..]);
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            prop_assert!(buf.is_empty());
            prop_assert_eq!(frame.header, header);
            let decoded = <pb::ProduceRequest as prost::Message>::decode(frame.meta).unwrap();
            prop_assert_eq!(decoded, meta);
            prop_assert_eq!(&frame.payload[..], &payload[..]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut codec = FrameCodec::new(1024);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }

    #[test]
    fn hostile_length_is_refused_before_allocating() {
        let mut codec = FrameCodec::new(1 << 20);
        let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF, 0, 1][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: u32::MAX, .. }));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn meta_past_the_end_is_malformed() {
        let mut buf = BytesMut::new();
        encode_frame(&Header::default(), &pb::Empty {}, &[], &mut buf);
        buf[16..20].copy_from_slice(&100u32.to_be_bytes());
        let err = FrameCodec::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)));
    }

    #[test]
    fn out_frame_encoder_matches_encode_frame() {
        let header = Header::request(ApiKey::Pull, 9);
        let meta = pb::PullRequest {
            topic: "t".into(),
            ..Default::default()
        };
        let mut a = BytesMut::new();
        encode_frame(&header, &meta, b"xyz", &mut a);
        let mut b = BytesMut::new();
        FrameCodec::default()
            .encode(
                OutFrame::new(header, &meta, Bytes::from_static(b"xyz")),
                &mut b,
            )
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn api_keys_round_trip() {
        for key in ApiKey::ALL {
            assert_eq!(ApiKey::from_u16(key as u16), Some(key));
        }
        assert_eq!(ApiKey::from_u16(0), None);
        assert_eq!(ApiKey::from_u16(999), None);
    }
}
