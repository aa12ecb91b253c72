//! The JSON admin API under `/api/v1`: broker info, topics, groups, message lookup. Each
//! handler calls the [`ops`] function the native handler calls and shapes its answer as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use weir_proto::ErrorCode;
use weir_proto::batch::Message;

use super::HttpShared;
use super::api_error::ApiError;
use crate::ops;
use crate::ops::group::{GroupMode, ResetTarget, SharedProgress};
use crate::state::BrokerState;

/// A handler's result.
type ApiResult<T> = Result<T, ApiError>;

/// `GET /api/v1/broker`.
#[derive(Debug, Serialize)]
pub(crate) struct BrokerInfo {
    cluster: String,
    broker: String,
    version: &'static str,
    native_addr: SocketAddr,
    advertised_addr: String,
    http_addr: SocketAddr,
    /// `leader` or `follower` within its broker group (standalone: always `leader`).
    role: &'static str,
    flush: String,
    uptime_seconds: f64,
    store: StoreInfo,
    /// This replica in its broker group's Raft group.
    replica: ReplicaInfo,
}

/// A replica's Raft state, as in `GET /api/v1/broker`.
#[derive(Debug, Serialize)]
struct ReplicaInfo {
    /// 0 standalone.
    node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    role: &'static str,
    term: u64,
    leader_id: Option<u64>,
    /// The leader's native address, when known.
    leader_addr: Option<String>,
    commit_index: u64,
    last_log_index: u64,
    applied_index: u64,
    voters: Vec<u64>,
}

/// The store's positions and counters, as in `GET /api/v1/broker`.
#[derive(Debug, Serialize)]
struct StoreInfo {
    min_offset: u64,
    written_offset: u64,
    flushed_offset: u64,
    dispatched_offset: u64,
    segment_count: usize,
    segment_bytes: u64,
    disk_free_bytes: u64,
    disk_total_bytes: u64,
    disk_used_ratio: f64,
    fsyncs: u64,
    appends: u64,
    messages: u64,
}

/// A topic and its queues.
#[derive(Debug, Serialize)]
pub(crate) struct TopicJson {
    name: String,
    queue_count: u32,
    /// Messages readable in all its queues.
    messages: u64,
    /// Commit-log bytes its readable batches take.
    bytes: u64,
    /// Messages stored per second, over the last few seconds.
    rate: f64,
    queues: Vec<QueueJson>,
}

/// A queue's readable range `min_offset..max_offset` and its recent rate.
#[derive(Debug, Serialize)]
struct QueueJson {
    queue_id: u32,
    min_offset: u64,
    max_offset: u64,
    rate: f64,
}

/// `GET /api/v1/topics[?q=TEXT&offset=N&limit=N&internal=false]`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListTopics {
    /// Only topics whose name contains this.
    #[serde(default)]
    q: String,
    /// Skip this many (after filtering).
    #[serde(default)]
    offset: usize,
    /// At most this many; 0 or absent: all.
    #[serde(default)]
    limit: usize,
    /// `false`: leave out internal topics (`%DLQ%…`, `%RETRY%…`, ...).
    internal: Option<bool>,
}

/// `GET /api/v1/topics`.
#[derive(Debug, Serialize)]
pub(crate) struct TopicList {
    /// Topics matching `q`, before paging.
    total: usize,
    topics: Vec<TopicJson>,
}

/// `POST /api/v1/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTopic {
    name: String,
    /// 0 or absent: the broker's `default_queues`.
    #[serde(default)]
    queues: u32,
}

/// `GET /api/v1/groups[?q=TEXT&offset=N&limit=N]`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListGroups {
    /// Only groups whose name contains this.
    #[serde(default)]
    q: String,
    /// Skip this many (after filtering).
    #[serde(default)]
    offset: usize,
    /// At most this many, each with its summary; 0 or absent: all, without summaries.
    #[serde(default)]
    limit: usize,
}

/// `GET /api/v1/groups`.
#[derive(Debug, Serialize)]
pub(crate) struct GroupList {
    /// Groups matching `q`, before paging.
    total: usize,
    groups: Vec<String>,
    /// Each group's modes.
    modes: BTreeMap<String, Vec<&'static str>>,
    /// With `limit`: each listed group's live members and total lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    summaries: Option<Vec<GroupSummary>>,
}

