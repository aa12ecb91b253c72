//! `GET /api/cluster`: name servers, broker groups and each replica's role, term, commit and
//! applied index and lag (`crate::routing::cluster_status`). A broker answers from its name
//! servers (all asked at once), or, standalone, from its own name-server role; a name-server
//! process (`weir nameserver --http`) answers from its registry, on a listener of its own
//! that also serves `/health`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::HttpShared;
use super::api_error::ApiError;
use crate::protocols::native::cluster_query;
use crate::routing::cluster_status::{ClusterStatus, NameServerAnswer, merge};
use crate::routing::name_server::NameServer;

/// The broker listener's route.
pub(crate) fn routes() -> Router<Arc<HttpShared>> {
    Router::new().route("/api/cluster", get(broker_cluster))
}

async fn broker_cluster(
    State(shared): State<Arc<HttpShared>>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let state = shared.broker()?;
    let status = if state.config.name_servers.is_empty() {
        local(&state.name_server, state.identity.advertised_addr.clone())
    } else {
        cluster_query::query(&state.config.name_servers, state.max_frame_len).await
    };
    Ok(Json(status))
}

/// The status a process's own name-server role holds; `addr` names it.
fn local(name_server: &NameServer, addr: String) -> ClusterStatus {
    merge(
        vec![NameServerAnswer {
            addr,
            answered: true,
            error: None,
        }],
        name_server.cluster(),
    )
}

/// What the name-server process's HTTP handlers share.
struct NameServerHttp {
    name_server: Arc<NameServer>,
    /// The name server's native address, as the status names it.
    native_addr: String,
}

/// Serves `/health` and `/api/cluster` of a name-server process on `listener` until
/// `shutdown` turns true.
pub(crate) async fn serve_name_server(
    listener: TcpListener,
    name_server: Arc<NameServer>,
    native_addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(NameServerHttp {
        name_server,
        native_addr: native_addr.to_string(),
    });
    let app = Router::new()
        .route("/health", get(super::probes::health))
        .route("/api/cluster", get(name_server_cluster))
        .with_state(shared);
    let stop = async move { crate::shutdown::requested(&mut shutdown).await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "the HTTP listener failed");
    }
}

async fn name_server_cluster(State(shared): State<Arc<NameServerHttp>>) -> Json<ClusterStatus> {
    Json(local(&shared.name_server, shared.native_addr.clone()))
}
