//! Topic administration: create, delete, list, describe, add queues.

use weir_proto::pb;

use crate::error::RequestError;
use crate::ops;
use crate::protocols::native::handlers::Reply;
use crate::state::BrokerState;

/// A topic's queues with their current offsets.
pub(crate) fn topic_info(state: &BrokerState, name: &str, queues: u32) -> pb::TopicInfo {
    pb::TopicInfo {
        name: name.to_owned(),
        queues: ops::topic::queue_states(state, name, queues)
            .into_iter()
            .map(|q| pb::QueueInfo {
                queue_id: q.queue_id,
                min_offset: q.offsets.min,
                max_offset: q.offsets.max,
                broker_name: state.identity.broker_name.to_string(),
            })
            .collect(),
    }
}

/// Creates a topic (0 queues = the broker's default).
#[tracing::instrument(level = "debug", skip_all, fields(topic = %request.name, queues = request.queues))]
pub(crate) async fn create(
    state: &BrokerState,
    request: pb::CreateTopicRequest,
) -> Result<Reply, RequestError> {
    let config = ops::topic::create(state, &request.name, request.queues).await?;
    Ok(Reply::meta(&topic_info(
        state,
        &request.name,
        config.queues,
    )))
}

/// Deletes a topic and its consume queues (the commit-log bytes go with retention).
#[tracing::instrument(level = "debug", skip_all, fields(topic = %request.name))]
pub(crate) async fn delete(
    state: &BrokerState,
    request: pb::DeleteTopicRequest,
) -> Result<Reply, RequestError> {
    ops::topic::delete(state, &request.name).await?;
    Ok(Reply::meta(&pb::Empty {}))
}

/// Every topic with its queues' offsets.
pub(crate) fn list(state: &BrokerState) -> Result<Reply, RequestError> {
    let topics = state
        .topics
        .list()
        .into_iter()
        .map(|(name, config)| topic_info(state, &name, config.queues))
        .collect();
    Ok(Reply::meta(&pb::ListTopicsResponse { topics }))
}

/// One topic's queues and offsets.
pub(crate) fn describe(
    state: &BrokerState,
    request: pb::DescribeTopicRequest,
) -> Result<Reply, RequestError> {
    let queues = state.topics.queues(&request.name)?;
    Ok(Reply::meta(&topic_info(state, &request.name, queues)))
}

/// Grows a topic to `queues` queues in total.
#[tracing::instrument(level = "debug", skip_all, fields(topic = %request.name, queues = request.queues))]
pub(crate) async fn add_queues(
    state: &BrokerState,
    request: pb::AddQueuesRequest,
) -> Result<Reply, RequestError> {
    let config = ops::topic::add_queues(state, &request.name, request.queues).await?;
    Ok(Reply::meta(&topic_info(
        state,
        &request.name,
        config.queues,
    )))
}
