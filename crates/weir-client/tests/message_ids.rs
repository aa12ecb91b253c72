//! Message ids name the broker group: a lookup by id goes to an address the routes give for
//! that group, not to the configured server.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::{Decoder, Encoder};
use weir_client::{Admin, ErrorCode, MessageId};
use weir_proto::batch::{self, BatchBuilder, BatchOptions, Compression, RecordFields, Stamp};
use weir_proto::frame::Frame;
use weir_proto::{ApiKey, FrameCodec, OutFrame, pb};

/// Serves every connection to a fresh loopback port with `answer`; returns the address.
async fn fake_server(answer: impl Fn(&Frame) -> OutFrame + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut codec = FrameCodec::default();
                let mut buf = BytesMut::new();
                loop {
                    while let Some(frame) = codec.decode(&mut buf).unwrap() {
                        let mut wire = BytesMut::new();
                        codec.encode(answer(&frame), &mut wire).unwrap();
                        socket.write_all(&wire).await.unwrap();
                    }
                    if socket.read_buf(&mut buf).await.unwrap() == 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn error(frame: &Frame, code: ErrorCode, message: &str) -> OutFrame {
    OutFrame::new(
        frame.header.response(code),
        &pb::ErrorResponse {
            message: message.into(),
        },
        Bytes::new(),
    )
}

/// One stored entry of topic `t` at `commit_log_offset`: messages "other", "found", "other".
fn stored_entry(commit_log_offset: u64) -> Bytes {
    let mut builder = BatchBuilder::new("t", BatchOptions::default()).unwrap();
    for body in ["other", "found", "other"] {
        let fields = RecordFields {
            timestamp: 1,
            key: None,
            value: Some(body.as_bytes()),
        };
        builder.push(&fields, std::iter::empty()).unwrap();
    }
    let mut entry = builder.finish(Compression::None).unwrap();
    batch::stamp(
        &mut entry,
        Stamp {
            commit_log_offset,
            ..Default::default()
        },
    );
    entry.freeze()
}

#[tokio::test]
async fn a_lookup_by_id_goes_to_the_broker_group_the_routes_name() {
    // The group's broker: holds the message.
    let lookups = Arc::new(AtomicUsize::new(0));
    let seen = lookups.clone();
    let group_b = fake_server(move |frame| match ApiKey::from_u16(frame.header.api_key) {
        Some(ApiKey::GetMessage) => {
            seen.fetch_add(1, Ordering::SeqCst);
            let header = frame.header.response(ErrorCode::None);
            OutFrame::new(header, &pb::Empty {}, stored_entry(4096))
        }
        _ => error(frame, ErrorCode::InvalidArgument, "unexpected request"),
    })
    .await;
    // The configured server: routes topic `t` to group `group-b`, and has no such message.
    let routed = group_b.clone();
    let server = fake_server(move |frame| match ApiKey::from_u16(frame.header.api_key) {
        Some(ApiKey::GetRoute) => OutFrame::new(
            frame.header.response(ErrorCode::None),
            &pb::GetRouteResponse {
                groups: vec![],
                topic: "t".into(),
                queues: vec![pb::QueueRoute {
                    queue_id: 0,
                    broker_name: "group-b".into(),
                    broker_addr: routed.clone(),
                }],
            },
            Bytes::new(),
        ),
        Some(ApiKey::GetMessage) => error(frame, ErrorCode::MessageNotFound, "not here"),
        _ => error(frame, ErrorCode::InvalidArgument, "unexpected request"),
    })
    .await;
    // The middle message of the entry.
    let id = MessageId::new(Arc::from("group-b"), 4096, 1);

    // No route names the group yet: the configured server is asked, as before.
    let admin = Admin::new([server.clone()]).unwrap();
    let e = admin.get_message(&id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::MessageNotFound), "{e}");
    assert_eq!(lookups.load(Ordering::SeqCst), 0);

    // Once a route names the group, the lookup goes to its address.
    admin.route("t").await.unwrap();
    let message = admin.get_message(&id).await.unwrap();
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
    assert_eq!(message.id.as_ref(), Some(&id));
    assert_eq!(&message.body[..], b"found");
    assert_eq!(message.commit_log_offset, 4096);
}
