//! `equipment-live`: runs a node, a development node with its own nats-server, or prints
//! the OpenAPI spec.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use eq_actors::scope::{Area, Scope};
use eq_node::auth::{Role, TokenKeys};
use eq_node::{NodeConfig, credentials, dev, telemetry};
use tokio_util::sync::CancellationToken;

// mimalloc: glibc malloc took over a quarter of the node's CPU under load (perf), and
// fragments badly with many small long-lived actor states.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "equipment-live",
    version,
    about = "Live status of every machine on a factory floor"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    node: NodeConfig,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node against an existing NATS (the default).
    Run,
    /// Run one node with its own nats-server child and SQLite under the data dir.
    Dev {
        /// Port of the node's own nats-server (devices and dashboards connect here).
        #[arg(long, env = "EQ_DEV_NATS_PORT", default_value_t = 14222)]
        nats_port: u16,
        /// fsync every JetStream write (`sync_interval: always`).
        #[arg(long)]
        sync_always: bool,
        /// Register the demo brick machines.
        #[arg(long)]
        demo: bool,
    },
    /// Issue a NATS credential for one device and print the server config block to add.
    DeviceCredential {
        /// The equipment id the device reports for.
        id: String,
        /// nkey (default: no secret crosses the network) or password.
        #[arg(long, value_enum, default_value = "nkey")]
        kind: credentials::CredentialKind,
    },
    /// Rebuild the history database (`--database-url`, which must be empty) from the event
    /// log in JetStream.
    RebuildHistory,
    /// Check the history database: report every machine whose stored versions are not
    /// contiguous (exit code 1 if any).
    AuditHistory,
    /// Issue an API token (a JWT signed with the first `--auth-key-file`) and print it.
    Token {
        /// Who the token is for: a person, a tablet, a service. Recorded as `updated_by` of
        /// every change made with it.
        #[arg(long)]
        subject: String,
        /// viewer, operator, supervisor or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Where it may change machines: `*`, `<site>` or `<site>/<line>` (repeat the flag
        /// or separate with commas).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// How long it is valid, in hours (at most five years).
        #[arg(long, default_value_t = 12)]
        hours: u64,
    },
    /// Write the OpenAPI spec (to stdout, or to a file).
    Openapi {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init(&telemetry::TelemetryConfig {
        log_format: cli.node.log_format,
        node_id: cli.node.node_id(),
        otlp_endpoint: cli.node.otlp_endpoint.clone(),
        sample_ratio: cli.node.trace_sample_ratio,
    })?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Run => eq_node::run(cli.node, shutdown).await,
        Cmd::Dev {
            nats_port,
            sync_always,
            demo,
        } => {
            let mut config = cli.node;
            let admin_token = dev::ensure_auth(&mut config)?;
            let nats = dev::NatsChild::start(&config.data_dir.join("nats"), nats_port, sync_always)
                .await?;
            tracing::info!(url = %nats.url, "dev nats-server running (devices and dashboards connect here)");
            config.nats_url = nats.url.clone();
            // fsync per write: share fsyncs between machines.
            config.group_commit |= sync_always;
            let board = format!("http://{}/#token={admin_token}", config.http_addr);
            let result = eq_node::run_with(config, shutdown, |router| async move {
                if demo {
                    dev::register_demo(&router).await?;
                    tracing::info!("demo machines registered");
                }
                println!(
                    "\nAdmin token (valid {} h, `Authorization: Bearer <token>`):\n{admin_token}\n\
                     Floor board: {board}\n",
                    dev::DEV_TOKEN_HOURS
                );
                Ok(())
            })
            .await;
            nats.stop().await;
            result
        }
        Cmd::DeviceCredential { id, kind } => {
            let subjects = eq_actors::subjects::Subjects::new(&cli.node.prefix);
            let id = eq_actors::EquipmentId::parse(&id)?;
            let credential = credentials::issue(&subjects, &id, kind)?;
            print!("{}", credentials::render(&subjects, &id, &credential));
            Ok(())
        }
        Cmd::RebuildHistory => {
            let config = cli.node;
            let subjects = eq_actors::subjects::Subjects::new(&config.prefix);
            let client = eq_node::connect_nats(&config, "equipment-live rebuild").await?;
            let db = eq_node::history::connect(&config.database_url()).await?;
            let js = async_nats::jetstream::new(client);
            let rebuilt = eq_node::history::maintenance::rebuild(&js, &subjects, &db).await?;
            println!(
                "rebuilt the history: {} events, up to stream sequence {}",
                rebuilt.events, rebuilt.last_seq
            );
            Ok(())
        }
        Cmd::AuditHistory => {
            let db = eq_node::history::connect(&cli.node.database_url()).await?;
            let gaps = eq_node::history::maintenance::gaps(&db).await?;
            for gap in &gaps {
                println!(
                    "gap: {} holds {} events for versions {}..={}",
                    gap.equipment_id, gap.stored, gap.first_version, gap.last_version
                );
            }
            if gaps.is_empty() {
                println!("no gaps: every machine's stored versions are contiguous");
                Ok(())
            } else {
                std::process::exit(1);
            }
        }
        Cmd::Token {
            subject,
            role,
            scopes,
            hours,
        } => {
            let config = cli.node;
            anyhow::ensure!(
                !config.auth_key_file.is_empty(),
                "--auth-key-file (EQ_AUTH_KEY_FILE) names the key to sign with"
            );
            let keys = TokenKeys::load(
                &config.auth_key_file,
                &config.auth_audience,
                config.auth_issuer.as_deref(),
            )?;
            let scope = Scope(
                scopes
                    .iter()
                    .map(|s| Area::parse(s))
                    .collect::<Result<_, _>>()?,
            );
            // At most five years: a token that outlives its key rotation policy is a liability.
            let valid = std::time::Duration::from_secs(hours.clamp(1, 5 * 366 * 24) * 3600);
            let issued = keys.issue(&subject, role, &scope, valid)?;
            println!("{}", issued.token);
            // On stderr, so that `$(equipment-live token …)` captures the token alone.
            eprintln!(
                "token id {} (revokes this token alone: POST /v1/admin/revocations \
                 {{\"kind\": \"token\", \"value\": \"{}\"}}), expires {}",
                issued.id,
                issued.id,
                chrono::DateTime::from_timestamp(issued.expires_at as i64, 0)
                    .map_or_else(|| issued.expires_at.to_string(), |t| t.to_rfc3339())
            );
            Ok(())
        }
        Cmd::Openapi { out } => {
            let spec = eq_node::gateway::spec_json();
            match out {
                Some(path) => std::fs::write(path, spec)?,
                None => println!("{spec}"),
            }
            Ok(())
        }
    }
}

fn parse_role(value: &str) -> Result<Role, String> {
    Role::parse(value).ok_or_else(|| "one of viewer, operator, supervisor, admin".to_string())
}

/// SIGTERM or Ctrl-C starts a graceful drain; a second one exits at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        for _ in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if shutdown.is_cancelled() {
                std::process::exit(130);
            }
            shutdown.cancel();
        }
    });
}
