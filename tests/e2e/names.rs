//! Group names that could never work are refused where they enter, by the CLI and by the
//! broker itself, with a clear error, and leave nothing behind (no `%RETRY%` topic, no
//! endless redelivery loop in the log).

use bytes::Bytes;
use weir_client::connection::{Connection, ConnectionConfig};
use weir_client::{ClientError, ErrorCode};
use weir_proto::{ApiKey, pb};

use crate::harness::Node;

#[test]
fn a_group_name_that_cannot_name_its_retry_topic_is_refused() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "t", "--queues", "1"]);
    node.ok(&["produce", "t", "--body", "x"]);

    // The CLI says why and exits non-zero, for every consumer mode.
    for mode in ["clustering", "shared"] {
        let out = node.cli(&[
            "consume",
            "t",
            "--group",
            "team/a",
            "--mode",
            mode,
            "--from",
            "earliest",
            "--count",
            "1",
            "--idle-timeout",
            "2s",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode}: accepted team/a");
        assert!(stderr.contains("invalid group name"), "{mode}: {stderr}");
    }

    // The broker refuses it too, whatever client speaks to it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let conn = Connection::connect(&node.addr, ConnectionConfig::default())
            .await
            .expect("connect");
        let heartbeat = pb::GroupHeartbeatRequest {
            group: "team/a".into(),
            member_id: "m1".into(),
            topics: vec!["t".into()],
            ..Default::default()
        };
        let refused = conn
            .call::<_, pb::GroupHeartbeatResponse>(
                ApiKey::GroupHeartbeat,
                &heartbeat,
                Bytes::new(),
                None,
            )
            .await;
        assert!(
            matches!(&refused, Err(ClientError::Server { code: ErrorCode::InvalidArgument, message }) if message.contains("invalid group name")),
            "{refused:?}"
        );
        let receive = pb::ReceiveRequest {
            group: "%DLQ%x".into(),
            topic: "t".into(),
            ..Default::default()
        };
        let refused = conn
            .call::<_, pb::ReceiveResponse>(ApiKey::Receive, &receive, Bytes::new(), None)
            .await;
        assert!(
            matches!(
                &refused,
                Err(ClientError::Server {
                    code: ErrorCode::InvalidArgument,
                    ..
                })
            ),
            "{refused:?}"
        );
    });

    // Nothing was created for the refused names.
    let topics = node.ok(&["topic", "list"]);
    assert!(!topics.contains("team/a"), "{topics}");
    assert!(!node.log().contains("will retry"), "{}", node.log());
}
