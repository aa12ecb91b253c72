//! Admin APIs: `CreateTopics`, `DeleteTopics`, `CreatePartitions`, `DescribeConfigs`, and
//! `InitProducerId` (idempotent producers; the transaction APIs are not offered).
//!
//! They call the same topic operations as the native and HTTP admin APIs
//! ([`crate::ops::topic`]). A replication factor other than 1 or -1 (the broker's default)
//! is refused: a standalone broker keeps one copy.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    InitProducerIdRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use weir_proto::ErrorCode;

use crate::error::RequestError;
use crate::ops;
use crate::protocols::kafka::errors;
use crate::protocols::kafka::metadata::topic_id;
use crate::protocols::kafka::names::to_weir;
use crate::protocols::native::remote;
use crate::state::BrokerState;

/// DescribeConfigs' resource type of a topic (2) and of a broker (4).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs' config source of a broker-wide default.
const SOURCE_DEFAULT: i8 = 5;

/// Serves `CreateTopics` (`validate_only` checks without creating).
pub(crate) async fn create_topics(
    state: &BrokerState,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let validate_only = request.validate_only;
    let mut topics = Vec::new();
    for topic in request.topics {
        {
            let name = topic.name.0.as_str().to_owned();
            let partitions = match topic.num_partitions {
                -1 => Ok(state.config.default_queues),
                n => u32::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                    RequestError::new(ErrorCode::InvalidArgument, format!("{n} partitions"))
                }),
            };
            let result = match partitions {
                Err(e) => Err(e),
                Ok(queues) => {
                    async {
                        if !matches!(topic.replication_factor, -1 | 1) {
                            return Err(RequestError::new(
                                ErrorCode::InvalidArgument,
                                format!(
                                    "replication factor {}: this broker keeps one copy",
                                    topic.replication_factor
                                ),
                            ));
                        }
                        if !topic.assignments.is_empty() {
                            return Err(RequestError::new(
                                ErrorCode::InvalidArgument,
                                "manual replica assignments are not supported",
                            ));
                        }
                        if validate_only {
                            crate::core::topics::validate_name(&name)?;
                            return match state.topics.get(&name) {
                                Some(_) => Err(RequestError::new(
                                    ErrorCode::TopicAlreadyExists,
                                    format!("topic {name:?} exists"),
                                )),
                                None => Ok(queues),
                            };
                        }
                        ops::topic::create(state, &name, queues)
                            .await
                            .map(|c| c.queues)
                    }
                    .await
                }
            };
            let mut answer = CreatableTopicResult::default()
                .with_topic_id(topic_id(&name))
                .with_name(topic.name);
            match result {
                Ok(queues) => {
                    answer.num_partitions = queues as i32;
                    answer.replication_factor = 1;
                }
                Err(e) => {
                    answer.error_code = match e.code {
                        ErrorCode::InvalidArgument
                            if !matches!(topic.replication_factor, -1 | 1) =>
                        {
                            ResponseError::InvalidReplicationFactor.code()
                        }
                        ErrorCode::InvalidArgument
                            if topic.num_partitions < -1 || topic.num_partitions == 0 =>
                        {
                            ResponseError::InvalidPartitions.code()
                        }
                        code => errors::kafka_code(code),
                    };
                    answer.error_message = Some(StrBytes::from_string(e.message));
                    answer.num_partitions = -1;
                    answer.replication_factor = -1;
                }
            }
            topics.push(answer);
        }
    }
    CreateTopicsResponse::default().with_topics(topics)
}

