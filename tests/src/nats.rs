//! A real nats-server child process: random port, temporary JetStream store, killed on drop.
//! It can be stopped and started again on the same port and store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, workspace_root};

/// The nats-server binary: `EQ_NATS_SERVER`, the project's pinned install under `.tools/`,
/// or `nats-server` on `PATH`.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("EQ_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let pinned = workspace_root().join(".tools/venv/bin/nats-server");
    if pinned.exists() {
        return pinned;
    }
    PathBuf::from("nats-server")
}

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// `sync_interval: always`: fsync every write.
    pub sync_always: bool,
    /// More configuration (e.g. a `cluster {}` block).
    pub extra_config: String,
    /// Run this configuration file instead (its listen and monitoring ports are replaced
    /// by free ones; `EQ_NATS_STORE_DIR` points into the temp dir), with these variables.
    pub config_file: Option<std::path::PathBuf>,
    pub env: Vec<(String, String)>,
    /// Internal: skip waiting for the port in `launch` (clustered servers wait later).
    wait: bool,
}

impl NatsOptions {
    /// Runs a configuration file of the project's own (e.g. `deploy/nats/secure.conf`) with
    /// these environment variables.
    pub fn config_file(path: std::path::PathBuf, env: Vec<(String, String)>) -> Self {
        Self {
            config_file: Some(path),
            env,
            ..Self::default()
        }
    }

    /// fsync every write.
    pub fn durable() -> Self {
        Self {
            sync_always: true,
            ..Self::default()
        }
    }
}

/// A running (or stopped) nats-server.
pub struct NatsServer {
    pub port: u16,
    dir: TempDir,
    options: NatsOptions,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream and waits until it accepts connections.
    pub fn start(options: NatsOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("eq-nats-")
            .tempdir()
            .expect("temp dir");
        let mut server = Self {
            port: free_port(),
            dir,
            options,
            child: None,
        };
        server.launch();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    fn launch(&mut self) {
        let sync = if self.options.sync_always {
            "  sync_interval: always\n"
        } else {
            ""
        };
        let config = format!(
            // An explicit `max_file_store`: left out, JetStream takes 75% of the free disk,
            // and on a nearly full build disk it then refuses to create the 1 GiB ingest
            // stream (its size is reserved up front) though the tests store a few MB.
            "listen: 127.0.0.1:{}\nserver_name: eq-test-{}\njetstream {{\n  store_dir: \"{}\"\n  max_file_store: 64GB\n{sync}}}\n{}",
            self.port,
            self.port,
            self.dir.path().join("js").display(),
            self.options.extra_config
        );
        let config_path = match &self.options.config_file {
            Some(path) => path.clone(),
            None => {
                let path = self.dir.path().join("nats.conf");
                std::fs::write(&path, config).expect("writing nats config");
                path
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("nats log");
        let mut command = Command::new(nats_server_binary());
        command.arg("-c").arg(&config_path);
        if self.options.config_file.is_some() {
            command
                .args(["-p", &self.port.to_string(), "-m", "-1"])
                .env("EQ_NATS_STORE_DIR", self.dir.path().join("js"))
                .envs(self.options.env.iter().map(|(k, v)| (k, v)));
        }
        let child = command
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting nats-server (run scripts/install-nats-server.sh)");
        self.child = Some(child);
        if self.options.wait || self.options.extra_config.is_empty() {
            self.wait_listening();
        }
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not come up on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL: as abrupt as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three nats-servers in one JetStream cluster on loopback, each killable on its own.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three clustered servers (JetStream, `sync_interval: always`).
    pub fn start() -> Self {
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for i in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("eq-natsc-")
                .tempdir()
                .expect("temp dir");
            let routes: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("nats-route://127.0.0.1:{}", route_ports[j]))
                .collect();
            let extra = format!(
                "cluster {{\n  name: eq-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                route_ports[i],
                routes.join(", ")
            );
            let mut server = NatsServer {
                port: client_ports[i],
                dir,
                options: NatsOptions {
                    sync_always: true,
                    extra_config: extra,
                    ..NatsOptions::default()
                },
                child: None,
            };
            server.launch();
            servers.push(server);
        }
        for server in &servers {
            server.wait_listening();
        }
        Self { servers }
    }

    /// All three client URLs, comma-separated (what a node is given).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(",")
    }
}
