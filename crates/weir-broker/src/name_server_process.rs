//! A process that is only the name-server role (`weir nameserver`): stateless (nothing on
//! disk: brokers re-register every heartbeat interval, so a restarted name server learns the
//! cluster again within one), independent of other name servers (brokers register with every
//! one). It serves `RegisterBroker`, `GetRoute` and `GetCluster` on the native protocol
//! (`protocols::native::name_server_connection`) and, optionally, `/health` and
//! `/api/cluster` over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::BrokerError;
use crate::protocols::accept::accept_loop;
use crate::protocols::http::cluster_api;
use crate::protocols::native::name_server_connection::{self, NameServerContext};
use crate::routing::name_server::NameServer;

/// How a name-server process runs.
#[derive(Debug, Clone)]
pub struct NameServerConfig {
    /// Address of the native listener (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// Address of the HTTP listener (`/health`, `/api/cluster`); `None`: none.
    pub http_listen: Option<String>,
    /// A replica silent this long is left out of routes and dropped, ms.
    pub broker_expiry_ms: u64,
    /// The heartbeat interval told to registering brokers, ms.
    pub heartbeat_interval_ms: u64,
    /// Largest frame accepted, bytes.
    pub max_frame_len: u32,
    /// Connections served at once.
    pub max_connections: usize,
    /// A connection silent this long is closed, ms.
    pub connection_idle_timeout_ms: u64,
}

impl Default for NameServerConfig {
    fn default() -> Self {
        NameServerConfig {
            listen: "127.0.0.1:9876".to_owned(),
            http_listen: None,
            broker_expiry_ms: 120_000,
            heartbeat_interval_ms: 30_000,
            // Registrations and routes are small: a name server holds less per connection.
            max_frame_len: 4 << 20,
            max_connections: 10_000,
            connection_idle_timeout_ms: 600_000,
        }
    }
}

/// A running name-server process.
#[derive(Debug)]
pub struct NameServerProcess {
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NameServerProcess {
    /// Binds the listeners and serves until [`NameServerProcess::shutdown`].
    pub async fn start(config: NameServerConfig) -> Result<NameServerProcess, BrokerError> {
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| BrokerError::Bind { addr, source })
        };
        let listener = bind(config.listen.clone()).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| BrokerError::io("reading the bound address", e))?;
        let http = match config.http_listen.clone().filter(|a| !a.is_empty()) {
            Some(addr) => {
                let listener = bind(addr).await?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| BrokerError::io("reading the HTTP listener's address", e))?;
                Some((listener, addr))
            }
            None => None,
        };
        let name_server = Arc::new(NameServer::new(Duration::from_millis(
            config.broker_expiry_ms,
        )));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let ctx = Arc::new(NameServerContext {
            name_server: name_server.clone(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            max_frame_len: config.max_frame_len,
            idle_timeout: Duration::from_millis(config.connection_idle_timeout_ms.max(1)),
        });
        let for_connections = shutdown_rx.clone();
        let mut tasks = vec![tokio::spawn(accept_loop(
            listener,
            config.max_connections,
            shutdown_rx.clone(),
            move |stream, peer, _| {
                name_server_connection::serve(ctx.clone(), stream, peer, for_connections.clone())
            },
        ))];
        let http_addr = http.as_ref().map(|(_, addr)| *addr);
        if let Some((listener, _)) = http {
            tasks.push(tokio::spawn(cluster_api::serve_name_server(
                listener,
                name_server.clone(),
                local_addr,
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(expire(
            name_server,
            Duration::from_millis(config.broker_expiry_ms.clamp(100, 10_000)),
            shutdown_rx,
        )));
        tracing::info!(addr = %local_addr, http = ?http_addr, "name server started");
        Ok(NameServerProcess {
            local_addr,
            http_addr,
            shutdown,
            tasks,
        })
    }

    /// The bound address of the native listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound address of the HTTP listener, if one is open.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops accepting and closes the connections (bounded).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Drops expired registrations every `every` until shutdown.
async fn expire(
    name_server: Arc<NameServer>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                name_server.expire();
            }
            _ = crate::shutdown::requested(&mut shutdown) => return,
        }
    }
}
