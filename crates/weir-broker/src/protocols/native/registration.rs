//! The broker side of routing, over the native protocol: registering this replica (its topics
//! and its Raft status) with every name server, at start, every heartbeat interval, whenever
//! the topic table changes and at once when the replica's role, term or known leader changes.
//!
//! A remote name server gets a `RegisterBroker` request over the native protocol (all of them
//! at once, so a dead one delays nobody); in standalone mode (no name servers configured) the
//! same registration goes to this process's own name-server role, in-process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use weir_proto::{ApiKey, pb};

use crate::core::replica::{ReplicaRole, ReplicaStatus, StatusReceiver};
use crate::core::topics::TopicTable;
use crate::protocols::native::remote;
use crate::routing::name_server::{BrokerRegistration, NameServer, ReplicaReport};

/// A registration as the native protocol carries it.
fn to_request(registration: &BrokerRegistration) -> pb::RegisterBrokerRequest {
    let r = &registration.replica;
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
        replica: Some(pb::ReplicaStatusInfo {
            node_id: r.node_id,
            role: r.role.name().to_owned(),
            term: r.term,
            commit_index: r.commit_index,
            last_log_index: r.last_log_index,
            applied_index: r.applied_index,
            leader_id: r.leader_id.unwrap_or(0),
            leader_id_known: r.leader_id.is_some(),
        }),
        http_addr: registration.http_addr.clone().unwrap_or_default(),
        kafka_addr: registration.kafka_addr.clone().unwrap_or_default(),
    }
}

/// A registration received over the native protocol. One without a replica status (an older
/// broker) is a standalone one: node 0, leader, term 0.
pub(crate) fn from_request(request: pb::RegisterBrokerRequest) -> BrokerRegistration {
    let replica = request
        .replica
        .map_or_else(ReplicaReport::default, |r| ReplicaReport {
            node_id: r.node_id,
            // An unknown role name (a newer broker) is not trusted to lead.
            role: ReplicaRole::from_name(&r.role).unwrap_or(ReplicaRole::Follower),
            term: r.term,
            commit_index: r.commit_index,
            last_log_index: r.last_log_index,
            applied_index: r.applied_index,
            leader_id: r.leader_id_known.then_some(r.leader_id),
        });
    let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
    BrokerRegistration {
        cluster: request.cluster,
        broker_name: request.broker_name,
        broker_addr: request.broker_addr,
        http_addr: non_empty(request.http_addr),
        kafka_addr: non_empty(request.kafka_addr),
        replica,
        topics: request
            .topics
            .into_iter()
            .map(|t| (t.name, t.queue_count))
            .collect(),
    }
}

