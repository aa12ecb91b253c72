//! The classic coordinator's state machine, driven as clients drive it (joins and syncs that
//! wait are spawned tasks).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant, sleep, timeout};

use super::*;
use crate::features::groups::coordinator::{GroupCoordinator, Heartbeat, Mode};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn settings() -> ClassicSettings {
    ClassicSettings {
        min_session_timeout: Duration::from_millis(10),
        ..ClassicSettings::default()
    }
}

fn coordinator_with(settings: ClassicSettings) -> (Arc<ClassicGroups>, Arc<GroupCoordinator>) {
    let native = Arc::new(GroupCoordinator::new(Duration::from_secs(10)));
    (
        Arc::new(ClassicGroups::new(settings, native.clone())),
        native,
    )
}

fn coordinator() -> Arc<ClassicGroups> {
    coordinator_with(settings()).0
}

/// A coordinator whose first rebalance waits 50 ms, so members joining together share it.
fn gathering() -> Arc<ClassicGroups> {
    coordinator_with(ClassicSettings {
        initial_rebalance_delay: Duration::from_millis(50),
        ..settings()
    })
    .0
}

fn protocols(names: &[&str], metadata: &[u8]) -> Vec<Protocol> {
    names
        .iter()
        .map(|name| Protocol {
            name: (*name).to_owned(),
            metadata: Bytes::copy_from_slice(metadata),
        })
        .collect()
}

fn join_request(member_id: &str, metadata: &[u8]) -> JoinRequest {
    JoinRequest {
        group: "g".to_owned(),
        member_id: member_id.to_owned(),
        instance_id: None,
        client_id: "client".to_owned(),
        client_host: "/127.0.0.1".to_owned(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(5),
        protocol_type: "consumer".to_owned(),
        protocols: protocols(&["range"], metadata),
        require_known_member_id: false,
    }
}

fn sync_request(joined: &Joined, assignments: &[(&str, &[u8])]) -> SyncRequest {
    SyncRequest {
        group: "g".to_owned(),
        generation: joined.generation,
        member_id: joined.member_id.clone(),
        instance_id: None,
        protocol_type: Some("consumer".to_owned()),
        protocol: Some(joined.protocol.clone()),
        assignments: assignments
            .iter()
            .map(|(id, a)| ((*id).to_owned(), Bytes::copy_from_slice(a)))
            .collect(),
    }
}

fn spawn_join(
    c: &Arc<ClassicGroups>,
    request: JoinRequest,
) -> JoinHandle<Result<Joined, ClassicError>> {
    let c = c.clone();
    tokio::spawn(async move { c.join(request).await })
}

fn spawn_sync(
    c: &Arc<ClassicGroups>,
    request: SyncRequest,
) -> JoinHandle<Result<Synced, ClassicError>> {
    let c = c.clone();
    tokio::spawn(async move { c.sync(request).await })
}

/// Lets spawned joins and syncs reach their wait.
async fn settle() {
    sleep(Duration::from_millis(20)).await;
}

/// One member joins (v4 style: first asked for a member id) and syncs its own assignment.
async fn first_member(c: &Arc<ClassicGroups>) -> Result<Joined, Box<dyn std::error::Error>> {
    let mut request = join_request("", b"m1");
    request.require_known_member_id = true;
    let id = match c.join(request.clone()).await {
        Err(ClassicError::MemberIdRequired(id)) => id,
        other => return Err(format!("expected MemberIdRequired, got {other:?}").into()),
    };
    assert!(id.starts_with("client-"), "{id}");
    request.member_id = id.clone();
    let joined = c.join(request).await?;
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, id);
    assert_eq!(joined.members.len(), 1);
    assert_eq!(joined.members[0].metadata, Bytes::from_static(b"m1"));
    let synced = c.sync(sync_request(&joined, &[(&id, b"all")])).await?;
    assert_eq!(synced.assignment, Bytes::from_static(b"all"));
    Ok(joined)
}