/// Serves `DeleteTopics` (by name; v6 may name topics in `topics`, by id is refused).
pub(crate) async fn delete_topics(
    state: &BrokerState,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let names: Vec<Option<TopicName>> = if version >= 6 {
        request.topics.into_iter().map(|t| t.name).collect()
    } else {
        request.topic_names.into_iter().map(Some).collect()
    };
    let mut responses = Vec::new();
    for name in names {
        {
            let mut answer = DeletableTopicResult::default().with_name(name.clone());
            let result = match &name {
                Some(name) => {
                    let weir = to_weir(name.0.as_str()).into_owned();
                    if weir_proto::names::is_internal(&weir) {
                        Err(RequestError::new(
                            ErrorCode::InvalidTopicName,
                            "internal topics cannot be deleted",
                        ))
                    } else {
                        ops::topic::delete(state, &weir).await
                    }
                }
                None => Err(RequestError::new(
                    ErrorCode::InvalidArgument,
                    "topics are deleted by name here",
                )),
            };
            if let Some(name) = name.as_ref().filter(|_| version >= 6) {
                answer.topic_id = topic_id(name.0.as_str());
            }
            if let Err(e) = result {
                answer.error_code = errors::kafka_code(e.code);
                if version >= 5 {
                    answer.error_message = Some(StrBytes::from_string(e.message));
                }
            }
            responses.push(answer);
        }
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Serves `CreatePartitions`: grows topics to `count` partitions (queues) in total.
pub(crate) async fn create_partitions(
    state: &BrokerState,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let validate_only = request.validate_only;
    let mut results = Vec::new();
    for topic in request.topics {
        {
            let name = topic.name.0.as_str().to_owned();
            let result = match (state.topics.get(&name), u32::try_from(topic.count)) {
                (None, _) => Err(RequestError::new(
                    ErrorCode::TopicNotFound,
                    format!("topic {name:?} does not exist"),
                )),
                (Some(config), Ok(count)) if count > config.queues => {
                    if validate_only {
                        Ok(())
                    } else {
                        ops::topic::add_queues(state, &name, count)
                            .await
                            .map(|_| ())
                    }
                }
                (Some(config), _) => Err(RequestError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "topic {name:?} has {} partitions; it can only grow",
                        config.queues
                    ),
                )),
            };
            let mut answer = CreatePartitionsTopicResult::default().with_name(topic.name);
            if let Err(e) = result {
                answer.error_code = match e.code {
                    ErrorCode::InvalidArgument => ResponseError::InvalidPartitions.code(),
                    code => errors::kafka_code(code),
                };
                answer.error_message = Some(StrBytes::from_string(e.message));
            }
            results.push(answer);
        }
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Serves `DescribeConfigs` for topics and the broker: the settings Kafka clients and tools
/// look for, from the broker's configuration (every topic has the broker's settings).
pub(crate) fn describe_configs(
    state: &BrokerState,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let config = &state.config;
    let retention_ms = (config.retention_hours * 3_600_000).to_string();
    let settings: Vec<(&str, String)> = vec![
        ("cleanup.policy", "delete".to_owned()),
        ("retention.ms", retention_ms),
        ("max.message.bytes", config.max_message_size.to_string()),
        ("message.timestamp.type", "CreateTime".to_owned()),
        ("compression.type", "producer".to_owned()),
        ("min.insync.replicas", "1".to_owned()),
        ("segment.bytes", config.segment_size.to_string()),
    ];
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let mut answer = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let known = match resource.resource_type {
                RESOURCE_TOPIC => state
                    .topics
                    .get(&to_weir(resource.resource_name.as_str()))
                    .is_some(),
                RESOURCE_BROKER => true,
                _ => false,
            };
            if !known {
                answer.error_code = if resource.resource_type == RESOURCE_TOPIC {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    ResponseError::InvalidRequest.code()
                };
                answer.error_message = Some(StrBytes::from_string(format!(
                    "no resource {:?} of type {}",
                    resource.resource_name.as_str(),
                    resource.resource_type
                )));
                return answer;
            }
            answer.configs = settings
                .iter()
                .filter(|(name, _)| {
                    resource
                        .configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == *name))
                })
                .map(|(name, value)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_string((*name).to_owned()))
                        .with_value(Some(StrBytes::from_string(value.clone())))
                        .with_read_only(true)
                        .with_config_source(SOURCE_DEFAULT)
                })
                .collect();
            answer
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Serves `InitProducerId` for idempotent producers: a producer id never used before, epoch
/// 0. A transactional id is refused (the transaction APIs are not offered).
pub(crate) async fn init_producer_id(
    state: &BrokerState,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut answer = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        answer.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return answer;
    }
    match allocate_producer_id(state).await {
        Ok(id) => match i64::try_from(id) {
            Ok(id) => {
                tracing::debug!(producer_id = id, "kafka producer id allocated");
                answer.producer_id = ProducerId(id);
                answer.producer_epoch = 0;
            }
            Err(_) => answer.error_code = ResponseError::UnknownServerError.code(),
        },
        Err(code) => answer.error_code = code,
    }
    answer
}

/// A new producer id: allocated here standalone or on the group's leader; a follower asks the
/// leader over the native protocol (a Kafka client asks any broker it is connected to, often
/// the follower it bootstrapped from, and only the leader allocates ids safely). The error is
/// a Kafka error code.
async fn allocate_producer_id(state: &BrokerState) -> Result<u64, i16> {
    if state.log.check_leader().is_ok() {
        return state.idempotence.new_producer_id().map_err(|e| {
            tracing::error!(error = %e.message, "allocating a producer id failed");
            match e.code {
                ErrorCode::NotLeader => ResponseError::NotCoordinator.code(),
                _ => ResponseError::KafkaStorageError.code(),
            }
        });
    }
    let leader = state.replica.borrow().leader_addr.clone();
    let Some(leader) = leader else {
        return Err(ResponseError::CoordinatorNotAvailable.code());
    };
    remote::producer_id(&leader, state.max_frame_len)
        .await
        .map_err(|e| {
            tracing::debug!(%leader, error = %e, "the leader did not allocate a producer id");
            ResponseError::CoordinatorNotAvailable.code()
        })
}
