//! The broker side of routing, over the native protocol: registering this broker's topics
//! with every name server, at start, every heartbeat interval and whenever the topic table
//! changes.
//!
//! A remote name server gets a `RegisterBroker` request over the native protocol; in standalone
//! mode (no name servers configured) the same request goes to this process's own name-server
//! role, in-process.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_util::codec::Decoder;
use weir_proto::frame::encode_frame;
use weir_proto::{ApiKey, ErrorCode, FrameCodec, Header, pb};

use crate::core::topics::TopicTable;
use crate::routing::name_server::{BrokerRegistration, NameServer};

/// A registration as the native protocol carries it.
fn to_request(registration: &BrokerRegistration) -> pb::RegisterBrokerRequest {
    pb::RegisterBrokerRequest {
        cluster: registration.cluster.clone(),
        broker_name: registration.broker_name.clone(),
        broker_addr: registration.broker_addr.clone(),
        topics: registration
            .topics
            .iter()
            .map(|(name, queues)| pb::TopicRegistration {
                name: name.clone(),
                queue_count: *queues,
            })
            .collect(),
    }
}

/// A registration received over the native protocol.
pub(crate) fn from_request(request: pb::RegisterBrokerRequest) -> BrokerRegistration {
    BrokerRegistration {
        cluster: request.cluster,
        broker_name: request.broker_name,
        broker_addr: request.broker_addr,
        topics: request
            .topics
            .into_iter()
            .map(|t| (t.name, t.queue_count))
            .collect(),
    }
}

/// How long one registration with a remote name server may take.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where registrations go.
#[derive(Debug)]
pub enum Target {
    /// This process's own name-server role.
    Local(Arc<NameServer>),
    /// A name server at `host:port`.
    Remote(String),
}

/// Registers this broker with its name servers.
#[derive(Debug)]
pub struct Registrar {
    targets: Vec<Target>,
    cluster: String,
    broker_name: String,
    broker_addr: String,
    topics: Arc<TopicTable>,
    interval: Duration,
    max_frame_len: u32,
    changed: Notify,
}

impl Registrar {
    /// A registrar for this broker.
    pub fn new(
        targets: Vec<Target>,
        cluster: String,
        broker_name: String,
        broker_addr: String,
        topics: Arc<TopicTable>,
        interval: Duration,
        max_frame_len: u32,
    ) -> Registrar {
        Registrar {
            targets,
            cluster,
            broker_name,
            broker_addr,
            topics,
            interval,
            max_frame_len,
            changed: Notify::new(),
        }
    }

    /// The registration describing this broker now.
    fn request(&self) -> BrokerRegistration {
        BrokerRegistration {
            cluster: self.cluster.clone(),
            broker_name: self.broker_name.clone(),
            broker_addr: self.broker_addr.clone(),
            topics: self
                .topics
                .list()
                .into_iter()
                .map(|(name, config)| (name, config.queues))
                .collect(),
        }
    }

    /// The topic table changed: registers with the local role at once (so a route is there
    /// before the change is acknowledged) and wakes the loop for the remote ones.
    pub fn topics_changed(&self) {
        self.register_local();
        self.changed.notify_one();
    }

    fn register_local(&self) {
        for target in &self.targets {
            if let Target::Local(name_server) = target
                && let Err(e) = name_server.register(self.request())
            {
                tracing::warn!(error = %e, "local registration refused");
            }
        }
    }

    /// Registers with every target now.
    pub async fn register_all(&self) {
        let request = self.request();
        for target in &self.targets {
            match target {
                Target::Local(name_server) => {
                    if let Err(e) = name_server.register(request.clone()) {
                        tracing::warn!(error = %e, "local registration refused");
                    }
                }
                Target::Remote(addr) => {
                    match tokio::time::timeout(REMOTE_TIMEOUT, self.register_remote(addr, &request))
                        .await
                    {
                        Ok(Ok(())) => tracing::debug!(name_server = %addr, "registered"),
                        Ok(Err(e)) => {
                            tracing::warn!(name_server = %addr, error = %e, "registration failed")
                        }
                        Err(_) => tracing::warn!(name_server = %addr, "registration timed out"),
                    }
                }
            }
        }
    }

    /// Registers at start, then every interval and on topic changes, until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.register_all().await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.changed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn register_remote(
        &self,
        addr: &str,
        request: &BrokerRegistration,
    ) -> Result<(), String> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let header = Header::request(ApiKey::RegisterBroker, 1);
        let mut out = BytesMut::new();
        encode_frame(&header, &to_request(request), &[], &mut out);
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut codec = FrameCodec::new(self.max_frame_len);
        let mut buf = BytesMut::with_capacity(256);
        let frame = loop {
            if let Some(frame) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
                break frame;
            }
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("receive: {e}"))?
                == 0
            {
                return Err("connection closed before the answer".to_owned());
            }
        };
        let code = ErrorCode::from_u16(frame.header.error_code);
        if code != ErrorCode::None {
            let message = pb::ErrorResponse::decode(frame.meta)
                .map(|r| r.message)
                .unwrap_or_default();
            return Err(format!("{code}: {message}"));
        }
        Ok(())
    }
}