#[tokio::test]
async fn a_group_grows_from_one_to_three_members_around_its_first_leader() -> TestResult {
    let c = coordinator();
    let m1 = first_member(&c).await?;
    assert_eq!(c.describe("g").map(|d| d.state), Some(GroupState::Stable));

    // m2 joins: its join waits until m1 joins again.
    let m2 = spawn_join(&c, join_request("", b"m2"));
    settle().await;
    assert!(!m2.is_finished());
    assert_eq!(
        c.describe("g").map(|d| d.state),
        Some(GroupState::PreparingRebalance)
    );
    assert_eq!(
        c.heartbeat("g", m1.generation, &m1.member_id, None),
        Err(ClassicError::RebalanceInProgress)
    );
    let m1 = c.join(join_request(&m1.member_id, b"m1")).await?;
    let m2 = m2.await??;
    assert_eq!((m1.generation, m2.generation), (2, 2));
    assert_eq!(m1.leader, m1.member_id);
    assert_eq!(m2.leader, m1.member_id);
    assert_eq!(m1.members.len(), 2, "the leader sees every member");
    assert!(m2.members.is_empty(), "followers see none");
    assert_eq!(m1.protocol, "range");

    // The follower's sync waits for the leader's.
    let s2 = spawn_sync(&c, sync_request(&m2, &[]));
    settle().await;
    assert!(!s2.is_finished());
    assert_eq!(
        c.describe("g").map(|d| d.state),
        Some(GroupState::CompletingRebalance)
    );
    let s1 = c
        .sync(sync_request(
            &m1,
            &[(&m1.member_id, b"p0"), (&m2.member_id, b"p1")],
        ))
        .await?;
    assert_eq!(s1.assignment, Bytes::from_static(b"p0"));
    assert_eq!(s2.await??.assignment, Bytes::from_static(b"p1"));

    // m3 joins; both others rejoin; m1 stays leader.
    let m3 = spawn_join(&c, join_request("", b"m3"));
    settle().await;
    let j2 = spawn_join(&c, join_request(&m2.member_id, b"m2"));
    let m1 = c.join(join_request(&m1.member_id, b"m1")).await?;
    let (m2, m3) = (j2.await??, m3.await??);
    assert_eq!([m1.generation, m2.generation, m3.generation], [3, 3, 3]);
    assert_eq!(m3.leader, m1.member_id);
    let seen: HashSet<&str> = m1.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(
        seen,
        [&m1.member_id, &m2.member_id, &m3.member_id]
            .into_iter()
            .map(String::as_str)
            .collect()
    );
    let s2 = spawn_sync(&c, sync_request(&m2, &[]));
    let s3 = spawn_sync(&c, sync_request(&m3, &[]));
    settle().await;
    c.sync(sync_request(
        &m1,
        &[
            (&m1.member_id, b"a"),
            (&m2.member_id, b"b"),
            (&m3.member_id, b"c"),
        ],
    ))
    .await?;
    assert_eq!(s2.await??.assignment, Bytes::from_static(b"b"));
    assert_eq!(s3.await??.assignment, Bytes::from_static(b"c"));
    let described = c.describe("g").ok_or("no group")?;
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.members[0].member_id, m1.member_id, "leader first");
    assert_eq!(described.members[0].client_host, "/127.0.0.1");
    assert_eq!(described.members[2].assignment, Bytes::from_static(b"c"));
    assert_eq!(
        c.list(),
        vec![GroupListing {
            group: "g".to_owned(),
            protocol_type: "consumer".to_owned(),
            state: GroupState::Stable
        }]
    );
    Ok(())
}

#[tokio::test]
async fn a_known_member_rejoining_unchanged_gets_the_current_generation() -> TestResult {
    let c = coordinator();
    let m1 = first_member(&c).await?;
    let m2 = spawn_join(&c, join_request("", b"m2"));
    settle().await;
    let m1 = c.join(join_request(&m1.member_id, b"m1")).await?;
    let m2 = m2.await??;
    let s2 = spawn_sync(&c, sync_request(&m2, &[]));
    settle().await;
    c.sync(sync_request(&m1, &[(&m2.member_id, b"x")])).await?;
    s2.await??;
    // A follower joining again with the same protocols: no rebalance.
    let again = c.join(join_request(&m2.member_id, b"m2")).await?;
    assert_eq!(again.generation, m2.generation);
    assert_eq!(c.describe("g").map(|d| d.state), Some(GroupState::Stable));
    assert_eq!(
        c.sync(sync_request(&again, &[])).await?.assignment,
        Bytes::from_static(b"x")
    );
    Ok(())
}

