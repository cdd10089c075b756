//! An Equipment Live node as a real child process: started with the built binary, waited
//! for through `/readyz`, and really killed (SIGKILL) or stopped (SIGTERM).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{ApiClient, free_port, wait_for};

/// The node binary: `EQ_NODE_BIN`, or `equipment-live` next to the running test or bench
/// binary's profile directory.
pub fn node_binary() -> PathBuf {
    if let Ok(path) = std::env::var("EQ_NODE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join("equipment-live");
    assert!(
        candidate.exists(),
        "{} not found: build it with `cargo build --bin equipment-live`",
        candidate.display()
    );
    candidate
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub nats_url: String,
    pub database_url: String,
    /// Extra `--flag value` arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// This node's binary; `None`: [`node_binary()`] (e.g. a blue/green rehearsal runs an
    /// older build beside a newer one).
    pub binary: Option<PathBuf>,
    /// Where the node's standard output (its logs) goes; `None`: inherited.
    pub log_file: Option<PathBuf>,
}

impl NodeOptions {
    pub fn new(nats_url: impl Into<String>, database_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            database_url: database_url.into(),
            args: Vec::new(),
            env: Vec::new(),
            binary: None,
            log_file: None,
        }
    }

    /// Appends the node's logs (standard output) to `path`.
    pub fn logs_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Runs this node from `path` instead of [`node_binary()`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Sets an environment variable of the node process (e.g. `EQ_NODE_ID`).
    pub fn env_var(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }
}

/// A running node process.
pub struct NodeProcess {
    pub options: NodeOptions,
    pub http_port: u16,
    data_dir: TempDir,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts a node and waits until `/readyz` says ready.
    pub async fn start(options: NodeOptions) -> Self {
        let mut node = Self::spawn(options);
        node.wait_ready().await;
        node
    }

    /// Starts a node without waiting.
    pub fn spawn(options: NodeOptions) -> Self {
        let data_dir = tempfile::Builder::new()
            .prefix("eq-node-")
            .tempdir()
            .expect("temp dir");
        let mut node = Self {
            options,
            http_port: free_port(),
            data_dir,
            child: None,
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        let binary = self.options.binary.clone().unwrap_or_else(node_binary);
        let mut command = Command::new(binary);
        command
            .arg("--nats-url")
            .arg(&self.options.nats_url)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(&self.options.args)
            .arg("run")
            .env("DATABASE_URL", &self.options.database_url)
            .env(
                "RUST_LOG",
                std::env::var("EQ_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // Every test node trusts the harness's key; tests that exercise the rate limit
            // set it themselves.
            .env("EQ_AUTH_KEY_FILE", crate::auth::key_file())
            .env("EQ_RATE_LIMIT_PER_SEC", "0")
            .stdin(Stdio::null());
        for (k, v) in &self.options.env {
            command.env(k, v);
        }
        if let Some(path) = &self.options.log_file {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("opening the node's log file");
            command.stdout(file);
        }
        self.child = Some(command.spawn().expect("starting the node"));
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.base_url())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self) {
        let client = self.client();
        wait_for("node ready", Duration::from_secs(60), || {
            let client = client.clone();
            async move { client.ready().await.then_some(()) }
        })
        .await;
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit (a graceful drain).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("waiting for the node")
    }

    /// Sends SIGTERM without waiting (the node drains and exits by itself); see
    /// [`Self::try_exit_status`].
    pub fn send_sigterm(&self) {
        self.signal("-TERM");
    }

    /// The exit status if the process has exited (then it counts as stopped), `None` while
    /// it runs (or if it was never started or already reaped).
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Starts the process again (same ports, data dir and options) and waits until ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready().await;
    }

    /// SIGSTOP: the process freezes (no heartbeats, no I/O) without dying, like a node
    /// cut off by a long GC pause or a network partition.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: a paused process runs on, still believing what it believed before.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("node is running");
        let _ = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status();
    }

    /// Starts the process again after `terminate` or `kill` (same ports, data dir, options)
    /// and waits until ready.
    pub async fn relaunch(&mut self) {
        self.launch();
        self.wait_ready().await;
    }

    /// Resident memory of the process in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.pid().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
