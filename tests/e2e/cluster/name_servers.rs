//! Name servers as processes of their own: three `weir nameserver`s and a `weir serve` that
//! registers with every one; clients and the CLI given all three use any that answers.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use weir_client::connection::{Connection, ConnectionConfig};
use weir_client::{ClientError, ErrorCode};
use weir_proto::{ApiKey, pb};

use crate::harness::{NameServer, Node, assert_success, cli_at, ok_at};

/// Writes a broker config registering with `name_servers` every 500 ms; returns its path.
fn broker_config(dir: &tempfile::TempDir, name_servers: &[&NameServer]) -> PathBuf {
    named_broker_config(dir, name_servers, "group-a")
}

/// [`broker_config`] for broker group `broker_name`.
fn named_broker_config(
    dir: &tempfile::TempDir,
    name_servers: &[&NameServer],
    broker_name: &str,
) -> PathBuf {
    let list: Vec<String> = name_servers
        .iter()
        .map(|ns| format!("\"{}\"", ns.addr))
        .collect();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!(
            "name_servers = [{}]\nbroker_name = \"{broker_name}\"\nbroker_heartbeat_interval_ms = 500\n",
            list.join(", ")
        ),
    )
    .expect("write config");
    path
}

/// `weir cluster status --json` against `servers`.
fn cluster_json(servers: &str) -> Value {
    let out = ok_at(servers, &["cluster", "status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad json {out:?}: {e}"))
}

/// Waits until the name servers at `servers` route `topic` (its registration reached them).
fn wait_for_topic(servers: &str, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster_json(servers);
        if status["groups"][0]["topics"][topic].is_number() {
            return;
        }
        assert!(Instant::now() < deadline, "no route to {topic}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn produce(servers: &str, topic: &str, from: usize, count: usize) {
    let input: String = (from..from + count).map(|i| format!("m-{i}\n")).collect();
    let args = ["produce", topic];
    let mut child = std::process::Command::new(crate::harness::WEIR)
        .args(args)
        .env("WEIR_SERVER", servers)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn weir produce");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait produce");
    assert_success(&args, &out);
}

fn http_json(addr: &str, path: &str) -> Value {
    let body = ureq::get(format!("http://{addr}{path}"))
        .call()
        .expect("GET")
        .body_mut()
        .read_to_string()
        .expect("body");
    serde_json::from_str(&body).expect("json")
}

