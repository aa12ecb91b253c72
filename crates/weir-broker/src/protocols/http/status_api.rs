//! Admin API endpoints that describe the broker's state for the dashboard (and for scripts):
//! the overview counts, the recent traffic history, a group's lag history, a topic's groups,
//! the delayed messages and the transactions awaiting a decision; and adding queues to a
//! topic. Documented in `docs/http-api.md`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use weir_proto::ErrorCode;

use super::HttpShared;
use super::api_error::ApiError;
use super::history::{TRAFFIC_SAMPLES, TrafficSample};
use crate::ops;
use crate::state::BrokerState;

/// A handler's result.
type ApiResult<T> = Result<T, ApiError>;

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<HttpShared>> {
    Router::new()
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/history", get(history))
        .route("/api/v1/groups/{group}/lag-history", get(lag_history))
        .route("/api/v1/topics/{name}/groups", get(topic_groups))
        .route("/api/v1/topics/{name}/queues", post(add_queues))
        .route("/api/v1/delayed", get(delayed))
        .route("/api/v1/transactions", get(transactions))
}

/// `GET /api/v1/overview`.
#[derive(Debug, Serialize)]
struct Overview {
    broker: String,
    cluster: String,
    version: &'static str,
    /// `standalone` (its own name server) or `broker` (registered with `name_servers`).
    role: &'static str,
    /// This replica's Raft node id in its broker group; 0 standalone.
    node_id: u64,
    name_servers: Vec<String>,
    uptime_seconds: f64,
    disk_total_bytes: u64,
    disk_free_bytes: u64,
    disk_used_bytes: u64,
    commit_log_bytes: u64,
    topics: usize,
    queues: u64,
    messages: u64,
    groups: usize,
    delayed: usize,
    transactions: usize,
    dead_letters: u64,
}

async fn overview(State(shared): State<Arc<HttpShared>>) -> ApiResult<Json<Overview>> {
    let state = shared.broker()?.clone();
    let stats = state.log.stats();
    // Walks every topic and group: off the async workers.
    let counts = tokio::task::spawn_blocking(move || ops::overview::counts(&state))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("overview task failed: {e}")))?;
    let state = shared.broker()?;
    Ok(Json(Overview {
        broker: state.config.broker_name.clone(),
        cluster: state.config.cluster_name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        role: if state.config.name_servers.is_empty() {
            "standalone"
        } else {
            "broker"
        },
        node_id: state.replica.borrow().node_id,
        name_servers: state.config.name_servers.clone(),
        uptime_seconds: shared.uptime_seconds(),
        disk_total_bytes: stats.disk_total,
        disk_free_bytes: stats.disk_free,
        disk_used_bytes: stats.disk_total.saturating_sub(stats.disk_free),
        commit_log_bytes: stats.written_offset - stats.min_offset,
        topics: counts.topics,
        queues: counts.queues,
        messages: counts.messages,
        groups: counts.groups,
        delayed: counts.delayed,
        transactions: counts.transactions,
        dead_letters: counts.dead_letters,
    }))
}

/// `?seconds=N`: how far back (default 300, at most 3600).
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    #[serde(default)]
    seconds: usize,
}

/// `GET /api/v1/history`.
#[derive(Debug, Serialize)]
struct HistoryJson {
    interval_ms: u64,
    samples: Vec<TrafficSample>,
}