/// A group in a page of the list.
#[derive(Debug, Serialize)]
struct GroupSummary {
    group: String,
    modes: Vec<&'static str>,
    /// Live members, native and Kafka.
    members: usize,
    topics: usize,
    total_lag: u64,
}

/// `GET /api/v1/groups/{group}`.
#[derive(Debug, Serialize)]
pub(crate) struct GroupJson {
    group: String,
    modes: Vec<&'static str>,
    members: Vec<MemberJson>,
    queues: Vec<GroupQueueJson>,
    total_lag: u64,
}

/// A live member of a group.
#[derive(Debug, Serialize)]
struct MemberJson {
    member_id: String,
    client_addr: String,
    mode: &'static str,
    /// `native`, or `kafka` for a member joined through the Kafka listener.
    protocol: &'static str,
    /// The client id a Kafka member gave; empty for a native member.
    client_id: String,
    assigned: Vec<QueueRefJson>,
}

/// A queue of a topic.
#[derive(Debug, Serialize)]
struct QueueRefJson {
    topic: String,
    queue_id: u32,
}

/// A group's progress on a queue.
#[derive(Debug, Serialize)]
struct GroupQueueJson {
    topic: String,
    queue_id: u32,
    mode: &'static str,
    min_offset: u64,
    max_offset: u64,
    committed_offset: Option<u64>,
    lag: u64,
    owner: Option<String>,
    /// Only for a shared group's queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<SharedJson>,
}

/// A shared group's progress on a queue.
#[derive(Debug, Serialize)]
struct SharedJson {
    low_water: u64,
    cursor: u64,
    in_flight: u64,
    acked_above: u64,
}

impl From<SharedProgress> for SharedJson {
    fn from(s: SharedProgress) -> SharedJson {
        SharedJson {
            low_water: s.low_water,
            cursor: s.cursor,
            in_flight: s.in_flight,
            acked_above: s.acked_above,
        }
    }
}

/// `POST /api/v1/groups/{group}/reset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetGroup {
    topic: String,
    /// `earliest`, `latest`, or an RFC 3339 time.
    to: String,
}

/// The answer to a reset: the new offset of each queue.
#[derive(Debug, Serialize)]
pub(crate) struct ResetResult {
    group: String,
    topic: String,
    offsets: Vec<QueueOffsetJson>,
}

/// A queue's offset.
#[derive(Debug, Serialize)]
struct QueueOffsetJson {
    queue_id: u32,
    offset: u64,
}

/// `GET /api/v1/messages?topic=T&key=K[&max=N]` or `?topic=T&time=RFC3339[&max=N]`.
#[derive(Debug, Deserialize)]
pub(crate) struct FindMessages {
    topic: Option<String>,
    key: Option<String>,
    /// Messages stored at or after this RFC 3339 time.
    time: Option<String>,
    #[serde(default)]
    max: u32,
}

/// Messages found by key.
#[derive(Debug, Serialize)]
pub(crate) struct MessageList {
    messages: Vec<MessageJson>,
}

/// A stored message. `body` holds the body when it is UTF-8 text, `body_hex` otherwise.
#[derive(Debug, Serialize)]
pub(crate) struct MessageJson {
    id: String,
    topic: String,
    queue_id: u32,
    queue_offset: u64,
    commit_log_offset: u64,
    store_timestamp_ms: i64,
    born_timestamp_ms: i64,
    deliver_at_ms: i64,
    key: String,
    tag: String,
    properties: serde_json::Map<String, serde_json::Value>,
    body_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_hex: Option<String>,
}

/// A JSON body, or `malformed_request`.
fn body<T>(json: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    json.map(|Json(t)| t)
        .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))
}

fn topic_json(shared: &HttpShared, state: &BrokerState, name: &str, queues: u32) -> TopicJson {
    let queues: Vec<QueueJson> = ops::topic::queue_states(state, name, queues)
        .into_iter()
        .map(|q| QueueJson {
            queue_id: q.queue_id,
            min_offset: q.offsets.min,
            max_offset: q.offsets.max,
            rate: shared.history.queue_rate(name, q.queue_id),
        })
        .collect();
    TopicJson {
        name: name.to_owned(),
        queue_count: queues.len() as u32,
        messages: queues.iter().map(|q| q.max_offset - q.min_offset).sum(),
        bytes: state.log.topic_bytes(name),
        rate: queues.iter().map(|q| q.rate).sum(),
        queues,
    }
}