#[test]
fn clients_use_any_live_name_server_while_the_others_die() {
    let mut name_servers = [
        NameServer::start(),
        NameServer::start(),
        NameServer::start(),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broker_config(&dir, &name_servers.iter().collect::<Vec<_>>());
    let node = Node::start(&["--config", config.to_str().expect("utf-8 path")]);
    let servers = name_servers
        .iter()
        .map(|ns| ns.addr.clone())
        .collect::<Vec<_>>()
        .join(",");

    // Admin through the name servers reaches the broker group's leader.
    ok_at(&servers, &["topic", "create", "orders", "--queues", "4"]);
    assert!(ok_at(&servers, &["topic", "list"]).contains("orders"));
    wait_for_topic(&servers, "orders");

    // The cluster as every name server sees it: one group, its one replica leading.
    let status = cluster_json(&servers);
    assert_eq!(status["name_servers"].as_array().map(Vec::len), Some(3));
    assert!(
        status["name_servers"]
            .as_array()
            .expect("list")
            .iter()
            .all(|ns| ns["answered"] == true),
        "{status}"
    );
    let group = &status["groups"][0];
    assert_eq!(group["broker_name"], "group-a", "{status}");
    assert_eq!(group["leader"], 0);
    assert_eq!(group["replicas"][0]["role"], "leader");
    assert_eq!(group["replicas"][0]["addr"], node.addr.as_str());
    assert_eq!(group["replicas"][0]["term"], 0);
    assert_eq!(group["replicas"][0]["lag"], 0);
    let table = ok_at(&servers, &["cluster", "status"]);
    assert!(
        table.contains("group-a") && table.contains("leader"),
        "{table}"
    );

    // The same over HTTP: a name server's own view, and the broker's (from its name servers).
    let from_ns = http_json(&name_servers[0].http_addr, "/api/cluster");
    assert_eq!(from_ns["groups"][0]["broker_name"], "group-a", "{from_ns}");
    let from_broker = http_json(node.http_addr.as_deref().expect("http"), "/api/cluster");
    assert_eq!(
        from_broker["name_servers"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        from_broker["groups"][0]["replicas"][0]["addr"],
        node.addr.as_str()
    );

    // Produce while the name servers die one by one: any live one is enough.
    produce(&servers, "orders", 0, 100);
    name_servers[0].kill();
    produce(&servers, "orders", 100, 100);
    name_servers[1].kill();
    produce(&servers, "orders", 200, 100);
    let status = cluster_json(&servers);
    let answered: Vec<bool> = status["name_servers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|ns| ns["answered"] == true)
        .collect();
    assert_eq!(answered, vec![false, false, true], "{status}");

    let out = ok_at(
        &servers,
        &[
            "consume",
            "orders",
            "--group",
            "g",
            "--from",
            "earliest",
            "--count",
            "300",
            "--format",
            "json",
            "--idle-timeout",
            "10s",
        ],
    );
    let got: BTreeSet<String> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            v["body"].as_str().expect("body").to_owned()
        })
        .collect();
    let want: BTreeSet<String> = (0..300).map(|i| format!("m-{i}")).collect();
    assert_eq!(got, want);
    // Group admin through the one live name server reaches the group's leader too.
    let groups = ok_at(&servers, &["group", "list"]);
    assert!(
        groups
            .lines()
            .any(|l| l.split_whitespace().next() == Some("g")),
        "{groups}"
    );
    let described = ok_at(&servers, &["group", "describe", "g"]);
    assert!(described.contains("orders"), "{described}");

    // With every name server gone, the CLI says so.
    name_servers[2].kill();
    let out = cli_at(&servers, &["cluster", "status"]);
    assert!(!out.status.success());
}

#[test]
fn a_restarted_name_server_learns_the_broker_again_within_a_heartbeat() {
    let mut ns = NameServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broker_config(&dir, &[&ns]);
    let node = Node::start(&["--config", config.to_str().expect("utf-8 path")]);
    node.ok(&["topic", "create", "jobs", "--queues", "2"]);
    wait_for_topic(&ns.addr, "jobs");

    ns.kill();
    ns.restart();
    // Empty after its restart; the broker's next heartbeat (500 ms) fills it again.
    let started = Instant::now();
    wait_for_topic(&ns.addr, "jobs");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "learnt after {:?}",
        started.elapsed()
    );
    produce(&ns.addr, "jobs", 0, 10);

    // A name server refuses what only brokers do, with a typed error.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let refused = runtime.block_on(async {
        let conn = Connection::connect(&ns.addr, ConnectionConfig::default()).await?;
        conn.call::<_, pb::Empty>(ApiKey::ListTopics, &pb::Empty {}, Bytes::new(), None)
            .await
    });
    match refused {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::UnsupportedApi);
            assert!(message.contains("name server"), "{message}");
        }
        other => panic!("expected unsupported_api, got {other:?}"),
    }
}

#[test]
fn a_standalone_node_shows_itself_as_the_leader_of_its_one_replica_group() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "solo", "--queues", "3"]);
    let out = node.ok(&["cluster", "status", "--json"]);
    let status: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(status["name_servers"][0]["answered"], true, "{status}");
    let replica = &status["groups"][0]["replicas"][0];
    assert_eq!(replica["node_id"], 0);
    assert_eq!(replica["role"], "leader");
    assert_eq!(replica["addr"], node.addr.as_str());
    assert_eq!(status["groups"][0]["topics"]["solo"], 3);
    let over_http = http_json(node.http_addr.as_deref().expect("http"), "/api/cluster");
    assert_eq!(over_http["groups"][0]["replicas"][0]["role"], "leader");
    assert_eq!(
        over_http["groups"][0]["replicas"][0]["http_addr"],
        node.http_addr.as_deref().expect("http")
    );
}

