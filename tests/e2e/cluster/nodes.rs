//! The processes of a test cluster: name servers (`weir nameserver`) and the replicas of one
//! broker group (`weir serve --config node-N.toml`), each with its own directory, config file,
//! data directory and log, and the cluster that holds them with the proxies between replicas.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::load::LoadConfig;
use super::proxy::Proxies;
use crate::harness::{WEIR, signal, wait_timeout};

/// How long a process may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one status request may take (a stopped process never answers).
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Lines of each log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Raft timings every replica of a test cluster runs with.
pub const RAFT_HEARTBEAT_MS: u64 = 100;
/// See [`RAFT_HEARTBEAT_MS`].
pub const RAFT_ELECTION_TIMEOUT_MS: u64 = 600;

/// The cluster and broker group names the replicas are configured with.
pub const CLUSTER_NAME: &str = "test";
/// See [`CLUSTER_NAME`].
pub const BROKER_NAME: &str = "broker-a";

/// A free loopback port, held (bound) until the returned listener is dropped: for addresses
/// that must be known before the process that listens on them starts. Drop it just before
/// that process starts.
pub fn reserve_port() -> (SocketAddr, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("free port address");
    (addr, listener)
}

/// Spawns `weir` with `args` in `dir`, its stderr appended to `log`; returns the child and its
/// stdout lines as they come.
fn spawn(args: &[&str], dir: &Path, log: &Path) -> (Child, mpsc::Receiver<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = Command::new(WEIR)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info,openraft=error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn weir");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Once nobody listens, keep draining so the process never blocks on stdout.
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn reap(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running `weir nameserver`.
pub struct NameServer {
    child: Option<Child>,
    /// Where it listens.
    pub addr: String,
    log: PathBuf,
}

impl NameServer {
    /// Starts a name server on a free port, logging into `dir`.
    pub fn start(dir: &Path) -> NameServer {
        std::fs::create_dir_all(dir).expect("name server dir");
        let log = dir.join("weir.log");
        // Registrations every second, so that the cluster status the name servers give
        // (roles, terms, applied indexes) is at most about a second old.
        let (mut child, lines) = spawn(
            &[
                "nameserver",
                "--listen",
                "127.0.0.1:0",
                "--heartbeat-interval-ms",
                "1000",
            ],
            dir,
            &log,
        );
        let line = lines.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "weir nameserver did not start; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let addr = line
            .strip_prefix("weir nameserver on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line of weir nameserver: {line:?}"))
            .to_owned();
        NameServer {
            child: Some(child),
            addr,
            log,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

/// Whether a replica's process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running.
    Running,
    /// Stopped with SIGSTOP (hung): alive, answering nothing.
    Paused,
    /// Not running (killed, or not started yet).
    Down,
}

/// What the Raft side of a replica's config says; `None` for a standalone broker.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Its Raft listener.
    pub listen: SocketAddr,
    /// `"<id>=<addr>"` for every voter: how this node dials each (through the proxies).
    pub peers: Vec<String>,
    /// It joins a running group (`raft_join`) instead of forming one.
    pub join: bool,
}

/// One broker process of the group, with its own directory:
///
/// ```text
///   <dir>/node-N.toml   its config
///   <dir>/data/         its data directory
///   <dir>/weir.log      its stderr, appended over restarts
/// ```
pub struct Replica {
    /// Its Raft node id (0: a standalone broker).
    pub node_id: u64,
    dir: PathBuf,
    name_servers: Vec<String>,
    raft: Option<RaftSettings>,
    child: Option<Child>,
    state: ProcessState,
    /// Its native address, once started (kept over restarts).
    pub addr: Option<String>,
    /// Its HTTP address, once started (kept over restarts).
    pub http_addr: Option<String>,
    /// Whether it opens a Kafka listener.
    kafka: bool,
    /// Its Kafka address, once started (kept over restarts).
    pub kafka_addr: Option<String>,
    /// More config lines, appended to its config file.
    pub extra_config: String,
}

impl Replica {
    fn new(
        node_id: u64,
        dir: PathBuf,
        name_servers: Vec<String>,
        raft: Option<RaftSettings>,
    ) -> Replica {
        std::fs::create_dir_all(&dir).expect("replica dir");
        Replica {
            node_id,
            dir,
            name_servers,
            raft,
            child: None,
            state: ProcessState::Down,
            addr: None,
            http_addr: None,
            kafka: false,
            kafka_addr: None,
            extra_config: String::new(),
        }
    }

    /// Its config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(format!("node-{}.toml", self.node_id))
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("weir.log")
    }

    /// What it logged so far, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether it runs, is paused or is down.
    pub fn state(&self) -> ProcessState {
        self.state
    }

    /// The config file's text. The first start listens on port 0; later ones on the
    /// addresses the first one bound, as a restarted machine would.
    pub fn config_text(&self) -> String {
        let quoted = |items: &[String]| {
            items
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = format!(
            "data_dir = {data_dir:?}\n\
             listen = {listen:?}\n\
             http_listen = {http:?}\n\
             kafka_listen = {kafka:?}\n\
             cluster_name = {CLUSTER_NAME:?}\n\
             broker_name = {BROKER_NAME:?}\n\
             name_servers = [{name_servers}]\n\
             flush = \"sync\"\n\
             broker_heartbeat_interval_ms = 1000\n",
            data_dir = self.data_dir().display().to_string(),
            listen = self.addr.as_deref().unwrap_or("127.0.0.1:0"),
            http = self.http_addr.as_deref().unwrap_or("127.0.0.1:0"),
            kafka = match (&self.kafka_addr, self.kafka) {
                (Some(addr), _) => addr.as_str(),
                (None, true) => "127.0.0.1:0",
                (None, false) => "",
            },
            name_servers = quoted(&self.name_servers),
        );
        if let Some(raft) = &self.raft {
            text.push_str(&format!(
                "node_id = {node_id}\n\
                 raft_listen = \"{listen}\"\n\
                 raft_peers = [{peers}]\n\
                 raft_heartbeat_ms = {RAFT_HEARTBEAT_MS}\n\
                 raft_election_timeout_ms = {RAFT_ELECTION_TIMEOUT_MS}\n",
                node_id = self.node_id,
                listen = raft.listen,
                peers = quoted(&raft.peers),
            ));
            if raft.join {
                text.push_str("raft_join = true\n");
            }
        }
        text.push_str(&self.extra_config);
        text
    }

    /// Writes its config and starts the process; [`Replica::wait_started`] reads its
    /// addresses (separate, so that all replicas of a group start at once).
    fn spawn(&mut self) -> mpsc::Receiver<String> {
        assert_eq!(self.state, ProcessState::Down, "node {} runs", self.node_id);
        std::fs::write(self.config_path(), self.config_text()).expect("write config");
        let config = self.config_path().display().to_string();
        let (child, lines) = spawn(&["serve", "--config", &config], &self.dir, &self.log_path());
        self.child = Some(child);
        self.state = ProcessState::Running;
        lines
    }

    /// Reads the addresses the process prints once it listens.
    fn wait_started(&mut self, lines: mpsc::Receiver<String>) {
        let line = match lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                reap(&mut self.child);
                self.state = ProcessState::Down;
                panic!(
                    "node {} did not start; config:\n{}\nlog:\n{}",
                    self.node_id,
                    self.config_text(),
                    self.log()
                );
            }
        };
        let addr = line
            .strip_prefix("weir listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.addr = Some(addr.to_owned());
        // `weir http on ADDR` follows at once, then `weir kafka on ADDR` when configured.
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
            if let Some(addr) = line.strip_prefix("weir http on ") {
                self.http_addr = Some(addr.to_owned());
            }
            if let Some(addr) = line.strip_prefix("weir kafka on ") {
                self.kafka_addr = Some(addr.to_owned());
            }
            if self.http_addr.is_some() && (!self.kafka || self.kafka_addr.is_some()) {
                break;
            }
        }
        // Keep draining stdout in the reader thread: the receiver goes, the sends fail
        // quietly.
        // From now on the config names the addresses bound: a process that starts itself
        // again (a replica installing a snapshot) listens where it did.
        std::fs::write(self.config_path(), self.config_text()).expect("write config");
    }

    /// Starts it (again), same config and data directory, and waits until it listens.
    pub fn start(&mut self) {
        let lines = self.spawn();
        self.wait_started(lines);
    }

    /// SIGKILL, as a crash would; reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = &self.child
            && self.state == ProcessState::Paused
        {
            // A stopped process dies of SIGKILL too; resume it so nothing lingers.
            signal(child.id(), "CONT");
        }
        reap(&mut self.child);
        self.state = ProcessState::Down;
    }

    /// SIGTERM, and waits for it to exit: a clean shutdown.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("node runs");
        signal(child.id(), "TERM");
        let status = wait_timeout(&mut child, START_TIMEOUT);
        self.state = ProcessState::Down;
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "node {} did not stop on SIGTERM; log:\n{}",
                self.node_id,
                self.log()
            );
        }
    }

    /// SIGSTOP: the process hangs, its sockets stay open.
    pub fn pause(&mut self) {
        let child = self.child.as_ref().expect("node runs");
        signal(child.id(), "STOP");
        // The signal lands asynchronously: wait until the kernel shows the process stopped.
        let stat = format!("/proc/{}/stat", child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let stopped = std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            });
            if stopped {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.state = ProcessState::Paused;
    }

    /// SIGCONT after [`Replica::pause`].
    pub fn resume(&mut self) {
        let child = self.child.as_ref().expect("node runs");
        signal(child.id(), "CONT");
        self.state = ProcessState::Running;
    }

    /// Removes its data directory (the process must be down).
    pub fn wipe(&mut self) {
        assert_eq!(
            self.state,
            ProcessState::Down,
            "kill node {} first",
            self.node_id
        );
        match std::fs::remove_dir_all(self.data_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("wipe {}: {e}", self.data_dir().display()),
        }
    }

    /// Its replica status, asked over HTTP; `None` when it is not running or does not answer.
    pub fn status(&self) -> Option<ReplicaView> {
        if self.state != ProcessState::Running {
            return None;
        }
        replica_view(self.http_addr.as_deref()?, self.node_id)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a replica says of itself: its part in the group's Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    /// Its node id (0 standalone).
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The Raft term it is in.
    pub term: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// The last log index it knows committed.
    pub commit_index: u64,
    /// The last log index it applied (readable by consumers).
    pub applied_index: u64,
    /// The group's voters as it knows them (empty when not published).
    pub voters: Vec<u64>,
}

