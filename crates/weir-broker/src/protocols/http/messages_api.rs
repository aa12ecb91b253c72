//! Admin API endpoints that write or read messages: produce one message over HTTP, read a
//! queue by offset, and a group's dead letters (list, inspect, resend one or all). Documented
//! in `docs/http-api.md`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use weir_proto::ErrorCode;

use super::HttpShared;
use super::admin::{MessageJson, message_json};
use super::api_error::ApiError;
use crate::ops;
use crate::ops::browse::QueuePage;
use crate::ops::send::NewMessage;
use crate::state::BrokerState;

/// A handler's result.
type ApiResult<T> = Result<T, ApiError>;

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<HttpShared>> {
    Router::new()
        .route("/api/v1/topics/{name}/messages", post(produce))
        .route(
            "/api/v1/topics/{name}/queues/{queue}/messages",
            get(queue_messages),
        )
        .route(
            "/api/v1/topics/{name}/queues/{queue}/messages/{offset}",
            get(queue_message),
        )
        .route("/api/v1/groups/{group}/dead-letters", get(dead_letters))
        .route(
            "/api/v1/groups/{group}/dead-letters/resend-all",
            post(resend_all),
        )
        .route("/api/v1/groups/{group}/dead-letters/{id}", get(dead_letter))
        .route(
            "/api/v1/groups/{group}/dead-letters/{id}/resend",
            post(resend),
        )
}

/// `POST /api/v1/topics/{name}/messages`: one message. `body` is text; `body_hex` a binary
/// body instead.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProduceRequest {
    queue_id: Option<u32>,
    key: String,
    tag: String,
    properties: serde_json::Map<String, serde_json::Value>,
    body: Option<String>,
    body_hex: Option<String>,
    delay_ms: u64,
}

/// Where a message produced over HTTP went.
#[derive(Debug, Serialize)]
struct ProduceAnswer {
    id: String,
    topic: String,
    queue_id: u32,
    /// Absent for a delayed message (it gets one when delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_offset: Option<u64>,
    /// When a delayed message is delivered, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at_ms: Option<i64>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

async fn produce(
    State(shared): State<Arc<HttpShared>>,
    Path(topic): Path<String>,
    request: Result<Json<ProduceRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ProduceAnswer>)> {
    let state = shared.broker()?;
    let Json(request) =
        request.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let body = match (request.body, request.body_hex) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(hex)) => {
            hex::decode(hex.trim()).map_err(|e| invalid(format!("body_hex is not hex: {e}")))?
        }
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => return Err(invalid("give body or body_hex, not both")),
    };
    let properties = request
        .properties
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            other => Err(invalid(format!(
                "property {k:?} must be a string, not {other}"
            ))),
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let produced = ops::send::send(
        state,
        NewMessage {
            topic: topic.clone(),
            queue_id: request.queue_id,
            key: request.key,
            tag: request.tag,
            properties,
            body,
            delay_ms: request.delay_ms,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ProduceAnswer {
            id: produced.id.to_string(),
            topic,
            queue_id: produced.queue_id,
            queue_offset: produced.queue_offset,
            deliver_at_ms: (produced.deliver_at_ms != 0).then_some(produced.deliver_at_ms),
        }),
    ))
}

/// `?from=N&max=N`: a page of a queue (default from its start, 20 messages).
#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    max: u32,
}

impl PageQuery {
    fn max(&self) -> u32 {
        match self.max {
            0 => 20,
            n => n.min(ops::browse::MAX_RANGE),
        }
    }
}

/// A page of messages.
#[derive(Debug, Serialize)]
struct MessagePage {
    messages: Vec<MessageJson>,
    next_offset: u64,
    min_offset: u64,
    max_offset: u64,
}

fn page_json(state: &BrokerState, page: QueuePage) -> ApiResult<MessagePage> {
    Ok(MessagePage {
        messages: page
            .records
            .into_iter()
            .map(|m| message_json(state, m))
            .collect::<ApiResult<_>>()?,
        next_offset: page.next_offset,
        min_offset: page.min_offset,
        max_offset: page.max_offset,
    })
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))
}

async fn queue_messages(
    State(shared): State<Arc<HttpShared>>,
    Path((topic, queue_id)): Path<(String, u32)>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Json<MessagePage>> {
    let state = shared.broker()?;
    let page = query(page)?;
    let found = ops::browse::range(state, &topic, queue_id, page.from, page.max())?;
    Ok(Json(page_json(state, found)?))
}

async fn queue_message(
    State(shared): State<Arc<HttpShared>>,
    Path((topic, queue_id, offset)): Path<(String, u32, u64)>,
) -> ApiResult<Json<MessageJson>> {
    let state = shared.broker()?;
    let message = ops::browse::at_offset(state, &topic, queue_id, offset)?;
    Ok(Json(message_json(state, message)?))
}

async fn dead_letters(
    State(shared): State<Arc<HttpShared>>,
    Path(group): Path<String>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Json<MessagePage>> {
    let state = shared.broker()?;
    let page = query(page)?;
    let found = ops::dead_letter::list(state, &group, page.from, page.max())?;
    Ok(Json(page_json(state, found)?))
}

async fn dead_letter(
    State(shared): State<Arc<HttpShared>>,
    Path((group, id)): Path<(String, String)>,
) -> ApiResult<Json<MessageJson>> {
    let state = shared.broker()?;
    let message = ops::dead_letter::get(state, &group, &id)?;
    Ok(Json(message_json(state, message)?))
}

/// The answer to a resend: the ids of the copies in the group's retry topic.
#[derive(Debug, Serialize)]
struct Resent {
    group: String,
    resent: usize,
    ids: Vec<String>,
}

async fn resend(
    State(shared): State<Arc<HttpShared>>,
    Path((group, id)): Path<(String, String)>,
) -> ApiResult<Json<Resent>> {
    let state = shared.broker()?;
    let copy = ops::dead_letter::resend(state, &group, &id).await?;
    Ok(Json(Resent {
        group,
        resent: 1,
        ids: vec![copy.to_string()],
    }))
}

async fn resend_all(
    State(shared): State<Arc<HttpShared>>,
    Path(group): Path<String>,
) -> ApiResult<Json<Resent>> {
    let state = shared.broker()?;
    let copies = ops::dead_letter::resend_all(state, &group).await?;
    Ok(Json(Resent {
        group,
        resent: copies.len(),
        ids: copies.iter().map(ToString::to_string).collect(),
    }))
}
