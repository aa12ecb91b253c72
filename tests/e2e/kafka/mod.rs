//! Weir's Kafka listener against real Kafka clients: Debian's `kcat` and, through the driver
//! script `clients.py` next to this file, Python's confluent-kafka (librdkafka), kafka-python
//! and aiokafka. Each test starts the real `weir` binary, runs the clients against its Kafka
//! port and checks what they report (keys, values, headers, offsets, counts).
//!
//! Needs `kcat` and `pip install confluent-kafka kafka-python==2.3.3 aiokafka` (`.ci/run`
//! installs them). Without them the tests fail under `CI=true` and say they did not run
//! otherwise.

mod admin;
mod clients;
mod cross;
mod groups;
mod proxy;
mod scenario;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Node, wait_timeout};

/// The driver script.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/kafka/clients.py")
}

/// What is missing to run the Kafka client tests, if anything (checked once).
fn missing_clients() -> Option<&'static str> {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    MISSING
        .get_or_init(|| {
            let mut missing = Vec::new();
            let python = Command::new("python3")
                .args(["-c", "import confluent_kafka, kafka, aiokafka"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !python {
                missing.push("python3 with confluent-kafka, kafka-python and aiokafka");
            }
            let kcat = Command::new("kcat")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success());
            if !kcat {
                missing.push("kcat");
            }
            (!missing.is_empty()).then(|| missing.join(", "))
        })
        .as_deref()
}

