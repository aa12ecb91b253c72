//! Kafka consumer groups with real Kafka clients: `kafka_groups.py` runs confluent-kafka
//! (librdkafka) and kafka-python against the real `weir serve`; each scenario exits 0 when what
//! a user sees holds. The clients are Python packages `.ci/run` installs; without them (and
//! without `CI=true`) the tests say they were not run.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Node, wait_timeout};

/// Whether `confluent_kafka` and `kafka` import; under CI they must.
fn clients_present(test: &str) -> bool {
    let present = Command::new("python3")
        .args(["-c", "import confluent_kafka, kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "{test} needs python3 with confluent-kafka and kafka-python; .ci/run installs them"
        );
        eprintln!(
            "NOT RUN: {test} needs python3 with confluent-kafka and kafka-python (required under CI=true)"
        );
    }
    present
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/kafka_groups.py")
}

fn kafka(node: &Node) -> String {
    node.kafka_addr
        .clone()
        .expect("the node prints its Kafka address")
}

fn scenario_command(node: &Node, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(script())
        .args(args)
        .args(["--bootstrap", &kafka(node)]);
    cmd
}

/// How long one scenario may run before it is killed: a client stuck in its library (seen
/// once in librdkafka's close) fails the test instead of hanging the suite.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs a scenario that must succeed within [`SCENARIO_TIMEOUT`]; returns its stdout.
fn scenario(node: &Node, args: &[&str]) -> String {
    let mut child = scenario_command(node, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let readers = [
        drain(child.stdout.take().expect("stdout")),
        drain(child.stderr.take().expect("stderr")),
    ];
    let status = wait_timeout(&mut child, SCENARIO_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let [stdout, stderr] = readers.map(|r| r.join().expect("output reader"));
    assert!(
        status.is_some_and(|s| s.success()),
        "scenario {args:?} failed ({}):\n{stdout}\n{stderr}\nnode log:\n{}",
        status.map_or("killed after its timeout".to_owned(), |s| s.to_string()),
        node.log()
    );
    stdout
}

/// Reads a child's output to its end on a thread of its own (a full pipe would stall it).
fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// One group goes 1 → 2 → 3 → 2 → 1 members while records are produced, for each assignor;
/// every record is consumed exactly once among committed work. A failure prints each member's
/// assignments, revocations and commits, and the broker log (debug for the Kafka listener)
/// its group decisions.
#[test]
fn a_group_grows_to_three_members_and_shrinks_with_every_record_consumed_once() {
    if !clients_present(
        "a_group_grows_to_three_members_and_shrinks_with_every_record_consumed_once",
    ) {
        return;
    }
    let _heavy = crate::harness::heavy();
    // Group decisions and commits in the log a failure prints.
    let node = Node::start_with_env(
        &[],
        &[("RUST_LOG", "info,weir_broker::protocols::kafka=debug")],
    );
    for strategy in ["range", "roundrobin", "cooperative-sticky"] {
        let out = scenario(&node, &["grow", "--strategy", strategy]);
        assert!(
            out.contains(&format!("{strategy}: consumed 300, missing 0, twice 0")),
            "{out}"
        );
        assert!(out.contains(&format!("{strategy}: committed 300")), "{out}");
    }
    // Weir's own view of the committed offsets: the same numbers.
    let described = node.ok(&["group", "describe", "g-range"]);
    assert!(described.contains("grow-range"), "{described}");
}

#[test]
fn kafka_python_members_share_a_topic_and_the_survivor_takes_it_all() {
    if !clients_present("kafka_python_members_share_a_topic_and_the_survivor_takes_it_all") {
        return;
    }
    let _heavy = crate::harness::heavy();
    let node = Node::start(&[]);
    let out = scenario(&node, &["python"]);
    assert!(out.contains("kafka-python: read 40"), "{out}");
}

/// A commit and its metadata survive a restart, and a crash the moment the commit is
/// answered: the broker writes it before it answers.
#[test]
fn commit_metadata_survives_a_broker_restart_and_a_crash() {
    if !clients_present("commit_metadata_survives_a_broker_restart_and_a_crash") {
        return;
    }
    let mut node = Node::start(&[]);
    scenario(&node, &["commit"]);
    node.stop();
    node.restart();
    let out = scenario(&node, &["check"]);
    assert!(out.contains("(0, 17, 'state=abc')"), "{out}");

    let mut node = Node::start(&[]);
    let pid = node.pid().to_string();
    let out = scenario(&node, &["commit", "--kill-pid", &pid]);
    assert!(out.contains("broker killed"), "{out}");
    node.kill();
    node.restart();
    let out = scenario(&node, &["check"]);
    assert!(out.contains("(0, 17, 'state=abc')"), "{out}");
}

#[test]
fn a_group_name_is_used_by_one_protocol_at_a_time() {
    if !clients_present("a_group_name_is_used_by_one_protocol_at_a_time") {
        return;
    }
    let _heavy = crate::harness::heavy();
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "t", "--queues", "2"]);
    // Native members first: a Kafka member is refused.
    let native = node.background(&["consume", "t", "--group", "native-g"]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = scenario(&node, &["refused", "--group", "native-g", "--topic", "t"]);
    assert!(out.contains("INCONSISTENT_GROUP_PROTOCOL"), "{out}");
    drop(native);

    // Kafka members first: a native member is told the group is in use.
    let mut holder = scenario_command(
        &node,
        &[
            "hold",
            "--group",
            "kafka-g",
            "--topic",
            "t",
            "--seconds",
            "20",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("run python3");
    let mut stdout = holder.stdout.take().expect("stdout");
    let mut first = [0u8; 8];
    stdout
        .read_exact(&mut first)
        .expect("the Kafka member is assigned");
    assert_eq!(&first, b"assigned");
    let mut native = node
        .client_command(&["consume", "t", "--group", "kafka-g"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    let mut stderr = native.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = native.kill();
    let _ = wait_timeout(&mut native, Duration::from_secs(5));
    let said = reader.join().expect("stderr reader");
    assert!(
        said.contains("in use by Kafka consumers"),
        "the native member was not told: {said}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

/// The admin API (and so the dashboard's group page) shows a group's Kafka members like its
/// native ones: client id, host and the partitions each was assigned; a reset is refused
/// while they are live.
#[test]
fn dashboard_shows_kafka_group_members() {
    if !clients_present("dashboard_shows_kafka_group_members") {
        return;
    }
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "t", "--queues", "3"]);
    let mut holder = scenario_command(
        &node,
        &[
            "hold",
            "--group",
            "kafka-dash",
            "--topic",
            "t",
            "--client-id",
            "billing-7",
            "--seconds",
            "30",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("run python3");
    let mut stdout = holder.stdout.take().expect("stdout");
    let mut first = [0u8; 8];
    stdout
        .read_exact(&mut first)
        .expect("the Kafka member is assigned");
    let http = crate::http_api::Http::new(&node);
    let deadline = Instant::now() + Duration::from_secs(20);
    let group = loop {
        let (status, group) = http.get("/api/v1/groups/kafka-dash");
        let assigned = group["members"][0]["assigned"]
            .as_array()
            .map_or(0, Vec::len);
        if status == 200 && assigned == 3 {
            break group;
        }
        assert!(
            Instant::now() < deadline,
            "the Kafka member and its partitions: {status} {group}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let member = &group["members"][0];
    assert_eq!(member["protocol"], "kafka", "{group}");
    assert_eq!(member["client_id"], "billing-7");
    assert!(
        member["client_addr"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{member}"
    );
    let queues: Vec<u64> = member["assigned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            assert_eq!(q["topic"], "t");
            q["queue_id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(queues, [0, 1, 2]);
    // Each queue names its owner.
    let member_id = member["member_id"].as_str().unwrap();
    assert!(
        group["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["owner"] == member_id),
        "{group}"
    );
    let (_, list) = http.get("/api/v1/groups?limit=10");
    assert_eq!(list["summaries"][0]["group"], "kafka-dash");
    assert_eq!(list["summaries"][0]["members"], 1);
    let (status, refused) = http.post(
        "/api/v1/groups/kafka-dash/reset",
        r#"{"topic":"t","to":"earliest"}"#,
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("live members"),
        "{refused}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}
