//! `Metadata` and `FindCoordinator`: the broker group's leader (a standalone broker: this
//! one) leads every partition and coordinates every group (see [`super::replicas`]).
//!
//! Metadata creates a topic it is asked about when the client allows it and the broker's
//! `auto_create_topics` is on. Internal topics are left out, but for retry and dead-letter
//! topics under their Kafka names (see [`super::names`]). A partition's leader epoch is the
//! one its leader stamps on the batches it writes (see [`super::epochs`]): the group's Raft
//! term, 0 standalone; -1 while no leader is known.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::ops;
use crate::protocols::kafka::names::{to_kafka, to_weir};
use crate::protocols::kafka::replicas::KafkaBrokers;
use crate::protocols::kafka::{epochs, errors};
use crate::state::BrokerState;

/// A topic's id: stable, derived from its name (the id APIs that use it are not offered).
pub(crate) fn topic_id(name: &str) -> Uuid {
    Uuid::from_u128(xxhash_rust::xxh3::xxh3_128(name.as_bytes()))
}

/// Answers `Metadata`: the brokers, and the topics asked for (all when none are named).
pub(crate) async fn metadata(
    state: &BrokerState,
    brokers: &KafkaBrokers,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let names: Vec<String> = match request.topics {
        // v0 names no topics to mean all of them; later versions say so with null.
        Some(topics) if !(version == 0 && topics.is_empty()) => topics
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.as_str().to_owned()))
            .collect(),
        _ => state
            .topics
            .list()
            .into_iter()
            .filter_map(|(name, _)| to_kafka(&name).map(|n| n.into_owned()))
            .collect(),
    };
    // Before v4 a client could not say no: Kafka created topics for them when configured to.
    let may_create = version < 4 || request.allow_auto_topic_creation;
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        topics.push(topic(state, brokers, &name, may_create, version).await);
    }
    let listed = brokers
        .endpoints
        .iter()
        .map(|(id, endpoint)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(*id))
                .with_host(StrBytes::from_string(endpoint.host.clone()))
                .with_port(endpoint.port)
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(listed)
        .with_topics(topics);
    if version >= 1 {
        response.controller_id = BrokerId(brokers.leader_endpoint().map_or(-1, |(id, _)| id));
    }
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_string(state.identity.cluster_name.clone()));
    }
    response
}

/// One topic's metadata, created first when allowed and missing.
async fn topic(
    state: &BrokerState,
    brokers: &KafkaBrokers,
    kafka_name: &str,
    may_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    let weir_name = to_weir(kafka_name);
    // Internal topics are shown only under their Kafka names, the rest not at all.
    let shown = to_kafka(&weir_name).is_some_and(|k| k == kafka_name);
    let mut found = state
        .topics
        .get(&weir_name)
        .filter(|_| shown)
        .map(|t| t.queues);
    let mut error = None;
    if found.is_none() && shown && may_create && state.config.auto_create_topics {
        match ops::topic::get_or_create(state, &weir_name).await {
            Ok(config) => found = Some(config.queues),
            Err(e) => error = Some(errors::kafka_code(e.code)),
        }
    }
    let mut topic = MetadataResponseTopic::default().with_name(Some(TopicName(
        StrBytes::from_string(kafka_name.to_owned()),
    )));
    if version >= 10 {
        topic.topic_id = topic_id(kafka_name);
    }
    if version >= 1 {
        topic.is_internal = weir_proto::names::is_internal(&weir_name);
    }
    match found {
        Some(queues) => {
            topic.partitions = (0..queues)
                .map(|queue| partition(brokers, queue as i32, version))
                .collect();
        }
        None => {
            topic.error_code = error.unwrap_or(ResponseError::UnknownTopicOrPartition.code());
        }
    }
    topic
}

fn partition(brokers: &KafkaBrokers, index: i32, version: i16) -> MetadataResponsePartition {
    let replicas: Vec<BrokerId> = brokers.replicas.iter().map(|id| BrokerId(*id)).collect();
    let mut partition = MetadataResponsePartition::default()
        .with_partition_index(index)
        .with_replica_nodes(replicas.clone())
        .with_isr_nodes(replicas);
    let led = match brokers.leader_endpoint() {
        Some((leader, _)) => {
            partition.leader_id = BrokerId(leader);
            true
        }
        // No leader now, or not yet known where clients reach it: the client asks again.
        None => {
            partition.leader_id = BrokerId(-1);
            partition.error_code = ResponseError::LeaderNotAvailable.code();
            false
        }
    };
    if version >= 7 {
        partition.leader_epoch = if led {
            brokers.epoch
        } else {
            epochs::UNDEFINED
        };
    }
    partition
}

/// Answers `FindCoordinator`: the leader coordinates every group (and would every
/// transaction); without one, `COORDINATOR_NOT_AVAILABLE` and the client asks again. v4 asks
/// for several keys at once.
pub(crate) fn find_coordinator(
    brokers: &KafkaBrokers,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let leader = brokers.leader_endpoint();
    let fill =
        |node_id: &mut BrokerId, host: &mut StrBytes, port: &mut i32, error: &mut i16| match leader
        {
            Some((id, endpoint)) => {
                *node_id = BrokerId(id);
                *host = StrBytes::from_string(endpoint.host.clone());
                *port = endpoint.port;
            }
            None => {
                *node_id = BrokerId(-1);
                *port = -1;
                *error = ResponseError::CoordinatorNotAvailable.code();
            }
        };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default().with_key(key);
                fill(&mut c.node_id, &mut c.host, &mut c.port, &mut c.error_code);
                c
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let mut response = FindCoordinatorResponse::default();
    fill(
        &mut response.node_id,
        &mut response.host,
        &mut response.port,
        &mut response.error_code,
    );
    response
}