/// The messages each queue of `topic` holds on the broker at `addr`, asked directly.
fn messages_on(addr: &str, topic: &str) -> u64 {
    let out = ok_at(addr, &["topic", "describe", topic]);
    out.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let min: u64 = cols.get(1)?.parse().ok()?;
            let max: u64 = cols.get(2)?.parse().ok()?;
            Some(max - min)
        })
        .sum()
}

/// Waits until broker group `group` has registered `topic` with the name servers.
fn wait_for_topic_in(servers: &str, group: &str, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster_json(servers);
        let registered = status["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|g| g["broker_name"] == group && g["topics"][topic].is_number());
        if registered {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} did not register {topic}: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_topic_is_placed_on_the_groups_named_and_grows_onto_a_new_group() {
    let ns = NameServer::start();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let config_a = named_broker_config(&dir_a, &[&ns], "group-a");
    let a = Node::start(&["--config", config_a.to_str().expect("utf-8 path")]);
    let config_b = named_broker_config(&dir_b, &[&ns], "group-b");
    let b = Node::start(&["--config", config_b.to_str().expect("utf-8 path")]);
    let servers = ns.addr.clone();

    // Placed on group-a only: group-b never hears of it.
    let out = ok_at(
        &servers,
        &[
            "topic", "create", "orders", "--queues", "2", "--groups", "group-a",
        ],
    );
    assert!(out.contains("in broker group group-a"), "{out}");
    wait_for_topic_in(&servers, "group-a", "orders");
    produce(&servers, "orders", 0, 20);
    assert_eq!(messages_on(&a.addr, "orders"), 20);
    let on_b = cli_at(&b.addr, &["topic", "describe", "orders"]);
    assert!(!on_b.status.success(), "group-b has the topic");

    // group-b joins the topic: its queues add to group-a's, and producers reach them.
    ok_at(
        &servers,
        &[
            "topic", "create", "orders", "--queues", "2", "--groups", "group-b",
        ],
    );
    wait_for_topic_in(&servers, "group-b", "orders");
    produce(&servers, "orders", 20, 40);
    let (on_a, on_b) = (
        messages_on(&a.addr, "orders"),
        messages_on(&b.addr, "orders"),
    );
    assert_eq!(on_a + on_b, 60, "a {on_a}, b {on_b}");
    assert!(on_b > 0, "a {on_a}, b {on_b}");
    // Through the name servers: one topic of 4 queues, each row naming its group.
    let described = ok_at(&servers, &["topic", "describe", "orders"]);
    assert!(described.contains("orders (4 queues)"), "{described}");
    let groups: Vec<&str> = described
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        groups,
        ["group-a", "group-a", "group-b", "group-b"],
        "{described}"
    );
    let listed = ok_at(&servers, &["topic", "list"]);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("orders")).count(),
        1,
        "{listed}"
    );

    // A group the name servers do not know, or one that has the topic, is refused.
    let unknown = cli_at(&servers, &["topic", "create", "t2", "--groups", "group-z"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        !unknown.status.success() && stderr.contains("group-z"),
        "{stderr}"
    );
    let again = cli_at(
        &servers,
        &["topic", "create", "orders", "--groups", "group-a"],
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("exists"),
        "{stderr}"
    );

    // Without --groups a topic goes to every group.
    ok_at(
        &servers,
        &["topic", "create", "everywhere", "--queues", "1"],
    );
    wait_for_topic_in(&servers, "group-a", "everywhere");
    wait_for_topic_in(&servers, "group-b", "everywhere");
}