/// Whether the Kafka clients are installed; under `CI=true` a missing one fails the test.
pub fn clients_ready(test: &str) -> bool {
    let Some(missing) = missing_clients() else {
        return true;
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{test} needs {missing}; .ci/run installs them");
    eprintln!("NOT RUN: {test} needs {missing} (required under CI=true)");
    false
}

/// A node for Kafka tests; topics are auto-created when a client asks for one, and
/// commit-log segments are small (these tests store little; several run at once).
pub fn kafka_node(envs: &[(&str, &str)]) -> Node {
    let mut all = vec![
        ("WEIR_AUTO_CREATE_TOPICS", "true"),
        ("WEIR_SEGMENT_SIZE", "67108864"),
    ];
    all.extend_from_slice(envs);
    let node = Node::start_with_env(&[], &all);
    assert!(
        node.kafka_addr.is_some(),
        "no Kafka listener:\n{}",
        node.log()
    );
    node
}

/// The node's Kafka address.
pub fn bootstrap(node: &Node) -> &str {
    node.kafka_addr.as_deref().expect("Kafka listener")
}

/// Runs `clients.py COMMAND --bootstrap ADDR ARGS...` with `stdin` as JSON; its JSON answer.
/// Panics with the script's stderr (and the node's log) when it fails.
pub fn driver(node: &Node, command: &str, args: &[&str], stdin: Option<&Value>) -> Value {
    driver_at(node, bootstrap(node), command, args, stdin)
}

/// Runs `clients.py COMMAND --bootstrap ADDR ARGS...` with `stdin` as JSON, to its end.
fn run_clients(
    bootstrap: &str,
    command: &str,
    args: &[&str],
    stdin: Option<&Value>,
) -> std::process::Output {
    let mut child = Command::new("python3")
        .arg(script())
        .args([command, "--bootstrap", bootstrap])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let input = stdin.map(|v| v.to_string()).unwrap_or_default();
    let mut pipe = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    // The script has its own deadline (--timeout, 60 s by default); this one is a backstop.
    let out = collect(child, Duration::from_secs(120));
    let _ = writer.join();
    out
}

/// [`driver`] with another bootstrap address (a proxy in front of the node).
pub fn driver_at(
    node: &Node,
    bootstrap: &str,
    command: &str,
    args: &[&str],
    stdin: Option<&Value>,
) -> Value {
    clients_json(bootstrap, command, args, stdin, || {
        format!("node log (tail):\n{}", log_tail(node))
    })
}

/// Runs `clients.py COMMAND --bootstrap ADDR ARGS...` with `stdin` as JSON; its JSON answer.
/// Panics with the script's output and `context` (the brokers' logs) when it fails.
pub fn clients_json(
    bootstrap: &str,
    command: &str,
    args: &[&str],
    stdin: Option<&Value>,
    context: impl FnOnce() -> String,
) -> Value {
    let out = run_clients(bootstrap, command, args, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "clients.py {command} {args:?} failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        context()
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("clients.py {command}: not JSON ({e}): {stdout}\n{stderr}"))
}

/// A `committed` answer as (offset, metadata) per partition. confluent-kafka commits metadata
/// with its C string's trailing NUL; that one NUL is dropped.
pub fn committed_of(out: &Value) -> Vec<(i64, Option<String>)> {
    out["committed"]
        .as_array()
        .expect("a committed list")
        .iter()
        .map(|c| {
            (
                c["offset"].as_i64().unwrap_or(-1),
                c["metadata"]
                    .as_str()
                    .map(|m| m.trim_end_matches('\0').to_owned()),
            )
        })
        .collect()
}

/// Waits for `child` to exit (killing it after `timeout`) and returns its output.
fn collect(mut child: Child, timeout: Duration) -> std::process::Output {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            child.wait().expect("wait")
        }
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The last lines of the node's log, for failure messages.
pub fn log_tail(node: &Node) -> String {
    let log = node.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One message as the driver takes and reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key, `None` for a null key.
    pub key: Option<String>,
    /// The value, `None` for a null value.
    pub value: Option<String>,
    /// The headers in order; a `None` value is a null header value.
    pub headers: Vec<(String, Option<String>)>,
}

impl Record {
    /// A record with a key, a value and no headers.
    pub fn new(key: Option<&str>, value: Option<&str>) -> Record {
        Record {
            key: key.map(str::to_owned),
            value: value.map(str::to_owned),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: Option<&str>) -> Record {
        self.headers
            .push((name.to_owned(), value.map(str::to_owned)));
        self
    }

    /// The driver's input form, to partition `partition`, with an optional timestamp.
    pub fn to_json(&self, partition: i32, timestamp: Option<i64>) -> Value {
        json!({
            "key": self.key,
            "value": self.value,
            "headers": self.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "partition": partition,
            "timestamp": timestamp,
        })
    }

    /// A record from the driver's output.
    pub fn from_json(v: &Value) -> Record {
        Record {
            key: v["key"].as_str().map(str::to_owned),
            value: v["value"].as_str().map(str::to_owned),
            headers: v["headers"]
                .as_array()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h[0].as_str().expect("header name").to_owned(),
                                h[1].as_str().map(str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Produces `records` to one partition with a client; the (partition, offset) of each.
pub fn produce(
    node: &Node,
    client: &str,
    topic: &str,
    partition: i32,
    records: &[Record],
    extra: &[&str],
) -> Vec<(i64, i64)> {
    let input = Value::Array(records.iter().map(|r| r.to_json(partition, None)).collect());
    let mut args = vec!["--client", client, "--topic", topic];
    args.extend_from_slice(extra);
    let out = driver(node, "produce", &args, Some(&input));
    out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Commits `offsets` (`partition:offset,…`) for `group` on `topic` with confluent-kafka, with
/// a metadata string, as a consumer that assigned its partitions would.
pub fn commit(node: &Node, group: &str, topic: &str, offsets: &str, metadata: &str) {
    driver(
        node,
        "commit",
        &[
            "--client",
            "confluent",
            "--group",
            group,
            "--topic",
            topic,
            "--offsets",
            offsets,
            "--metadata",
            metadata,
        ],
        None,
    );
}

/// What a `consume` run reports: the position after the seek and the records read.
pub struct Consumed {
    /// The offset the consumer stood at after its seek (`None`: no record at or after a time).
    pub position: Option<i64>,
    /// (offset, record, timestamp, received at in ms since the epoch).
    pub records: Vec<(i64, Record, i64, i64)>,
}

/// Assigns one partition with a client, seeks and reads `count` records (waiting up to
/// `wait_s` seconds for them).
pub fn consume(
    node: &Node,
    client: &str,
    topic: &str,
    partition: i32,
    seek: &str,
    count: usize,
    wait_s: f64,
) -> Consumed {
    let (p, n, w) = (partition.to_string(), count.to_string(), wait_s.to_string());
    let out = driver(
        node,
        "consume",
        &[
            "--client",
            client,
            "--topic",
            topic,
            "--partition",
            &p,
            "--seek",
            seek,
            "--count",
            &n,
            "--wait",
            &w,
        ],
        None,
    );
    let records = out["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            assert_eq!(r["partition"], partition, "{r}");
            (
                r["offset"].as_i64().unwrap(),
                Record::from_json(r),
                r["timestamp"].as_i64().unwrap(),
                r["received_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    Consumed {
        position: out["position"].as_i64(),
        records,
    }
}

/// A long-running driver process (a group member): its JSON lines as they come; closing its
/// stdin asks it to stop. Killed when dropped.
pub struct Member {
    /// The name the test gave it.
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Member {
    /// Starts `clients.py member` for `group` on `topic`.
    pub fn start(
        node: &Node,
        name: &str,
        client: &str,
        group: &str,
        topic: &str,
        extra: &[&str],
    ) -> Member {
        let mut args = vec!["--client", client, "--group", group, "--topic", topic];
        args.extend_from_slice(extra);
        Member::spawn(name, "member", bootstrap(node), &args)
    }

    /// Starts `clients.py follow` (confluent-kafka) on partitions `0..partitions` of `topic`,
    /// bootstrapped from `bootstrap` (a comma-separated list).
    pub fn follow(name: &str, bootstrap: &str, topic: &str, partitions: u32) -> Member {
        let partitions = partitions.to_string();
        let args = ["--topic", topic, "--partitions", &partitions];
        Member::spawn(name, "follow", bootstrap, &args)
    }

    /// Starts `clients.py COMMAND --bootstrap BOOTSTRAP ARGS...`, a long-running driver.
    fn spawn(name: &str, command: &str, bootstrap: &str, args: &[&str]) -> Member {
        let mut child = Command::new("python3")
            .arg(script())
            .args([command, "--bootstrap", bootstrap])
            .args(args)
            .args(["--timeout", "150"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let err: Arc<Mutex<String>> = Arc::default();
        let err_sink = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut e = err_sink.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        Member {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: err,
        }
    }

    /// The events printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Asks it to leave the group (closes its stdin) and waits for it to exit cleanly.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "member {} did not stop cleanly ({status:?}):\n{}",
            self.name,
            self.stderr()
        );
    }
}

impl Member {
    /// Kills it with SIGKILL, as a crash would: it never leaves the group.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for `done`, panicking with `what()` when it does not come.
pub fn wait_until(timeout: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}
