//! Starts the real `weir` binary on a free loopback port, with its own data directory, and runs
//! CLI commands against it. A test body is the scenario only.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Path of the `weir` binary under test.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// A running `weir serve` process.
pub struct Node {
    child: Option<Child>,
    /// The native protocol address it listens on.
    pub addr: String,
    /// The HTTP address it listens on (from the `weir http on ADDR` line), if it printed one.
    pub http_addr: Option<String>,
    /// The Kafka address it listens on (from the `weir kafka on ADDR` line), if it printed one.
    pub kafka_addr: Option<String>,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Node {
    /// Starts a node on a free port with a fresh data directory.
    pub fn start(extra_args: &[&str]) -> Node {
        Node::start_with_env(extra_args, &[])
    }

    /// Starts a node with extra environment variables.
    pub fn start_with_env(extra_args: &[&str], envs: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = Node {
            child: None,
            addr: "127.0.0.1:0".into(),
            http_addr: None,
            kafka_addr: None,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        node.spawn();
        node
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weir.log")
    }

    /// The `weir serve` command line this node runs with.
    fn serve_command(&self) -> Command {
        let mut cmd = Command::new(WEIR);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(&self.addr)
            .arg("--http")
            .arg(self.http_addr.as_deref().unwrap_or("127.0.0.1:0"));
        if !self.extra_args.iter().any(|a| a == "--kafka") {
            cmd.arg("--kafka")
                .arg(self.kafka_addr.as_deref().unwrap_or("127.0.0.1:0"));
        }
        cmd.args(&self.extra_args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut child = self
            .serve_command()
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn weir serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Once nobody listens, keep draining so the node never blocks on stdout.
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("weir serve did not start; log:\n{}", self.log());
            }
        };
        let addr = line
            .strip_prefix("weir listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.addr = addr.to_string();
        // `weir http on ADDR` and `weir kafka on ADDR` follow at once, when those listeners
        // are open.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            if let Some(addr) = line.strip_prefix("weir http on ") {
                self.http_addr = Some(addr.to_owned());
            } else if let Some(addr) = line.strip_prefix("weir kafka on ") {
                self.kafka_addr = Some(addr.to_owned());
                break;
            }
        }
        self.child = Some(child);
    }

    /// What the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `http://ADDR` of the node's HTTP listener.
    pub fn http_url(&self) -> String {
        format!(
            "http://{}",
            self.http_addr.as_deref().expect("HTTP listener")
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
        }
    }

    /// Stops the process with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        wait_timeout(&mut child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("weir serve did not stop on SIGTERM; log:\n{}", self.log()))
    }

    /// Starts the process again on the same address and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the node first");
        self.spawn();
    }

    /// Runs a client command against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    /// Runs a client command with `stdin` as its standard input.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(WEIR)
            .args(args)
            .env("WEIR_SERVER", &self.addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir");
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.map(<[u8]>::to_vec);
        let writer = std::thread::spawn(move || {
            if let Some(data) = data {
                let _ = input.write_all(&data);
            }
        });
        let output = child.wait_with_output().expect("wait weir");
        let _ = writer.join();
        output
    }

    /// Runs a client command that must succeed, and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_success(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A `weir` client command with the server set, for tests that manage the process.
    pub fn client_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(WEIR);
        cmd.args(args).env("WEIR_SERVER", &self.addr);
        cmd
    }

    /// Starts a client command in the background, collecting its stdout lines as they come.
    pub fn background(&self, args: &[&str]) -> Background {
        let mut child = self
            .client_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weir");
        let stdout = child.stdout.take().expect("stdout");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Background { child, lines }
    }
}

/// A client command running in the background (a consumer, a producer left hanging, a
/// transaction check responder). Killed with SIGKILL when dropped.
pub struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Background {
    /// The stdout lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// How many stdout lines were printed so far.
    pub fn line_count(&self) -> usize {
        self.lines.lock().expect("lines").len()
    }

    /// Waits up to `timeout` for a stdout line that `matches`, and returns it.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| matches(l)) {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Panics with the command's output unless it exited 0.
/// Held by the tests that start many processes at once (a broker group under load, Kafka
/// groups rebalancing against session timeouts): with two cores, two of them side by side
/// starve each other's timers. Other tests run beside them as usual.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn assert_success(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "weir {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends a signal by name (`TERM`, `KILL`, `STOP`, ...) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits for a child to exit, up to `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Resident memory of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A running `weir nameserver` process.
pub struct NameServer {
    child: Option<Child>,
    /// The native protocol address it listens on.
    pub addr: String,
    /// The HTTP address it listens on.
    pub http_addr: String,
    dir: tempfile::TempDir,
}

impl NameServer {
    /// Starts a name server on free ports (native and HTTP).
    pub fn start() -> NameServer {
        let mut ns = NameServer {
            child: None,
            addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ns.spawn();
        ns
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nameserver.log")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut child = Command::new(WEIR)
            .args([
                "nameserver",
                "--listen",
                &self.addr,
                "--http",
                &self.http_addr,
            ])
            .args(["--broker-expiry-ms", "5000"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn weir nameserver");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        while lines.len() < 2 {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => lines.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("weir nameserver did not start; log:\n{}", self.log());
                }
            }
        }
        self.addr = lines[0]
            .strip_prefix("weir nameserver on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
            .to_owned();
        self.http_addr = lines[1]
            .strip_prefix("weir http on ")
            .unwrap_or_else(|| panic!("unexpected second line {:?}", lines[1]))
            .to_owned();
        self.child = Some(child);
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
        }
    }

    /// Starts it again, empty, on the same addresses.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn();
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a `weir` client command against `servers` (comma-separated) and returns its output.
pub fn cli_at(servers: &str, args: &[&str]) -> Output {
    Command::new(WEIR)
        .args(args)
        .env("WEIR_SERVER", servers)
        .stdin(Stdio::null())
        .output()
        .expect("run weir")
}

/// Like [`cli_at`], for a command that must succeed; returns its stdout.
pub fn ok_at(servers: &str, args: &[&str]) -> String {
    let out = cli_at(servers, args);
    assert_success(args, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