async fn history(
    State(shared): State<Arc<HttpShared>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<HistoryJson>> {
    shared.broker()?;
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let seconds = match query.seconds {
        0 => 300,
        n => n.min(TRAFFIC_SAMPLES),
    };
    Ok(Json(HistoryJson {
        interval_ms: 1000,
        samples: shared.history.traffic(seconds),
    }))
}

/// `GET /api/v1/groups/{group}/lag-history`.
#[derive(Debug, Serialize)]
struct LagHistory {
    group: String,
    interval_ms: u64,
    samples: Vec<LagSample>,
}

/// A group's total lag at a time.
#[derive(Debug, Serialize)]
struct LagSample {
    at_ms: i64,
    lag: u64,
}

async fn lag_history(
    State(shared): State<Arc<HttpShared>>,
    Path(group): Path<String>,
) -> ApiResult<Json<LagHistory>> {
    shared.broker()?;
    let samples = shared
        .history
        .lag(&group)
        .into_iter()
        .map(|(at_ms, lag)| LagSample { at_ms, lag })
        .collect();
    Ok(Json(LagHistory {
        group,
        interval_ms: 10_000,
        samples,
    }))
}

/// `GET /api/v1/topics/{name}/groups`.
#[derive(Debug, Serialize)]
struct TopicGroups {
    topic: String,
    groups: Vec<TopicGroup>,
}

/// A group reading a topic.
#[derive(Debug, Serialize)]
struct TopicGroup {
    group: String,
    modes: Vec<&'static str>,
    lag: u64,
    members: usize,
}

async fn topic_groups(
    State(shared): State<Arc<HttpShared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<TopicGroups>> {
    let state = shared.broker()?.clone();
    state.topics.queues(&name)?;
    let topic = name.clone();
    let groups = tokio::task::spawn_blocking(move || {
        ops::group::list(&state)
            .into_iter()
            .filter_map(|listing| {
                let d = ops::group::describe(&state, &listing.group).ok()?;
                let queues: Vec<_> = d.queues.iter().filter(|q| q.topic == topic).collect();
                (!queues.is_empty()).then(|| TopicGroup {
                    group: listing.group,
                    modes: d.modes.iter().map(|m| m.name()).collect(),
                    lag: queues.iter().map(|q| q.lag).sum(),
                    members: d.members.len() + d.kafka_members.len(),
                })
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("group listing failed: {e}")))?;
    Ok(Json(TopicGroups {
        topic: name,
        groups,
    }))
}

/// `POST /api/v1/topics/{name}/queues`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddQueues {
    /// The new total number of queues.
    queues: u32,
}

/// The answer to adding queues.
#[derive(Debug, Serialize)]
struct QueueCount {
    topic: String,
    queue_count: u32,
}

async fn add_queues(
    State(shared): State<Arc<HttpShared>>,
    Path(name): Path<String>,
    request: Result<Json<AddQueues>, JsonRejection>,
) -> ApiResult<Json<QueueCount>> {
    let state = shared.broker()?;
    let Json(request) =
        request.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let config = ops::topic::add_queues(state, &name, request.queues).await?;
    Ok(Json(QueueCount {
        topic: name,
        queue_count: config.queues,
    }))
}

/// `?max=N`: how many to list (default 100, at most 1000).
#[derive(Debug, Deserialize)]
struct MaxQuery {
    #[serde(default)]
    max: usize,
}

impl MaxQuery {
    fn max(&self) -> usize {
        match self.max {
            0 => 100,
            n => n.min(1000),
        }
    }
}

/// `GET /api/v1/delayed`.
#[derive(Debug, Serialize)]
struct DelayedJson {
    pending: usize,
    /// The listing read only part of `%DELAY%`.
    truncated: bool,
    messages: Vec<DelayedMessage>,
}

/// A delayed message waiting.
#[derive(Debug, Serialize)]
struct DelayedMessage {
    id: String,
    topic: String,
    queue_id: u32,
    key: String,
    deliver_at_ms: i64,
    stored_at_ms: i64,
}

async fn delayed(
    State(shared): State<Arc<HttpShared>>,
    query: Result<Query<MaxQuery>, QueryRejection>,
) -> ApiResult<Json<DelayedJson>> {
    let state = shared.broker()?.clone();
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let max = query.max();
    let listing = tokio::task::spawn_blocking(move || {
        state.delays.upcoming(max).map(|list| {
            let messages = list
                .messages
                .into_iter()
                .map(|m| DelayedMessage {
                    id: state
                        .identity
                        .message_id(m.commit_log_offset, 0)
                        .to_string(),
                    topic: m.topic,
                    queue_id: m.queue_id,
                    key: m.key,
                    deliver_at_ms: m.deliver_at_ms,
                    stored_at_ms: m.stored_at_ms,
                })
                .collect();
            DelayedJson {
                pending: state.delays.pending(),
                truncated: list.truncated,
                messages,
            }
        })
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("delayed listing failed: {e}")))??;
    Ok(Json(listing))
}

/// `GET /api/v1/transactions`.
#[derive(Debug, Serialize)]
struct TransactionsJson {
    pending: usize,
    half_messages: Vec<HalfJson>,
}

/// A half message awaiting a decision.
#[derive(Debug, Serialize)]
struct HalfJson {
    id: String,
    transaction_id: String,
    producer_group: String,
    topic: String,
    queue_id: u32,
    checks: u32,
    next_check_in_ms: u64,
    stored_at_ms: i64,
}

async fn transactions(
    State(shared): State<Arc<HttpShared>>,
    query: Result<Query<MaxQuery>, QueryRejection>,
) -> ApiResult<Json<TransactionsJson>> {
    let state = shared.broker()?.clone();
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    // Reads each half message's record for its store time: off the async workers.
    let listing = tokio::task::spawn_blocking(move || transactions_json(&state, query.max()))
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("transaction listing failed: {e}"),
            )
        })?;
    Ok(Json(listing))
}

fn transactions_json(state: &BrokerState, max: usize) -> TransactionsJson {
    let half_messages = state
        .transactions
        .awaiting(max)
        .into_iter()
        .map(|h| HalfJson {
            id: state.identity.message_id(h.half_offset, 0).to_string(),
            stored_at_ms: state
                .log
                .read_at(h.half_offset)
                .ok()
                .and_then(|b| {
                    weir_proto::batch::Entry::parse(&b)
                        .ok()
                        .map(|e| e.stamp().store_timestamp)
                })
                .unwrap_or(0),
            transaction_id: h.transaction_id,
            producer_group: h.producer_group,
            topic: h.topic,
            queue_id: h.queue_id,
            checks: h.checks,
            next_check_in_ms: h.next_check_in_ms,
        })
        .collect();
    TransactionsJson {
        pending: state.transactions.pending_count(),
        half_messages,
    }
}