/// Broker name, addresses, version, uptime and store statistics.
pub(crate) async fn broker(State(shared): State<Arc<HttpShared>>) -> ApiResult<Json<BrokerInfo>> {
    let state = shared.broker()?;
    let stats = state.log.stats();
    Ok(Json(BrokerInfo {
        cluster: state.config.cluster_name.clone(),
        broker: state.identity.broker_name.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        native_addr: state.identity.local_addr,
        advertised_addr: state.identity.advertised_addr.clone(),
        http_addr: shared.local_addr,
        role: if state.role.is_leader() {
            "leader"
        } else {
            "follower"
        },
        flush: state.config.flush.clone(),
        uptime_seconds: shared.uptime_seconds(),
        store: StoreInfo {
            min_offset: stats.min_offset,
            written_offset: stats.written_offset,
            flushed_offset: stats.flushed_offset,
            dispatched_offset: stats.dispatched_offset,
            segment_count: stats.segment_count,
            segment_bytes: stats.segment_bytes,
            disk_free_bytes: stats.disk_free,
            disk_total_bytes: stats.disk_total,
            disk_used_ratio: stats.disk_used_ratio,
            fsyncs: stats.fsyncs,
            appends: stats.appends,
            messages: stats.messages,
        },
        replica: {
            let r = state.replica.borrow();
            ReplicaInfo {
                node_id: r.node_id,
                role: r.role.name(),
                term: r.term,
                leader_id: r.leader_id,
                leader_addr: r.leader_addr.clone(),
                commit_index: r.commit_index,
                last_log_index: r.last_log_index,
                applied_index: r.applied_index,
                voters: r.voters.clone(),
            }
        },
    }))
}

/// Every topic (or those whose name contains `q`, a page of them) with its queues.
pub(crate) async fn list_topics(
    State(shared): State<Arc<HttpShared>>,
    query: Result<Query<ListTopics>, QueryRejection>,
) -> ApiResult<Json<TopicList>> {
    let state = shared.broker()?;
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let matching: Vec<_> = state
        .topics
        .list()
        .into_iter()
        .filter(|(name, _)| name.contains(&query.q))
        .filter(|(name, _)| query.internal != Some(false) || !weir_proto::names::is_internal(name))
        .collect();
    let limit = match query.limit {
        0 => usize::MAX,
        n => n,
    };
    let topics = matching
        .iter()
        .skip(query.offset)
        .take(limit)
        .map(|(name, config)| topic_json(&shared, state, name, config.queues))
        .collect();
    Ok(Json(TopicList {
        total: matching.len(),
        topics,
    }))
}

/// Creates a topic: 201, 409 when it exists, 400 for a bad name or queue count.
pub(crate) async fn create_topic(
    State(shared): State<Arc<HttpShared>>,
    request: Result<Json<CreateTopic>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TopicJson>)> {
    let state = shared.broker()?;
    let request = body(request)?;
    let config = ops::topic::create(state, &request.name, request.queues).await?;
    Ok((
        StatusCode::CREATED,
        Json(topic_json(&shared, state, &request.name, config.queues)),
    ))
}

