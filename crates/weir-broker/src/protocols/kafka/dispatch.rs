//! From a decoded request to its response: which handler serves each API, and the encoding of
//! the response with its header and length prefix.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, HeartbeatResponse, JoinGroupResponse, RequestKind, ResponseHeader, ResponseKind,
    SyncGroupResponse,
};
use kafka_protocol::protocol::Encodable;

use crate::metrics_catalog::REQUESTS_TOTAL;
use crate::protocols::kafka::connection::Request;
use crate::protocols::kafka::epochs::LeaderEpochs;
use crate::protocols::kafka::replicas::{self, PeerCache};
use crate::protocols::kafka::{
    Endpoint, admin, fetch, groups, metadata, offsets, produce, versions,
};
use crate::state::BrokerState;

/// What every Kafka connection shares: the broker and the address clients are told to use.
pub(crate) struct Listener {
    /// The broker.
    pub state: Arc<BrokerState>,
    /// This listener's advertised address.
    pub endpoint: Endpoint,
    /// The other replicas' Kafka addresses, in a broker group.
    pub peers: PeerCache,
    /// Where each leader epoch starts in each queue, as far as clients have asked.
    pub epochs: LeaderEpochs,
}

/// What a request gets back.
#[derive(Debug)]
pub(crate) enum Response {
    /// This response (boxed: response kinds are large and most requests move one).
    Send(Box<ResponseKind>),
    /// Nothing (a produce with acks=0).
    Nothing,
}

/// Serves one request. `body` is `None` only for an `ApiVersions` of a version we do not
/// speak.
pub(crate) async fn handle(
    listener: &Listener,
    request: &Request,
    body: Option<RequestKind>,
) -> Response {
    let state = &listener.state;
    let version = request.header.request_api_version;
    let Some(body) = body else {
        count(request.api);
        return Response::Send(Box::new(ResponseKind::ApiVersions(versions::api_versions(
            false,
        ))));
    };
    count(request.api);
    let response = match body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(versions::api_versions(true)),
        RequestKind::Metadata(r) => {
            let brokers = replicas::brokers(state, &listener.endpoint, &listener.peers).await;
            ResponseKind::Metadata(metadata::metadata(state, &brokers, r, version).await)
        }
        RequestKind::FindCoordinator(r) => {
            let brokers = replicas::brokers(state, &listener.endpoint, &listener.peers).await;
            ResponseKind::FindCoordinator(metadata::find_coordinator(&brokers, r, version))
        }
        RequestKind::Produce(r) => match produce::produce(state, r).await {
            Some(response) => ResponseKind::Produce(response),
            None => return Response::Nothing,
        },
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::fetch(state, r, &request.queued).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(state, &listener.epochs, r, version))
        }
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
            offsets::offset_for_leader_epoch(state, &listener.epochs, r),
        ),
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(admin::init_producer_id(state, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(state, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(state, r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(state, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(state, r))
        }
        // A replica that does not lead coordinates no group: the member finds the
        // coordinator again (FindCoordinator names the leader).
        RequestKind::JoinGroup(_) if not_coordinator(state) => ResponseKind::JoinGroup(
            JoinGroupResponse::default().with_error_code(ResponseError::NotCoordinator.code()),
        ),
        RequestKind::SyncGroup(_) if not_coordinator(state) => ResponseKind::SyncGroup(
            SyncGroupResponse::default().with_error_code(ResponseError::NotCoordinator.code()),
        ),
        RequestKind::Heartbeat(_) if not_coordinator(state) => ResponseKind::Heartbeat(
            HeartbeatResponse::default().with_error_code(ResponseError::NotCoordinator.code()),
        ),
        RequestKind::JoinGroup(r) => {
            let client_id = request.header.client_id.as_deref().unwrap_or("");
            let host = format!("/{}", request.peer.ip());
            ResponseKind::JoinGroup(groups::join_group(state, r, version, client_id, &host).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::sync_group(state, r, version).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(groups::heartbeat(state, r, version).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(state, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(state, r, version).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(state, r, version).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list_groups(state, r, version).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(state, r, version).await)
        }
        // `versions::supports` let through only the APIs above.
        _ => unreachable_api(request),
    };
    Response::Send(Box::new(response))
}

/// Whether this broker is a replica of a group that it does not lead now.
fn not_coordinator(state: &BrokerState) -> bool {
    state.log.check_leader().is_err()
}

/// Counts a request in `weir_requests_total{api}`.
fn count(api: ApiKey) {
    metrics::counter!(REQUESTS_TOTAL, "api" => format!("kafka_{api:?}")).increment(1);
}

/// The answer to an API `versions::supports` should have refused: an empty ApiVersions with
/// UNSUPPORTED_VERSION would be wrong for its version, so this is logged and answered with
/// the API list (the client then closes or retries).
fn unreachable_api(request: &Request) -> ResponseKind {
    tracing::error!(api = ?request.api, "kafka request of an API the dispatch does not serve");
    ResponseKind::ApiVersions(versions::api_versions(false))
}

/// Encodes `response` for `request`: length prefix, response header, body. `None` (logged)
/// when the response cannot be encoded in the request's version.
///
/// ```text
/// length:i32 | correlation id:i32 | [tagged fields, flexible versions but ApiVersions] | body
/// ```
pub(crate) fn encode(request: &Request, response: &ResponseKind) -> Option<BytesMut> {
    let version = request.header.request_api_version;
    // ApiVersions answers always use header v0 (a client may not yet know our versions).
    let (header_version, body_version) = match request.api {
        ApiKey::ApiVersions if !versions::supports(ApiKey::ApiVersions, version) => (0, 0),
        ApiKey::ApiVersions => (0, version),
        api => (api.response_header_version(version), version),
    };
    let header = ResponseHeader::default().with_correlation_id(request.header.correlation_id);
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let encoded = header
        .encode(&mut buf, header_version)
        .and_then(|()| response.encode(&mut buf, body_version));
    if let Err(e) = encoded {
        tracing::error!(api = ?request.api, version, error = %e, "kafka response does not encode");
        return None;
    }
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Some(buf)
}
