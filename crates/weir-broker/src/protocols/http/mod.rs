//! The HTTP listener (`http_listen`, port 9877 by default in `weir serve`): the JSON admin API
//! under `/api/v1`, Prometheus `/metrics`, the `/health` and `/ready` probes, and the web
//! dashboard at `/` (unless `dashboard = false`). The API is documented in `docs/http-api.md`.
//!
//! The listener opens before the store recovers, so `/health` answers at once and `/ready`
//! says when the broker can serve; until then the admin API answers `busy` (503). Handlers call
//! the same [`ops`](crate::ops) functions as the native protocol's handlers.

mod admin;
mod api_error;
pub(crate) mod cluster_api;
mod damaged;
mod dashboard;
pub(crate) mod history;
mod messages_api;
pub(crate) mod metrics_endpoint;
mod probes;
mod same_origin;
mod status_api;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_proto::ErrorCode;

use crate::error::BrokerError;
use crate::state::BrokerState;
use api_error::ApiError;

/// What the HTTP handlers share: the broker, once it has started.
pub(crate) struct HttpShared {
    broker: OnceLock<Arc<BrokerState>>,
    /// The bound address of the HTTP listener.
    pub local_addr: SocketAddr,
    started: Instant,
    /// Recent traffic, queue rates and group lag, for the dashboard's charts.
    history: history::History,
}

impl HttpShared {
    /// Hands the started broker to the handlers: the admin API and `/ready` come alive.
    pub fn set_broker(&self, state: Arc<BrokerState>) {
        let _ = self.broker.set(state);
    }

    /// The broker, or `busy` while it is still starting.
    fn broker(&self) -> Result<&Arc<BrokerState>, ApiError> {
        self.broker.get().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Busy,
                "the broker is starting (recovering its store); retry shortly",
            )
        })
    }

    /// Seconds since the listener opened.
    fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// A running HTTP listener.
pub(crate) struct HttpServer {
    /// Shared with the handlers.
    pub shared: Arc<HttpShared>,
    /// The serving task; it ends once shutdown is requested and requests in flight are done.
    pub task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `addr`, installs the metrics recorder and starts serving (the dashboard too when
    /// `dashboard`) until `shutdown` turns true.
    pub async fn start(
        addr: &str,
        dashboard: bool,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<HttpServer, BrokerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BrokerError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| BrokerError::io("reading the HTTP listener's address", e))?;
        metrics_endpoint::recorder();
        let shared = Arc::new(HttpShared {
            broker: OnceLock::new(),
            local_addr,
            started: Instant::now(),
            history: history::History::default(),
        });
        let app = router(shared.clone(), dashboard);
        let sampler = history::run(shared.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            let stop = async move { crate::shutdown::requested(&mut shutdown).await };
            let serve = async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(error = %e, "the HTTP listener failed");
                }
            };
            tokio::join!(serve, sampler);
        });
        tracing::info!(addr = %local_addr, "HTTP listener open");
        Ok(HttpServer { shared, task })
    }
}

/// Every route (the dashboard's pages only when `dashboard`).
fn router(shared: Arc<HttpShared>, dashboard: bool) -> Router {
    let router = Router::new()
        .route("/health", get(probes::health))
        .route("/ready", get(probes::ready))
        .route("/metrics", get(probes::metrics))
        .route("/api/v1/broker", get(admin::broker))
        .route(
            "/api/v1/topics",
            get(admin::list_topics).post(admin::create_topic),
        )
        .route(
            "/api/v1/topics/{name}",
            get(admin::describe_topic).delete(admin::delete_topic),
        )
        .route("/api/v1/groups", get(admin::list_groups))
        .route("/api/v1/groups/{group}", get(admin::describe_group))
        .route("/api/v1/groups/{group}/reset", post(admin::reset_group))
        .route("/api/v1/messages", get(admin::find_messages))
        .route("/api/v1/messages/{id}", get(admin::get_message))
        .route("/api/v1/damaged", get(damaged::list))
        .merge(status_api::routes())
        .merge(cluster_api::routes())
        .merge(messages_api::routes());
    let router = if dashboard {
        router.merge(dashboard::routes())
    } else {
        router
    };
    router
        .fallback(admin::no_such_endpoint)
        .layer(axum::middleware::from_fn(same_origin::check))
        .with_state(shared)
}