/// One topic, or 404.
pub(crate) async fn describe_topic(
    State(shared): State<Arc<HttpShared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<TopicJson>> {
    let state = shared.broker()?;
    let queues = state.topics.queues(&name)?;
    Ok(Json(topic_json(&shared, state, &name, queues)))
}

/// Deletes a topic: 204, or 404.
pub(crate) async fn delete_topic(
    State(shared): State<Arc<HttpShared>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let state = shared.broker()?;
    ops::topic::delete(state, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Groups with live members (native or Kafka), committed offsets or shared-group state, with
/// their modes (or those whose name contains `q`, a page of them with their summaries).
pub(crate) async fn list_groups(
    State(shared): State<Arc<HttpShared>>,
    query: Result<Query<ListGroups>, QueryRejection>,
) -> ApiResult<Json<GroupList>> {
    let state = shared.broker()?.clone();
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    // Describing a page of groups reads their offsets: off the async workers.
    let list = tokio::task::spawn_blocking(move || group_list(&state, &query))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("group listing failed: {e}")))?;
    Ok(Json(list))
}

fn group_list(state: &BrokerState, query: &ListGroups) -> GroupList {
    let matching: Vec<_> = ops::group::list(state)
        .into_iter()
        .filter(|l| l.group.contains(&query.q))
        .collect();
    let total = matching.len();
    let limit = match query.limit {
        0 => usize::MAX,
        n => n,
    };
    let page: Vec<_> = matching
        .into_iter()
        .skip(query.offset)
        .take(limit)
        .collect();
    let summaries = (query.limit > 0).then(|| {
        page.iter()
            .map(|l| {
                let d = ops::group::describe(state, &l.group).ok();
                GroupSummary {
                    group: l.group.clone(),
                    modes: l.modes.iter().map(|m| m.name()).collect(),
                    members: d
                        .as_ref()
                        .map_or(0, |d| d.members.len() + d.kafka_members.len()),
                    topics: d.as_ref().map_or(0, |d| {
                        d.queues
                            .iter()
                            .map(|q| q.topic.as_str())
                            .collect::<std::collections::BTreeSet<_>>()
                            .len()
                    }),
                    total_lag: d.map_or(0, |d| d.queues.iter().map(|q| q.lag).sum()),
                }
            })
            .collect()
    });
    GroupList {
        total,
        groups: page.iter().map(|l| l.group.clone()).collect(),
        modes: page
            .into_iter()
            .map(|l| (l.group, l.modes.into_iter().map(GroupMode::name).collect()))
            .collect(),
        summaries,
    }
}

/// A group's modes, members and per-queue offsets and lag (and a shared group's progress), or
/// 404.
pub(crate) async fn describe_group(
    State(shared): State<Arc<HttpShared>>,
    Path(group): Path<String>,
) -> ApiResult<Json<GroupJson>> {
    let state = shared.broker()?;
    let description = ops::group::describe(state, &group)?;
    let queue_refs = |assigned: Vec<(String, u32)>| {
        assigned
            .into_iter()
            .map(|(topic, queue_id)| QueueRefJson { topic, queue_id })
            .collect()
    };
    let kafka = description.kafka_members.into_iter().map(|m| MemberJson {
        member_id: m.member_id,
        client_addr: m.client_host,
        mode: GroupMode::Clustering.name(),
        protocol: "kafka",
        client_id: m.client_id,
        assigned: queue_refs(m.assigned),
    });
    let members = description
        .members
        .into_iter()
        .map(|m| MemberJson {
            member_id: m.member_id,
            client_addr: m.client_addr,
            mode: GroupMode::from(m.mode).name(),
            protocol: "native",
            client_id: String::new(),
            assigned: queue_refs(m.assigned),
        })
        .chain(kafka)
        .collect();
    let total_lag = description.queues.iter().map(|q| q.lag).sum();
    let queues = description
        .queues
        .into_iter()
        .map(|q| GroupQueueJson {
            topic: q.topic,
            queue_id: q.queue_id,
            mode: q.mode.name(),
            min_offset: q.offsets.min,
            max_offset: q.offsets.max,
            committed_offset: q.committed,
            lag: q.lag,
            owner: Some(q.owner).filter(|o| !o.is_empty()),
            shared: q.shared.map(SharedJson::from),
        })
        .collect();
    Ok(Json(GroupJson {
        group,
        modes: description.modes.iter().map(|m| m.name()).collect(),
        members,
        queues,
        total_lag,
    }))
}

/// Where `to` points: `earliest`, `latest` or an RFC 3339 time.
fn reset_target(to: &str) -> ApiResult<ResetTarget> {
    match to {
        "earliest" => Ok(ResetTarget::Earliest),
        "latest" => Ok(ResetTarget::Latest),
        time => rfc3339_ms(time, "\"to\" must be \"earliest\", \"latest\" or")
            .map(ResetTarget::Timestamp),
    }
}

/// An RFC 3339 time as ms since the Unix epoch; `what` starts the error message.
fn rfc3339_ms(time: &str, what: &str) -> ApiResult<i64> {
    let at = OffsetDateTime::parse(time, &Rfc3339).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("{what} an RFC 3339 time, not {time:?}: {e}"),
        )
    })?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("{time:?} is out of range"),
        )
    })
}

