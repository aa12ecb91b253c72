//! Refuses cross-site writes: a request that changes something (any method but `GET`, `HEAD`,
//! `OPTIONS`) and carries an `Origin` header naming another host than the one it was sent to
//! is answered `invalid_argument` (400) without running.
//!
//! The admin API and the dashboard have no login and listen on loopback by default; without
//! this check any web page open in the operator's browser could post a plain form to
//! `http://127.0.0.1:9877/api/v1/...` (a "simple" request that skips CORS pre-flight). Browsers
//! always send `Origin` on such cross-origin requests; tools like `curl` and the dashboard's
//! own same-origin requests pass.

use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weir_proto::ErrorCode;

use super::api_error::ApiError;

/// The middleware: see the module docs.
pub(super) async fn check(request: Request, next: Next) -> Response {
    if let Some(refusal) = refusal(
        request.method(),
        request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok()),
        request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok()),
    ) {
        return refusal.into_response();
    }
    next.run(request).await
}

/// Why a request is refused, if it is.
fn refusal(method: &Method, origin: Option<&str>, host: Option<&str>) -> Option<ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let origin = origin?;
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    if host.is_some_and(|host| host.eq_ignore_ascii_case(origin_host)) {
        return None;
    }
    Some(ApiError::new(
        ErrorCode::InvalidArgument,
        format!(
            "cross-site request refused: it comes from a page of {origin}, not of this listener ({})",
            host.unwrap_or("no Host header")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cross_site_writes_are_refused() {
        let host = Some("127.0.0.1:9877");
        assert!(refusal(&Method::POST, None, host).is_none(), "curl");
        assert!(refusal(&Method::POST, Some("http://127.0.0.1:9877"), host).is_none());
        assert!(refusal(&Method::GET, Some("https://evil.example"), host).is_none());
        let refused = refusal(&Method::POST, Some("https://evil.example"), host);
        assert_eq!(refused.map(|e| e.code), Some(ErrorCode::InvalidArgument));
        assert!(refusal(&Method::DELETE, Some("http://localhost:9877"), host).is_some());
        assert!(refusal(&Method::POST, Some("null"), host).is_some());
    }
}
