//! The web dashboard: one page at `/` with its script and style sheet, hand-written (no
//! framework, no build step, no third-party code) and embedded in the binary, so it works on
//! an offline network and `cargo build` needs nothing but Rust. The page calls the admin API
//! under `/api/v1` for everything it shows and does; its charts draw the broker's own history
//! ([`super::history`]) as inline SVG.
//!
//! Served unless `dashboard = false`. It can change the broker (create and delete topics,
//! produce, reset offsets, resend dead letters), like the admin API, so it is exactly as
//! reachable as the HTTP listener (loopback by default).

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::HttpShared;

/// The page.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its script.
const APP_JS: &str = include_str!("dashboard/app.js");
/// Its style sheet.
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The dashboard's routes.
pub(super) fn routes() -> Router<Arc<HttpShared>> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/style.css", get(style_css))
}

/// An embedded file with its type; `no-cache` so an upgraded broker serves its own version.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