/// Resets a group's offsets on a topic; 400 while the group has live members.
pub(crate) async fn reset_group(
    State(shared): State<Arc<HttpShared>>,
    Path(group): Path<String>,
    request: Result<Json<ResetGroup>, JsonRejection>,
) -> ApiResult<Json<ResetResult>> {
    let state = shared.broker()?;
    let request = body(request)?;
    let to = reset_target(&request.to)?;
    let offsets = ops::group::reset(state, &group, &request.topic, to)?
        .into_iter()
        .map(|(queue_id, offset)| QueueOffsetJson { queue_id, offset })
        .collect();
    Ok(Json(ResetResult {
        group,
        topic: request.topic,
        offsets,
    }))
}

/// A stored message for the API.
pub(super) fn message_json(state: &BrokerState, message: Message) -> ApiResult<MessageJson> {
    let id = state
        .identity
        .message_id(message.commit_log_offset, message.index);
    let body = message.body_bytes();
    let (text, body_hex) = match std::str::from_utf8(&body) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(hex::encode(&body))),
    };
    let property = |v: &Option<Bytes>| match v.as_deref().map(std::str::from_utf8) {
        None => serde_json::Value::Null,
        Some(Ok(text)) => serde_json::Value::String(text.to_owned()),
        Some(Err(_)) => serde_json::json!({ "hex": hex::encode(v.as_deref().unwrap_or_default()) }),
    };
    Ok(MessageJson {
        id: id.to_string(),
        body_size: body.len(),
        deliver_at_ms: message.deliver_at(),
        key: message.key_str().to_owned(),
        tag: message.tag().to_owned(),
        properties: message
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), property(v)))
            .collect(),
        topic: message.topic,
        queue_id: message.queue_id,
        queue_offset: message.queue_offset,
        commit_log_offset: message.commit_log_offset,
        store_timestamp_ms: message.store_timestamp,
        born_timestamp_ms: message.born_timestamp,
        body: text,
        body_hex,
    })
}

/// A message by id: 404 when there is none, 400 for a malformed id.
pub(crate) async fn get_message(
    State(shared): State<Arc<HttpShared>>,
    Path(id): Path<String>,
) -> ApiResult<Json<MessageJson>> {
    let state = shared.broker()?;
    let message = ops::lookup::get_message(state, &id)?.message()?;
    Ok(Json(message_json(state, message)?))
}

/// Messages of a topic by key, oldest first (404 when there are none), or from a time on.
pub(crate) async fn find_messages(
    State(shared): State<Arc<HttpShared>>,
    query: Result<Query<FindMessages>, QueryRejection>,
) -> ApiResult<Json<MessageList>> {
    let state = shared.broker()?;
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let records = match (query.topic, query.key, query.time) {
        (Some(topic), Some(key), None) => {
            let entries = ops::lookup::find_by_key(state, &topic, &key, query.max)?;
            ops::lookup::with_key(&entries, &key)?
        }
        (Some(topic), None, Some(time)) => {
            let ms = rfc3339_ms(&time, "\"time\" must be")?;
            let max = match query.max {
                0 => ops::lookup::DEFAULT_FIND_MAX,
                n => n,
            };
            ops::browse::by_time(state, &topic, ms, max)?
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "say which messages: ?topic=T&key=K or ?topic=T&time=RFC3339",
            ));
        }
    };
    let messages = records
        .into_iter()
        .map(|message| message_json(state, message))
        .collect::<ApiResult<_>>()?;
    Ok(Json(MessageList { messages }))
}

/// Any other path: 404 with the error JSON.
pub(crate) async fn no_such_endpoint() -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedApi,
        "no such endpoint; see docs/http-api.md",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets() {
        assert_eq!(reset_target("earliest"), Ok(ResetTarget::Earliest));
        assert_eq!(reset_target("latest"), Ok(ResetTarget::Latest));
        assert_eq!(
            reset_target("2024-05-01T12:00:00.250Z"),
            Ok(ResetTarget::Timestamp(1_714_564_800_250))
        );
        assert_eq!(
            reset_target("yesterday").map_err(|e| e.code),
            Err(ErrorCode::InvalidArgument)
        );
    }
}