/// The part of a replica's status the name servers need at once when it changes: who leads.
fn leadership(status: &ReplicaStatus) -> (ReplicaRole, u64, Option<u64>) {
    (status.role, status.term, status.leader_id)
}

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
    /// This replica's status (a fixed standalone one unless set).
    replica: StatusReceiver,
    /// The HTTP and Kafka listeners' addresses, when open.
    http_addr: Option<String>,
    kafka_addr: Option<String>,
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
            replica: crate::core::replica::standalone().1,
            http_addr: None,
            kafka_addr: None,
        }
    }

    /// Registers the status `replica` publishes (re-registering at once when it changes role,
    /// term or leader).
    pub(crate) fn with_replica(mut self, replica: StatusReceiver) -> Registrar {
        self.replica = replica;
        self
    }

    /// Registers the HTTP and Kafka listeners' addresses too.
    pub(crate) fn with_listeners(
        mut self,
        http_addr: Option<String>,
        kafka_addr: Option<String>,
    ) -> Registrar {
        self.http_addr = http_addr;
        self.kafka_addr = kafka_addr;
        self
    }

    /// The registration describing this broker now.
    fn request(&self) -> BrokerRegistration {
        let status = self.replica.borrow().clone();
        BrokerRegistration {
            cluster: self.cluster.clone(),
            broker_name: self.broker_name.clone(),
            broker_addr: self.broker_addr.clone(),
            http_addr: self.http_addr.clone(),
            kafka_addr: self.kafka_addr.clone(),
            replica: ReplicaReport {
                node_id: status.node_id,
                role: status.role,
                term: status.term,
                commit_index: status.commit_index,
                last_log_index: status.last_log_index,
                applied_index: status.applied_index,
                leader_id: status.leader_id,
            },
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

    /// Registers with every target now (the remote ones side by side).
    pub async fn register_all(&self) {
        let request = self.request();
        let mut remote = JoinSet::new();
        for target in &self.targets {
            match target {
                Target::Local(name_server) => {
                    if let Err(e) = name_server.register(request.clone()) {
                        tracing::warn!(error = %e, "local registration refused");
                    }
                }
                Target::Remote(addr) => {
                    let addr = addr.clone();
                    let body = to_request(&request);
                    let max_frame_len = self.max_frame_len;
                    remote.spawn(async move {
                        let answer = remote::call::<_, pb::RegisterBrokerResponse>(
                            &addr,
                            ApiKey::RegisterBroker,
                            &body,
                            max_frame_len,
                        )
                        .await;
                        match answer {
                            Ok(_) => tracing::debug!(name_server = %addr, "registered"),
                            Err(e) => {
                                tracing::warn!(name_server = %addr, error = %e, "registration failed")
                            }
                        }
                    });
                }
            }
        }
        while remote.join_next().await.is_some() {}
    }

    /// Registers at start, then every interval, on topic changes and when the replica's
    /// leadership changes, until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut replica = self.replica.clone();
        let mut registered = leadership(&replica.borrow_and_update());
        let mut replica_open = true;
        loop {
            self.register_all().await;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => break,
                    _ = self.changed.notified() => break,
                    changed = replica.changed(), if replica_open => {
                        if changed.is_err() {
                            // The publisher is gone (shutting down): heartbeats go on.
                            replica_open = false;
                            continue;
                        }
                        let now = leadership(&replica.borrow_and_update());
                        if now != registered {
                            tracing::info!(role = now.0.name(), term = now.1, leader = ?now.2, "replica status changed; registering");
                            registered = now;
                            break;
                        }
                    }
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::replica::ReplicaStatus;

    #[tokio::test]
    async fn a_leadership_change_registers_at_once_and_round_trips_the_wire()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let topics = Arc::new(TopicTable::load(dir.path())?);
        topics.create("t", 2)?;
        let name_server = Arc::new(NameServer::new(Duration::from_secs(60)));
        let (status, replica) = tokio::sync::watch::channel(ReplicaStatus {
            node_id: 2,
            role: ReplicaRole::Follower,
            term: 3,
            leader_id: Some(1),
            ..ReplicaStatus::default()
        });
        let registrar = Arc::new(
            Registrar::new(
                vec![Target::Local(name_server.clone())],
                "c".into(),
                "g".into(),
                "n2:9876".into(),
                topics,
                // Far longer than the test: only the status change can register again.
                Duration::from_secs(3600),
                1 << 20,
            )
            .with_replica(replica)
            .with_listeners(Some("n2:9877".into()), None),
        );
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(registrar.clone().run(stopped));
        let role_of = |ns: &NameServer| {
            ns.cluster()
                .first()
                .and_then(|g| g.replicas.first().map(|r| (r.role, r.term, g.leader)))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while role_of(&name_server) != Some(("follower", 3, None)) {
            assert!(tokio::time::Instant::now() < deadline, "first registration");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        status.send_modify(|s| {
            s.role = ReplicaRole::Leader;
            s.term = 4;
            s.leader_id = Some(2);
        });
        while role_of(&name_server) != Some(("leader", 4, Some(2))) {
            assert!(tokio::time::Instant::now() < deadline, "re-registration");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let route = name_server.route("t")?;
        assert_eq!(route.queues.len(), 2);
        assert_eq!(
            route.groups[0].replicas[0].http_addr.as_deref(),
            Some("n2:9877")
        );
        let _ = stop.send(true);
        task.await?;

        // What goes on the wire comes back the same; an old broker's registration (no
        // replica status) is a standalone leader.
        let sent = registrar.request();
        assert_eq!(from_request(to_request(&sent)), sent);
        let mut old = to_request(&sent);
        old.replica = None;
        let standalone = from_request(old);
        assert_eq!(standalone.replica.role, ReplicaRole::Leader);
        assert_eq!(standalone.replica.node_id, 0);
        Ok(())
    }
}