#[tokio::test]
async fn the_rebalance_timeout_drops_members_that_do_not_rejoin() -> TestResult {
    let c = coordinator();
    let mut request = join_request("", b"m1");
    request.rebalance_timeout = Duration::from_millis(200);
    let m1 = c.join(request.clone()).await?;
    c.sync(sync_request(&m1, &[])).await?;
    let mut second = join_request("", b"m2");
    second.rebalance_timeout = Duration::from_millis(200);
    let started = Instant::now();
    // m1 never joins again: after the rebalance timeout the group goes on without it.
    let m2 = c.join(second).await?;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(m2.generation, 2);
    assert_eq!(m2.leader, m2.member_id);
    assert_eq!(m2.members.len(), 1);
    assert_eq!(
        c.heartbeat("g", m1.generation, &m1.member_id, None),
        Err(ClassicError::UnknownMember(m1.member_id.clone()))
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_session_removes_the_member_and_the_rest_rebalance() -> TestResult {
    let c = coordinator();
    let mut request = join_request("", b"m1");
    request.session_timeout = Duration::from_millis(150);
    let m1 = c.join(request.clone()).await?;
    c.sync(sync_request(&m1, &[])).await?;
    let mut second = join_request("", b"m2");
    second.session_timeout = Duration::from_millis(150);
    let j2 = spawn_join(&c, second);
    settle().await;
    let m1 = c.join(join_request_like(&request, &m1.member_id)).await?;
    let m2 = j2.await??;
    let s2 = spawn_sync(&c, sync_request(&m2, &[]));
    settle().await;
    c.sync(sync_request(&m1, &[])).await?;
    s2.await??;
    // m1 heartbeats, m2 falls silent: after its session timeout m1 is told to rejoin.
    let mut expired = 0;
    let mut told = false;
    for _ in 0..10 {
        sleep(Duration::from_millis(60)).await;
        expired += c.expire(Instant::now());
        match c.heartbeat("g", m1.generation, &m1.member_id, None) {
            Ok(()) => {}
            Err(ClassicError::RebalanceInProgress) => {
                told = true;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(told);
    assert_eq!(expired, 1);
    assert_eq!(
        c.heartbeat("g", m2.generation, &m2.member_id, None),
        Err(ClassicError::UnknownMember(m2.member_id.clone()))
    );
    let m1 = c.join(join_request_like(&request, &m1.member_id)).await?;
    assert_eq!(m1.generation, 3);
    assert_eq!(m1.members.len(), 1);
    Ok(())
}

fn join_request_like(request: &JoinRequest, member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_owned(),
        require_known_member_id: false,
        ..request.clone()
    }
}

#[tokio::test]
async fn leaving_rebalances_the_rest_and_the_last_leaves_an_empty_group() -> TestResult {
    let c = coordinator();
    let m1 = first_member(&c).await?;
    let j2 = spawn_join(&c, join_request("", b"m2"));
    settle().await;
    let m1 = c.join(join_request(&m1.member_id, b"m1")).await?;
    let m2 = j2.await??;
    let s2 = spawn_sync(&c, sync_request(&m2, &[]));
    settle().await;
    c.sync(sync_request(&m1, &[])).await?;
    s2.await??;
    // The leader leaves: m2 is told to rejoin and becomes the leader.
    assert_eq!(c.leave("g", &m1.member_id, None)?, m1.member_id);
    assert_eq!(
        c.heartbeat("g", m2.generation, &m2.member_id, None),
        Err(ClassicError::RebalanceInProgress)
    );
    let m2 = c.join(join_request(&m2.member_id, b"m2")).await?;
    assert_eq!(m2.leader, m2.member_id);
    assert_eq!(m2.generation, 3);
    assert_eq!(
        c.leave("g", &m1.member_id, None),
        Err(ClassicError::UnknownMember(m1.member_id.clone()))
    );
    c.leave("g", &m2.member_id, None)?;
    assert!(!c.has_members("g"));
    assert!(c.list().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_static_member_returns_without_a_rebalance_and_its_old_id_is_fenced() -> TestResult {
    let c = coordinator();
    let mut request = join_request("", b"s1");
    request.instance_id = Some("host-1".to_owned());
    // A static member needs no MemberIdRequired round trip.
    request.require_known_member_id = true;
    let s1 = c.join(request.clone()).await?;
    assert!(s1.member_id.starts_with("host-1-"), "{}", s1.member_id);
    let mut m2_request = join_request("", b"m2");
    m2_request.protocols = protocols(&["range", "roundrobin"], b"m2");
    let j2 = spawn_join(&c, m2_request.clone());
    settle().await;
    let mut again = request.clone();
    again.member_id = s1.member_id.clone();
    let s1 = c.join(again).await?;
    let m2 = j2.await??;
    let s2 = spawn_sync(&c, sync_request(&m2, &[]));
    settle().await;
    let mut sync = sync_request(&s1, &[(&s1.member_id, b"mine"), (&m2.member_id, b"yours")]);
    sync.instance_id = Some("host-1".to_owned());
    c.sync(sync).await?;
    s2.await??;

    // The static member restarts: a new member id, same slot, no rebalance.
    let back = c.join(request.clone()).await?;
    assert_ne!(back.member_id, s1.member_id);
    assert_eq!(back.generation, s1.generation);
    assert_eq!(back.leader, back.member_id, "it keeps the leadership");
    assert!(back.skip_assignment);
    assert_eq!(c.describe("g").map(|d| d.state), Some(GroupState::Stable));
    c.heartbeat("g", m2.generation, &m2.member_id, None)?;
    let mut sync = sync_request(&back, &[]);
    sync.instance_id = Some("host-1".to_owned());
    assert_eq!(c.sync(sync).await?.assignment, Bytes::from_static(b"mine"));
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat("g", s1.generation, &s1.member_id, Some("host-1")),
        Err(ClassicError::FencedInstance("host-1".to_owned()))
    );
    assert_eq!(
        c.check_commit("g", s1.generation, &s1.member_id, Some("host-1")),
        Err(ClassicError::FencedInstance("host-1".to_owned()))
    );
    c.check_commit("g", back.generation, &back.member_id, Some("host-1"))?;

    // Back preferring another protocol both support: the group's protocol would change, so
    // that is a rebalance.
    let mut changed = request.clone();
    changed.protocols = protocols(&["roundrobin", "range"], b"s1");
    let rejoin = spawn_join(&c, changed);
    settle().await;
    assert_eq!(
        c.heartbeat("g", m2.generation, &m2.member_id, None),
        Err(ClassicError::RebalanceInProgress)
    );
    m2_request.member_id = m2.member_id.clone();
    let m2 = c.join(m2_request).await?;
    let s1 = rejoin.await??;
    assert_eq!(m2.generation, s1.generation);
    assert_eq!(s1.protocol, "roundrobin", "the leader's favourite");
    // Leaving by instance id alone.
    c.leave("g", "", Some("host-1"))?;
    assert_eq!(c.describe("g").map(|d| d.members.len()), Some(1));
    Ok(())
}

#[tokio::test]
async fn stale_generations_and_unknown_members_are_refused() -> TestResult {
    let c = coordinator();
    let m1 = first_member(&c).await?;
    assert_eq!(
        c.heartbeat("g", m1.generation - 1, &m1.member_id, None),
        Err(ClassicError::IllegalGeneration {
            asked: 0,
            current: 1
        })
    );
    let mut stale = sync_request(&m1, &[]);
    stale.generation += 1;
    assert_eq!(
        c.sync(stale).await,
        Err(ClassicError::IllegalGeneration {
            asked: 2,
            current: 1
        })
    );
    assert_eq!(
        c.check_commit("g", 7, &m1.member_id, None),
        Err(ClassicError::IllegalGeneration {
            asked: 7,
            current: 1
        })
    );
    assert_eq!(
        c.heartbeat("g", 1, "nobody", None),
        Err(ClassicError::UnknownMember("nobody".to_owned()))
    );
    assert_eq!(
        c.join(join_request("nobody", b"x")).await,
        Err(ClassicError::UnknownMember("nobody".to_owned()))
    );
    assert_eq!(
        c.heartbeat("other", 1, "nobody", None),
        Err(ClassicError::UnknownMember("nobody".to_owned()))
    );
    let mut wrong = sync_request(&m1, &[]);
    wrong.protocol = Some("roundrobin".to_owned());
    assert!(matches!(
        c.sync(wrong).await,
        Err(ClassicError::InconsistentProtocol(_))
    ));
    Ok(())
}

#[tokio::test]
async fn commits_follow_kafkas_member_and_generation_rules() -> TestResult {
    let c = coordinator();
    // No members: a simple (assign) commit with generation -1 is fine, a generation is not.
    c.check_commit("g", -1, "", None)?;
    assert!(matches!(
        c.check_commit("g", 3, "x", None),
        Err(ClassicError::IllegalGeneration { .. })
    ));
    let m1 = first_member(&c).await?;
    c.check_commit("g", m1.generation, &m1.member_id, None)?;
    assert_eq!(
        c.check_commit("g", -1, "", None),
        Err(ClassicError::UnknownMember(String::new()))
    );
    // While the group waits for members to rejoin, the current generation may still commit
    // (consumers commit before giving partitions up) ...
    let j2 = spawn_join(&c, join_request("", b"m2"));
    settle().await;
    c.check_commit("g", m1.generation, &m1.member_id, None)?;
    // ... but not while the new generation's assignment is awaited.
    let m1 = c.join(join_request(&m1.member_id, b"m1")).await?;
    j2.await??;
    assert_eq!(
        c.check_commit("g", m1.generation, &m1.member_id, None),
        Err(ClassicError::RebalanceInProgress)
    );
    Ok(())
}

#[tokio::test]
async fn the_protocol_is_the_leaders_favourite_among_those_all_support() -> TestResult {
    let c = coordinator();
    let mut first = join_request("", b"1");
    first.protocols = protocols(&["cooperative-sticky", "roundrobin", "range"], b"1");
    let m1 = c.join(first.clone()).await?;
    assert_eq!(m1.protocol, "cooperative-sticky");
    c.sync(sync_request(&m1, &[])).await?;
    let mut second = join_request("", b"2");
    second.protocols = protocols(&["range", "roundrobin"], b"2");
    let j2 = spawn_join(&c, second);
    settle().await;
    first.member_id = m1.member_id.clone();
    let m1 = c.join(first).await?;
    let m2 = j2.await??;
    assert_eq!(
        (m1.protocol.as_str(), m2.protocol.as_str()),
        ("roundrobin", "roundrobin")
    );
    // A member sharing no protocol with the others, or of another protocol type, is refused.
    let mut third = join_request("", b"3");
    third.protocols = protocols(&["sticky"], b"3");
    assert!(matches!(
        c.join(third).await,
        Err(ClassicError::InconsistentProtocol(_))
    ));
    let mut connect = join_request("", b"3");
    connect.protocol_type = "connect".to_owned();
    assert!(matches!(
        c.join(connect).await,
        Err(ClassicError::InconsistentProtocol(_))
    ));
    let mut empty = join_request("", b"");
    empty.group = "h".to_owned();
    empty.protocols.clear();
    assert!(matches!(
        c.join(empty).await,
        Err(ClassicError::InconsistentProtocol(_))
    ));
    Ok(())
}

#[tokio::test]
async fn a_second_rebalance_right_after_the_first_completes() -> TestResult {
    // Cooperative assignors rejoin at once with the partitions they now own in their metadata.
    let c = gathering();
    let mut r1 = join_request("", b"owned:none");
    r1.protocols = protocols(&["cooperative-sticky"], b"owned:none");
    let mut r2 = r1.clone();
    let j1 = spawn_join(&c, r1.clone());
    let j2 = spawn_join(&c, r2.clone());
    let (m1, m2) = (j1.await??, j2.await??);
    assert_eq!(m1.generation, m2.generation);
    let (leader, follower) = if m1.leader == m1.member_id {
        (m1, m2)
    } else {
        (m2, m1)
    };
    let sf = spawn_sync(&c, sync_request(&follower, &[]));
    settle().await;
    c.sync(sync_request(
        &leader,
        &[(&leader.member_id, b"p0"), (&follower.member_id, b"p1")],
    ))
    .await?;
    sf.await??;
    // Both rejoin at once with new metadata: generation + 1, same leader.
    r1.member_id = leader.member_id.clone();
    r1.protocols = protocols(&["cooperative-sticky"], b"owned:p0");
    r2.member_id = follower.member_id.clone();
    r2.protocols = protocols(&["cooperative-sticky"], b"owned:p1");
    let jf = spawn_join(&c, r2);
    let leader2 = c.join(r1).await?;
    let follower2 = jf.await??;
    assert_eq!(leader2.generation, leader.generation + 1);
    assert_eq!(follower2.generation, leader2.generation);
    assert_eq!(leader2.leader, leader.member_id);
    let metadata: BTreeSet<Bytes> = leader2.members.iter().map(|m| m.metadata.clone()).collect();
    assert_eq!(
        metadata,
        [
            Bytes::from_static(b"owned:p0"),
            Bytes::from_static(b"owned:p1")
        ]
        .into_iter()
        .collect()
    );
    let sf = spawn_sync(&c, sync_request(&follower2, &[]));
    settle().await;
    c.sync(sync_request(
        &leader2,
        &[(&leader.member_id, b"p0"), (&follower.member_id, b"p1+p2")],
    ))
    .await?;
    assert_eq!(sf.await??.assignment, Bytes::from_static(b"p1+p2"));
    Ok(())
}

#[tokio::test]
async fn a_group_is_used_by_one_protocol_at_a_time() -> TestResult {
    let (c, native) = coordinator_with(settings());
    native.heartbeat(
        Heartbeat {
            group: "g".to_owned(),
            member_id: "native-1".to_owned(),
            mode: Mode::Clustering,
            topics: ["t".to_owned()].into_iter().collect(),
            held: HashSet::new(),
            connection: 1,
            client_addr: String::new(),
        },
        &|_| 4,
    );
    assert_eq!(
        c.join(join_request("", b"x")).await,
        Err(ClassicError::InUseByNative("g".to_owned()))
    );
    assert_eq!(
        c.check_commit("g", -1, "", None),
        Err(ClassicError::InUseByNative("g".to_owned()))
    );
    assert!(!c.has_members("g"));
    // Once the native member is gone, Kafka members may use it, and the native side sees it.
    native.leave("g", "native-1", &|_| 4);
    c.join(join_request("", b"x")).await?;
    assert!(c.has_members("g"));
    Ok(())
}

#[tokio::test]
async fn members_groups_and_metadata_are_bounded() -> TestResult {
    let (c, _) = coordinator_with(ClassicSettings {
        max_members: 2,
        max_groups: 1,
        max_metadata_bytes: 8,
        initial_rebalance_delay: Duration::from_millis(50),
        ..settings()
    });
    let j1 = spawn_join(&c, join_request("", b"1"));
    let j2 = spawn_join(&c, join_request("", b"2"));
    settle().await;
    assert_eq!(
        c.join(join_request("", b"3")).await,
        Err(ClassicError::GroupFull(2))
    );
    let (m1, m2) = (j1.await??, j2.await??);
    assert_eq!(m1.generation, m2.generation);
    let mut other = join_request("", b"1");
    other.group = "h".to_owned();
    assert_eq!(c.join(other).await, Err(ClassicError::TooManyGroups(1)));
    assert!(matches!(
        c.join(join_request("", b"123456789")).await,
        Err(ClassicError::TooLarge { .. })
    ));
    let mut short = join_request("", b"1");
    short.session_timeout = Duration::from_millis(1);
    assert!(matches!(
        c.join(short).await,
        Err(ClassicError::InvalidSessionTimeout { .. })
    ));
    let mut bad = join_request("", b"1");
    bad.group = "%bad".to_owned();
    assert!(matches!(
        c.join(bad).await,
        Err(ClassicError::InvalidGroupId(_))
    ));
    Ok(())
}

#[tokio::test]
async fn the_initial_delay_gathers_members_into_one_generation() -> TestResult {
    let (c, _) = coordinator_with(ClassicSettings {
        initial_rebalance_delay: Duration::from_millis(150),
        ..settings()
    });
    let started = Instant::now();
    let j1 = spawn_join(&c, join_request("", b"1"));
    sleep(Duration::from_millis(50)).await;
    let j2 = spawn_join(&c, join_request("", b"2"));
    let (m1, m2) = (j1.await??, j2.await??);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!((m1.generation, m2.generation), (1, 1));
    assert_eq!(m1.leader, m1.member_id, "the first joiner leads");
    Ok(())
}

#[tokio::test]
async fn a_sync_that_never_comes_from_the_leader_ends_in_a_new_rebalance() -> TestResult {
    let c = gathering();
    let mut r1 = join_request("", b"1");
    r1.rebalance_timeout = Duration::from_millis(150);
    let mut r2 = r1.clone();
    r2.protocols = protocols(&["range"], b"2");
    let j1 = spawn_join(&c, r1);
    let j2 = spawn_join(&c, r2.clone());
    let (m1, m2) = (j1.await??, j2.await??);
    assert_eq!((m1.generation, m2.generation), (1, 1));
    let follower = if m1.leader == m1.member_id { m2 } else { m1 };
    // Only the follower syncs; the leader is gone.
    let result = timeout(Duration::from_secs(2), c.sync(sync_request(&follower, &[]))).await?;
    assert_eq!(result, Err(ClassicError::RebalanceInProgress));
    r2.member_id = follower.member_id.clone();
    let alone = c.join(r2).await?;
    assert_eq!(alone.leader, follower.member_id);
    assert_eq!(alone.members.len(), 1);
    Ok(())
}