impl ReplicaView {
    /// Whether it says it leads.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

/// Asks the HTTP listener at `http_addr` for the status of replica `node_id` of
/// [`BROKER_NAME`]. This is the one place that knows where the status is published and how it
/// is shaped, most direct first:
///
/// 1. a `replica` object in `GET /api/v1/broker` (the replica's own view, fresh);
/// 2. its entry in `GET /api/cluster` (`groups[].replicas[]`, as the name servers last heard
///    it, up to a registration interval old);
/// 3. the top-level `role` of `GET /api/v1/broker`: a standalone broker, node 0, term 0.
///
/// Each object has `role` and, when replicated, `node_id`, `term`, `leader_id`,
/// `commit_index`, `applied_index`.
pub fn replica_view(http_addr: &str, node_id: u64) -> Option<ReplicaView> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(STATUS_TIMEOUT))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    // `Err`: the process is not answering (asking again would only wait longer); `Ok(None)`:
    // no such page, or not JSON.
    let get = |path: &str| -> Result<Option<Value>, ()> {
        let mut response = agent
            .get(format!("http://{http_addr}{path}"))
            .call()
            .map_err(|_| ())?;
        if response.status().as_u16() != 200 {
            return Ok(None);
        }
        let body = response.body_mut().read_to_string().map_err(|_| ())?;
        Ok(serde_json::from_str(&body).ok())
    };
    let broker = get("/api/v1/broker").ok()?;
    if let Some(view) = broker
        .as_ref()
        .and_then(|b| b.get("replica"))
        .and_then(parse_view)
    {
        return Some(view);
    }
    if let Some(view) = get("/api/cluster")
        .ok()?
        .and_then(|cluster| parse_cluster_entry(&cluster, node_id))
    {
        return Some(view);
    }
    broker.as_ref().and_then(parse_view)
}

