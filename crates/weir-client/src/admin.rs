//! Administration: topics, consumer groups, offsets and message lookup.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_proto::{ApiKey, ErrorCode, MessageId, pb};

use crate::connection::ConnectionConfig;
use crate::consumer::PullResult;
use crate::consumer::fetcher::pull_once;
use crate::entries;
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;
use crate::pool::Pool;
use crate::route::{RouteCache, TopicRoute};

/// How many times a request for a broker group's leader is made while the group has no
/// leader ready (one being elected, or elected and not serving yet), [`LEADER_WAIT`] apart.
pub(crate) const LEADER_ATTEMPTS: usize = 20;
/// The wait between two of those attempts.
pub(crate) const LEADER_WAIT: Duration = Duration::from_millis(250);

pub use weir_proto::pb::{
    ConsumeMode as GroupMode, DescribeGroupResponse as GroupDescription, GroupListing, GroupMember,
    GroupQueueInfo, OffsetEntry, QueueInfo, SharedQueueProgress, TopicInfo,
};

/// Where [`Admin::reset_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each queue's minimum offset.
    Earliest,
    /// Each queue's maximum offset (skip everything stored so far).
    Latest,
    /// The first offset stored at or after this time, ms since the Unix epoch.
    Timestamp(i64),
}

/// The address of broker group `group`'s leader among `leaders` (as
/// [`crate::ClusterStatus::leaders`] lists them): `no_route` for a group the name servers do
/// not know, `not_leader` (retriable) for one without a leader now.
pub(crate) fn leader_of(leaders: &[(String, Option<String>)], group: &str) -> Result<String> {
    match leaders.iter().find(|(g, _)| g == group) {
        Some((_, Some(addr))) => Ok(addr.clone()),
        Some((_, None)) => Err(ClientError::Server {
            code: ErrorCode::NotLeader,
            message: format!("broker group {group} has no leader now; retry shortly"),
        }),
        None => Err(ClientError::NoRoute(format!(
            "broker group {group} (the name servers know {})",
            leaders
                .iter()
                .map(|(g, _)| g.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The topics several broker groups reported, one per name, each with the queues of every
/// group that has it (by group, then queue id), sorted by name.
fn merge_topics(topics: impl IntoIterator<Item = TopicInfo>) -> Vec<TopicInfo> {
    let mut merged: std::collections::BTreeMap<String, TopicInfo> = Default::default();
    for topic in topics {
        match merged.get_mut(&topic.name) {
            Some(known) => known.queues.extend(topic.queues),
            None => {
                merged.insert(topic.name.clone(), topic);
            }
        }
    }
    let mut out: Vec<TopicInfo> = merged.into_values().collect();
    for topic in &mut out {
        topic
            .queues
            .sort_by(|a, b| (&a.broker_name, a.queue_id).cmp(&(&b.broker_name, b.queue_id)));
    }
    out
}

/// An administrative client. Requests go to the configured servers (the first that answers);
/// when those are name servers (which refuse admin requests), to the leader of every broker
/// group they know. Lookups by message id go straight to the broker group named in the id,
/// when a route known to this client says where it is.
#[derive(Debug)]
pub struct Admin {
    pub(crate) routes: RouteCache,
}

impl Admin {
    /// An admin client for `servers` (`host:port` each). Nothing is connected until used.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Result<Admin> {
        Admin::with_config(servers, ConnectionConfig::default())
    }

    /// Like [`Admin::new`], with connection settings.
    pub fn with_config<S: Into<String>>(
        servers: impl IntoIterator<Item = S>,
        connection: ConnectionConfig,
    ) -> Result<Admin> {
        let pool = Arc::new(Pool::new(connection));
        let servers = servers.into_iter().map(Into::into).collect();
        Ok(Admin {
            routes: RouteCache::new(pool, servers)?,
        })
    }

    /// Sends an admin request to the configured servers (the first that answers). A name
    /// server refuses admin requests (`unsupported_api`): the request then goes to the leader of
    /// every broker group the name servers know, and the first answer is returned — for a change
    /// (`all_must_succeed`), only once every group took it.
    async fn call<Req, Resp>(&self, api: ApiKey, request: &Req) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let all_must_succeed = matches!(
            api,
            ApiKey::CreateTopic | ApiKey::DeleteTopic | ApiKey::AddQueues | ApiKey::ResetOffsets
        );
        let mut answers = self.call_each(api, request, all_must_succeed).await?;
        answers
            .pop()
            .ok_or_else(|| ClientError::Protocol(format!("no answer to {}", api.name())))
    }

    /// Sends `request` to the broker at `addr`; its answer.
    pub(crate) async fn call_at<Req, Resp>(
        &self,
        addr: &str,
        api: ApiKey,
        request: &Req,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.routes.pool().call(addr, api, request).await
    }

    /// Sends an admin request to the configured servers; through name servers, to every broker
    /// group's leader: one answer per group that answered (every group when
    /// `all_must_succeed`, else at least one).
    async fn call_each<Req, Resp>(
        &self,
        api: ApiKey,
        request: &Req,
        all_must_succeed: bool,
    ) -> Result<Vec<Resp>>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        match self.routes.call_any::<Req, Resp>(api, request).await {
            Ok((answer, _)) => return Ok(vec![answer]),
            Err(e) if e.code() != Some(ErrorCode::UnsupportedApi) => return Err(e),
            Err(_) => {}
        }
        // The servers are name servers: ask each broker group's leader.
        let status = self.cluster_status().await?;
        let mut answers = Vec::new();
        let mut failed = None;
        let leaders = status.leaders();
        for (group, _) in &leaders {
            let answer = self
                .call_leader_of::<Req, Resp>(group, &leaders, api, request)
                .await;
            match answer {
                Ok(answer) => answers.push(answer),
                Err(e) if all_must_succeed => return Err(e),
                Err(e) => failed = Some(e),
            }
        }
        if answers.is_empty() {
            return Err(failed.unwrap_or_else(|| {
                ClientError::NoRoute("any broker (the name servers know no broker group)".into())
            }));
        }
        Ok(answers)
    }

    /// Creates `name` with `queues` queues (0 for the broker's default).
    pub async fn create_topic(&self, name: &str, queues: u32) -> Result<TopicInfo> {
        let request = pb::CreateTopicRequest {
            name: name.to_owned(),
            queues,
        };
        self.call(ApiKey::CreateTopic, &request).await
    }

    /// Creates `name` with `queues` queues (0 for the broker's default) in the named broker
    /// groups only, through name servers: to place a topic on some groups, or to grow it onto
    /// a group added to the cluster (its queues there add to the queues it has elsewhere).
    /// Every named group must be known to the name servers and take the topic.
    pub async fn create_topic_in(
        &self,
        name: &str,
        queues: u32,
        groups: &[String],
    ) -> Result<Vec<TopicInfo>> {
        let request = pb::CreateTopicRequest {
            name: name.to_owned(),
            queues,
        };
        let status = self.cluster_status().await?;
        let leaders = status.leaders();
        let mut answers = Vec::with_capacity(groups.len());
        for group in groups {
            answers.push(
                self.call_leader_of(group, &leaders, ApiKey::CreateTopic, &request)
                    .await?,
            );
        }
        Ok(answers)
    }

    /// Sends `request` to broker group `group`'s leader as `leaders` name it; while the group
    /// has no leader ready (`NOT_LEADER`: one being elected, or elected and not serving yet),
    /// asks the name servers again and retries, for up to [`LEADER_ATTEMPTS`] tries. A refused
    /// request was not carried out, so trying it again is safe.
    async fn call_leader_of<Req, Resp>(
        &self,
        group: &str,
        leaders: &[(String, Option<String>)],
        api: ApiKey,
        request: &Req,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut leaders = leaders.to_vec();
        let mut attempt = 1;
        loop {
            let answer = match leader_of(&leaders, group) {
                Ok(addr) => self.call_at::<Req, Resp>(&addr, api, request).await,
                Err(e) => Err(e),
            };
            match answer {
                Err(e) if e.code() == Some(ErrorCode::NotLeader) && attempt < LEADER_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(LEADER_WAIT).await;
                    leaders = self.cluster_status().await?.leaders();
                }
                answer => return answer,
            }
        }
    }

    /// Deletes `name` and its queues.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = pb::DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.call::<_, pb::Empty>(ApiKey::DeleteTopic, &request)
            .await
            .map(drop)
    }

    /// Every topic, with per-queue minimum and maximum offsets.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let answers: Vec<pb::ListTopicsResponse> = self
            .call_each(ApiKey::ListTopics, &pb::Empty {}, false)
            .await?;
        Ok(merge_topics(answers.into_iter().flat_map(|a| a.topics)))
    }

    /// One topic, with per-queue minimum and maximum offsets; through name servers, the
    /// queues of every broker group that has it (each queue names its group).
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        let request = pb::DescribeTopicRequest {
            name: name.to_owned(),
        };
        let answers: Vec<TopicInfo> = self
            .call_each(ApiKey::DescribeTopic, &request, false)
            .await?;
        merge_topics(answers)
            .pop()
            .ok_or_else(|| ClientError::Protocol(format!("no answer describing {name}")))
    }

    /// Grows `name` to `queues` queues in total.
    pub async fn add_queues(&self, name: &str, queues: u32) -> Result<TopicInfo> {
        let request = pb::AddQueuesRequest {
            name: name.to_owned(),
            queues,
        };
        self.call(ApiKey::AddQueues, &request).await
    }

    /// The route of `topic`: which broker serves each queue.
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        self.routes.refresh(topic).await
    }

    /// The names of every consumer group.
    pub async fn list_groups(&self) -> Result<Vec<String>> {
        let answers: Vec<pb::ListGroupsResponse> = self
            .call_each(ApiKey::ListGroups, &pb::Empty {}, false)
            .await?;
        let mut groups: Vec<String> = answers.into_iter().flat_map(|a| a.groups).collect();
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Every consumer group with how it consumes ([`GroupListing::modes`]: clustering,
    /// broadcast, shared). A broker that does not send modes gives groups without any.
    pub async fn list_groups_with_modes(&self) -> Result<Vec<GroupListing>> {
        let response: pb::ListGroupsResponse = self.call(ApiKey::ListGroups, &pb::Empty {}).await?;
        if response.listings.is_empty() {
            return Ok(response
                .groups
                .into_iter()
                .map(|group| GroupListing {
                    group,
                    modes: Vec::new(),
                })
                .collect());
        }
        Ok(response.listings)
    }

    /// A group's modes, members and, per queue, its offsets, lag and owner; for a shared
    /// group's queue also its progress ([`GroupQueueInfo::shared`]).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let request = pb::DescribeGroupRequest {
            group: group.to_owned(),
        };
        self.call(ApiKey::DescribeGroup, &request).await
    }

    /// Moves `group`'s offsets on every queue of `topic`; the group must have no live member.
    /// Returns the new offsets.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<OffsetEntry>> {
        let to = match to {
            ResetTo::Earliest => pb::reset_offsets_request::To::Earliest(true),
            ResetTo::Latest => pb::reset_offsets_request::To::Latest(true),
            ResetTo::Timestamp(ms) => pb::reset_offsets_request::To::TimestampMs(ms),
        };
        let request = pb::ResetOffsetsRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            to: Some(to),
        };
        let response: pb::ResetOffsetsResponse = self.call(ApiKey::ResetOffsets, &request).await?;
        Ok(response.offsets)
    }

    /// The message with id `id`, read from an address serving the broker group the id names
    /// (as this client's routes know it), or from the configured servers when no route names
    /// the group or its address cannot be reached.
    pub async fn get_message(&self, id: &MessageId) -> Result<ReceivedMessage> {
        let request = pb::GetMessageRequest {
            message_id: id.to_string(),
        };
        let direct = match self.routes.cached_addr_of_group(&id.broker) {
            Some(broker) => {
                let answer = async {
                    let conn = self.routes.pool().get(&broker).await?;
                    conn.call::<_, pb::Empty>(ApiKey::GetMessage, &request, Bytes::new(), None)
                        .await
                };
                match answer.await {
                    Ok((_, payload)) => Some(payload),
                    Err(e @ ClientError::Server { .. }) => return Err(e),
                    Err(_) => None,
                }
            }
            None => None,
        };
        let payload = match direct {
            Some(payload) => payload,
            None => match self
                .routes
                .call_any::<_, pb::Empty>(ApiKey::GetMessage, &request)
                .await
            {
                Ok((_, payload)) => payload,
                // Name servers: the leader of the group the id names.
                Err(e) if e.code() == Some(ErrorCode::UnsupportedApi) => {
                    let status = self.cluster_status().await?;
                    let addr = status
                        .leaders()
                        .into_iter()
                        .find(|(group, _)| *group == *id.broker)
                        .and_then(|(_, leader)| leader)
                        .ok_or_else(|| ClientError::Server {
                            code: ErrorCode::MessageNotFound,
                            message: format!("no live leader of broker group {}", id.broker),
                        })?;
                    let conn = self.routes.pool().get(&addr).await?;
                    conn.call::<_, pb::Empty>(ApiKey::GetMessage, &request, Bytes::new(), None)
                        .await?
                        .1
                }
                Err(e) => return Err(e),
            },
        };
        entries::at_index(&payload, Some(&id.broker), id.commit_log_offset, id.index)?.ok_or_else(
            || ClientError::Protocol(format!("GetMessage answered without message {id}")),
        )
    }

    /// Up to `max` messages of `topic` with key `key` (0 for the broker's default, 64), from
    /// every broker serving the topic.
    pub async fn find_by_key(
        &self,
        topic: &str,
        key: &str,
        max: u32,
    ) -> Result<Vec<ReceivedMessage>> {
        let request = pb::FindByKeyRequest {
            topic: topic.to_owned(),
            key: key.to_owned(),
            max,
        };
        let route = self.routes.refresh(topic).await?;
        let mut found = Vec::new();
        for broker in route.named_brokers() {
            let conn = self.routes.pool().get(&broker.addr).await?;
            let (_, payload) = conn
                .call::<_, pb::Empty>(ApiKey::FindByKey, &request, Bytes::new(), None)
                .await?;
            // Entries may hold other keys' messages too.
            found.extend(entries::with_key(
                &payload,
                Some(&broker.name),
                topic,
                key.as_bytes(),
            )?);
        }
        found.sort_by_key(|m| (m.store_timestamp, m.queue_id, m.queue_offset));
        Ok(found)
    }

    /// The first offset of queue `queue_id` of `topic` stored at or after `timestamp_ms`.
    pub async fn offset_for_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<u64> {
        let request = pb::OffsetForTimeRequest {
            topic: topic.to_owned(),
            queue_id,
            timestamp_ms,
        };
        let route = self.routes.refresh(topic).await?;
        let broker = route.broker_of(queue_id)?;
        let conn = self.routes.pool().get(&broker).await?;
        let (response, _) = conn
            .call::<_, pb::OffsetForTimeResponse>(
                ApiKey::OffsetForTime,
                &request,
                Bytes::new(),
                None,
            )
            .await?;
        Ok(response.offset)
    }

    /// Reads up to `max` messages (0: 32) of queue `queue_id` of `topic` from `offset`, outside
    /// any group: no ownership check, nothing committed, no long polling. The answer's
    /// `next_offset` is where to read on.
    pub async fn pull(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: u32,
    ) -> Result<PullResult> {
        let route = self.routes.refresh(topic).await?;
        let broker = route.named_broker_of(queue_id)?;
        let request = pb::PullRequest {
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_messages: max,
            ..pb::PullRequest::default()
        };
        pull_once(self.routes.pool(), &broker, &request).await
    }
}
