//! Test harness: starts real servers — nats-server processes on random ports with temporary
//! stores, PostgreSQL (a fresh database on `DATABASE_URL`, or a throwaway cluster), and
//! Equipment Live node processes — and kills them when dropped. Also a small HTTP client of
//! the API and a poll-with-deadline helper (tests wait for conditions, never fixed sleeps).

pub mod auth;
pub mod client;
pub mod load;
pub mod nats;
pub mod node;
pub mod postgres;
pub mod rehearsal;
pub mod sse;

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

pub use client::ApiClient;
pub use nats::{NatsCluster, NatsOptions, NatsServer};
pub use node::{NodeOptions, NodeProcess};
pub use postgres::TestDatabase;

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand it out again at
/// once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// A tool a test runs: the path in `env_var` if set, else `default` under the workspace;
/// panics, naming the script that installs it, if it is not there.
pub fn installed_tool(env_var: &str, default: &str, install_script: &str) -> PathBuf {
    let path = std::env::var(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(default));
    assert!(
        path.exists(),
        "{} not found: run {install_script} (or set {env_var})",
        path.display()
    );
    path
}

/// Polls `check` until it yields `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that history items hold versions 1..=n, each once, in order.
pub fn assert_gapless(what: &str, items: &[serde_json::Value]) {
    let versions: Vec<u64> = items
        .iter()
        .map(|i| i["version"].as_u64().expect("a version"))
        .collect();
    assert_eq!(
        versions,
        (1..=items.len() as u64).collect::<Vec<u64>>(),
        "{what}: history versions must be gapless, ordered and unique"
    );
}

/// Runs the example Pi publisher (`deploy/devices/pi_publisher.py`) with `args`, on the
/// python that `scripts/install-device-example.sh` prepared (`EQ_DEVICE_PYTHON`).
pub async fn run_pi_publisher(args: &[&str]) -> std::process::Output {
    let python = std::env::var("EQ_DEVICE_PYTHON").unwrap_or_else(|_| {
        workspace_root()
            .join(".tools/venv/bin/python")
            .display()
            .to_string()
    });
    let mut command = std::process::Command::new(python);
    command
        .arg(workspace_root().join("deploy/devices/pi_publisher.py"))
        .args(args);
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joining")
        .expect("running the Pi publisher (scripts/install-device-example.sh installs nats-py)")
}