/// A replica's status object.
fn parse_view(object: &Value) -> Option<ReplicaView> {
    let number = |name: &str| object.get(name).and_then(Value::as_u64);
    Some(ReplicaView {
        node_id: number("node_id").unwrap_or(0),
        role: object.get("role")?.as_str()?.to_owned(),
        term: number("term").unwrap_or(0),
        leader_id: number("leader_id"),
        commit_index: number("commit_index").unwrap_or(0),
        applied_index: number("applied_index").unwrap_or(0),
        voters: object
            .get("voters")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
    })
}

/// Replica `node_id` of [`BROKER_NAME`] in a cluster status.
fn parse_cluster_entry(cluster: &Value, node_id: u64) -> Option<ReplicaView> {
    cluster
        .get("groups")?
        .as_array()?
        .iter()
        .filter(|g| g.get("broker_name").and_then(Value::as_str) == Some(BROKER_NAME))
        .flat_map(|g| {
            g.get("replicas")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter(|r| r.get("node_id").and_then(Value::as_u64) == Some(node_id))
        .find_map(parse_view)
}

/// Name servers and one broker group, with a proxy on every directed Raft link.
pub struct Cluster {
    /// The name servers.
    pub name_servers: Vec<NameServer>,
    /// The replicas, node id `i + 1` at index `i` (a standalone broker: node 0 at index 0).
    pub replicas: Vec<Replica>,
    /// The Raft link proxies (none for a standalone broker).
    pub proxies: Proxies,
    // Last, so that it goes after the processes using it.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `name_servers` name servers and a group of `replicas` replicas whose Raft links
    /// all go through proxies, and waits until the group has a leader.
    pub fn start(name_servers: usize, replicas: u64) -> Cluster {
        Cluster::start_with(name_servers, replicas, false)
    }

    /// Like [`Cluster::start`], each replica with a Kafka listener too.
    pub fn start_with_kafka(name_servers: usize, replicas: u64) -> Cluster {
        Cluster::start_with(name_servers, replicas, true)
    }

    /// Like [`Cluster::start`], with `extra` appended to every replica's config file (and to
    /// that of a replica started later with [`Cluster::start_joining`]).
    pub fn start_with_config(name_servers: usize, replicas: u64, extra: &str) -> Cluster {
        Cluster::start_configured(name_servers, replicas, false, extra)
    }

    fn start_with(name_servers: usize, replicas: u64, kafka: bool) -> Cluster {
        Cluster::start_configured(name_servers, replicas, kafka, "")
    }

    fn start_configured(name_servers: usize, replicas: u64, kafka: bool, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let servers = start_name_servers(dir.path(), name_servers);
        let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
        // Held while the proxies bind their own ports, so that none takes one of these.
        let (raft_listens, reserved): (Vec<SocketAddr>, Vec<_>) =
            (0..replicas).map(|_| reserve_port()).unzip();
        let mut proxies = Proxies::new();
        let mut group = Vec::new();
        for i in 1..=replicas {
            let peers = (1..=replicas)
                .map(|j| {
                    let target = raft_listens[(j - 1) as usize];
                    let via = if i == j {
                        target
                    } else {
                        proxies.add_link(i, j, target)
                    };
                    format!("{j}={via}")
                })
                .collect();
            let raft = RaftSettings {
                listen: raft_listens[(i - 1) as usize],
                peers,
                join: false,
            };
            group.push(Replica::new(
                i,
                dir.path().join(format!("node-{i}")),
                addrs.clone(),
                Some(raft),
            ));
        }
        drop(reserved);
        for replica in &mut group {
            replica.kafka = kafka;
            replica.extra_config = extra.to_owned();
        }
        // Start them all before waiting for any: a replica may wait for a quorum.
        let lines: Vec<_> = group.iter_mut().map(Replica::spawn).collect();
        for (replica, lines) in group.iter_mut().zip(lines) {
            replica.wait_started(lines);
        }
        let cluster = Cluster {
            name_servers: servers,
            replicas: group,
            proxies,
            _dir: dir,
        };
        cluster.wait_leader(Duration::from_secs(30));
        cluster
    }

    /// Starts node `id` with an empty data directory and `raft_join`, to be added to the
    /// group; it dials each replica through a new proxy. Returns the address the group's
    /// replicas are to dial it at (one more proxy, `0 → id`, shared by them).
    pub fn start_joining(&mut self, id: u64) -> SocketAddr {
        let (listen, reserved) = reserve_port();
        let mut peers = vec![format!("{id}={listen}")];
        for r in &self.replicas {
            let target = r.raft.as_ref().expect("a replicated group").listen;
            peers.push(format!(
                "{}={}",
                r.node_id,
                self.proxies.add_link(id, r.node_id, target)
            ));
        }
        let inbound = self.proxies.add_link(0, id, listen);
        drop(reserved);
        let dir = self._dir.path().to_path_buf();
        let name_servers = self.name_servers.iter().map(|s| s.addr.clone()).collect();
        let mut replica = Replica::new(
            id,
            dir.join(format!("node-{id}")),
            name_servers,
            Some(RaftSettings {
                listen,
                peers,
                join: true,
            }),
        );
        replica.extra_config = self
            .replicas
            .first()
            .map(|r| r.extra_config.clone())
            .unwrap_or_default();
        replica.start();
        self.replicas.push(replica);
        inbound
    }

    /// Starts `name_servers` name servers and ONE standalone broker (no Raft settings)
    /// registered with them.
    pub fn start_standalone(name_servers: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let servers = start_name_servers(dir.path(), name_servers);
        let addrs = servers.iter().map(|s| s.addr.clone()).collect();
        let mut broker = Replica::new(0, dir.path().join("broker"), addrs, None);
        broker.start();
        Cluster {
            name_servers: servers,
            replicas: vec![broker],
            proxies: Proxies::new(),
            _dir: dir,
        }
    }

    /// What clients are given as `--server`: the name servers, or with none, the brokers'
    /// own addresses (a standalone broker answers routes itself).
    pub fn servers(&self) -> Vec<String> {
        if self.name_servers.is_empty() {
            return self.brokers();
        }
        self.name_servers.iter().map(|s| s.addr.clone()).collect()
    }

    /// The replicas' native addresses.
    pub fn brokers(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter_map(|r| r.addr.clone())
            .collect()
    }

    /// The load's settings for this cluster.
    pub fn load_config(&self) -> LoadConfig {
        LoadConfig::new(self.servers(), self.brokers())
    }

    /// The replica with node id `id`.
    pub fn replica(&mut self, id: u64) -> &mut Replica {
        let i = self.index(id);
        &mut self.replicas[i]
    }

    fn index(&self, id: u64) -> usize {
        self.replicas
            .iter()
            .position(|r| r.node_id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: u64) {
        self.replica(id).kill();
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) {
        self.replica(id).pause();
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) {
        self.replica(id).resume();
    }

    /// Starts node `id` again: same config, same data directory.
    pub fn restart(&mut self, id: u64) {
        self.replica(id).start();
    }

    /// Kills node `id`, wipes its data directory and starts it again, empty.
    pub fn restart_wiped(&mut self, id: u64) {
        let replica = self.replica(id);
        replica.kill();
        replica.wipe();
        replica.start();
    }

    /// Every running replica's status (`None`: it did not answer).
    pub fn statuses(&self) -> Vec<(u64, Option<ReplicaView>)> {
        self.replicas
            .iter()
            .filter(|r| r.state() == ProcessState::Running)
            .map(|r| (r.node_id, r.status()))
            .collect()
    }

    /// The replica that says it leads with the highest term, asked now.
    pub fn leader(&self) -> Option<(u64, ReplicaView)> {
        self.statuses()
            .into_iter()
            .filter_map(|(id, view)| Some((id, view?)))
            .filter(|(_, view)| view.is_leader())
            .max_by_key(|(_, view)| view.term)
    }

    /// Waits up to `timeout` for a leader and returns its node id.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((id, _)) = self.leader() {
                return id;
            }
            if Instant::now() > deadline {
                panic!(
                    "no leader within {timeout:?}; statuses: {:?}\n{}",
                    self.statuses(),
                    self.logs_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `timeout` until node `id` has applied everything the leader had committed
    /// when the wait began (a replica back from the dead, or empty, has caught up).
    pub fn wait_caught_up(&self, id: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let target = loop {
            if let Some((_, leader)) = self.leader() {
                break leader.commit_index;
            }
            assert!(
                Instant::now() < deadline,
                "no leader while waiting for node {id} to catch up"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let replica = &self.replicas[self.index(id)];
        loop {
            let applied = replica.status().map(|v| v.applied_index);
            if applied.is_some_and(|a| a >= target) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "node {id} applied {applied:?} of the leader's {target} within {timeout:?}\n{}",
                    self.logs_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        let mut add = |name: String, log: String| {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            out.push_str(&format!("--- {name}:\n{}\n", tail.join("\n")));
        };
        for ns in &self.name_servers {
            add(format!("name server {}", ns.addr), ns.log());
        }
        for r in &self.replicas {
            add(format!("node {} ({:?})", r.node_id, r.state()), r.log());
        }
        out
    }
}

fn start_name_servers(dir: &Path, count: usize) -> Vec<NameServer> {
    (0..count)
        .map(|i| NameServer::start(&dir.join(format!("ns-{i}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    use serde_json::json;
    use weir_broker::BrokerConfig;

    use super::*;

    #[test]
    fn a_replica_config_is_a_broker_config_naming_its_peers_through_the_proxies() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::new(
            2,
            dir.path().join("node-2"),
            vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            Some(RaftSettings {
                listen: "127.0.0.1:7002".parse().unwrap(),
                peers: vec![
                    "1=127.0.0.1:8021".into(),
                    "2=127.0.0.1:7002".into(),
                    "3=127.0.0.1:8023".into(),
                ],
                join: false,
            }),
        );
        // The broker's own config type, which refuses unknown keys.
        let config: BrokerConfig = Figment::from(Toml::string(&replica.config_text()))
            .extract()
            .unwrap();
        config.validate().unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.kafka_listen.as_deref(), Some(""));
        assert_eq!(config.flush, "sync");
        assert_eq!(config.broker_name, BROKER_NAME);
        assert_eq!(config.raft_listen.as_deref(), Some("127.0.0.1:7002"));
        assert_eq!(
            config.raft_peers,
            ["1=127.0.0.1:8021", "2=127.0.0.1:7002", "3=127.0.0.1:8023"]
        );
        assert_eq!(config.raft_election_timeout_ms, RAFT_ELECTION_TIMEOUT_MS);
        assert_eq!(config.name_servers, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(config.data_dir, dir.path().join("node-2/data"));
    }

    #[test]
    fn a_replica_view_is_read_from_its_own_status_or_the_cluster_status() {
        let own = json!({"broker": "broker-a", "role": "leader", "replica": {"node_id": 3,
            "role": "leader", "term": 7, "leader_id": 3, "commit_index": 120,
            "applied_index": 118}});
        let expected = ReplicaView {
            node_id: 3,
            role: "leader".into(),
            term: 7,
            leader_id: Some(3),
            commit_index: 120,
            applied_index: 118,
            voters: Vec::new(),
        };
        assert_eq!(parse_view(&own["replica"]), Some(expected.clone()));
        let cluster = json!({"name_servers": [{"addr": "127.0.0.1:1", "answered": true}],
            "groups": [
                {"broker_name": "broker-b", "leader": 3, "replicas": [
                    {"node_id": 3, "role": "follower", "term": 1}]},
                {"broker_name": "broker-a", "leader": 3, "replicas": [
                    {"node_id": 1, "role": "follower", "term": 7, "commit_index": 120},
                    {"node_id": 3, "role": "leader", "term": 7, "leader_id": 3,
                     "commit_index": 120, "applied_index": 118, "last_log_index": 121,
                     "lag": 0}]}]});
        assert_eq!(parse_cluster_entry(&cluster, 3), Some(expected));
        assert_eq!(parse_cluster_entry(&cluster, 2), None);
        let standalone = json!({"broker": "broker-a", "role": "leader", "flush": "sync"});
        let view = parse_view(&standalone).unwrap();
        assert!(view.is_leader());
        assert_eq!((view.node_id, view.term), (0, 0));
        assert_eq!(parse_view(&json!({"topics": []})), None);
    }
}
