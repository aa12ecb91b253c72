//! `/health`, `/ready` and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::HttpShared;
use super::metrics_endpoint;

/// The body of `/health` and `/ready`.
#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

/// Liveness: 200 whenever the process answers.
pub(crate) async fn health() -> impl IntoResponse {
    Json(Status { status: "ok" })
}

/// Readiness: 200 once the store has recovered and the native listener accepts connections,
/// 503 before that and while shutting down.
pub(crate) async fn ready(State(shared): State<Arc<HttpShared>>) -> impl IntoResponse {
    match shared.broker.get() {
        Some(state) if !state.is_shutting_down() => {
            (StatusCode::OK, Json(Status { status: "ready" }))
        }
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "shutting_down",
            }),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status { status: "starting" }),
        ),
    }
}

/// The Prometheus text exposition.
pub(crate) async fn metrics(State(shared): State<Arc<HttpShared>>) -> impl IntoResponse {
    let page = metrics_endpoint::render(
        shared.broker.get().map(Arc::as_ref),
        shared.uptime_seconds(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
}
