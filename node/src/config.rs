//! Node configuration: command-line flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Everything a node needs to run.
#[derive(Debug, Clone, Args)]
pub struct NodeConfig {
    /// This node's name in logs, metrics and the cluster (default: host name and pid).
    #[arg(long, env = "EQ_NODE_ID")]
    pub node_id: Option<String>,

    /// NATS server(s), comma-separated.
    #[arg(long, env = "EQ_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// NATS user of the node (the service user `eq-node` in `deploy/nats/secure.conf`).
    #[arg(long, env = "EQ_NATS_USER")]
    pub nats_user: Option<String>,

    /// Password of `--nats-user` (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "EQ_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// File holding the node's NATS nkey seed (`SU…`), instead of user and password.
    #[arg(long, env = "EQ_NATS_NKEY_FILE")]
    pub nats_nkey_file: Option<PathBuf>,

    /// HTTP listen address of the gateway.
    #[arg(long, env = "EQ_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// History database: `postgres://…` or `sqlite://…`; default: SQLite under the data dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory for local data (the SQLite history, the dev nats-server's store).
    #[arg(long, env = "EQ_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Prefix of every NATS subject.
    #[arg(long, env = "EQ_PREFIX", default_value = "eq")]
    pub prefix: String,

    /// Number of shards (fixed when the cluster is created).
    #[arg(long, env = "EQ_SHARDS", default_value_t = 64)]
    pub shards: u32,

    /// JetStream replicas of the event stream (3 on a three-server NATS cluster).
    #[arg(long, env = "EQ_REPLICAS", default_value_t = 1)]
    pub replicas: usize,

    /// Most bytes the durable device-ingest stream holds (messages waiting for an owner);
    /// when full, devices' durable publishes are refused rather than old ones dropped.
    /// JetStream reserves this much of its storage when the stream is created.
    #[arg(
        long,
        env = "EQ_INGEST_MAX_BYTES",
        default_value_t = eq_actors::subjects::INGEST_MAX_BYTES,
        // 0 or less would mean "unlimited" to JetStream: no refusal when full.
        value_parser = clap::value_parser!(i64).range(1024..)
    )]
    pub ingest_max_bytes: i64,

    /// Group commit: concurrent appends of different equipment go to JetStream as one
    /// atomic batch (one write, one fsync). Turn it on when nats-server runs with
    /// `sync_interval: always` (it multiplies throughput there); with the default sync
    /// interval single publishes pipeline better (see docs/BENCHMARKS.md).
    #[arg(long, env = "EQ_GROUP_COMMIT", default_value_t = false, action = ArgAction::Set)]
    pub group_commit: bool,

    /// Host shards of equipment actors (a gateway-only node routes every command).
    #[arg(long, env = "EQ_HOST_SHARDS", default_value_t = true, action = ArgAction::Set)]
    pub host_shards: bool,

    /// Seconds a command may wait for its shard's owner (hand-offs) before a 503.
    #[arg(long, env = "EQ_ROUTE_DEADLINE_SECS", default_value_t = 5)]
    pub route_deadline_secs: u64,

    /// Serve the HTTP gateway.
    #[arg(long, env = "EQ_GATEWAY", default_value_t = true, action = ArgAction::Set)]
    pub gateway: bool,

    /// Take device messages from `eq.device.<id>.status`.
    #[arg(long, env = "EQ_DEVICES", default_value_t = true, action = ArgAction::Set)]
    pub devices: bool,

    /// Run the history consumer (one consumer group, however many nodes run it).
    #[arg(long, env = "EQ_HISTORY", default_value_t = true, action = ArgAction::Set)]
    pub history: bool,

    /// Seconds an idle equipment actor runs before it stops and hands its (compact) state
    /// back to its shard.
    #[arg(long, env = "EQ_ACTOR_IDLE_SECS", default_value_t = 30)]
    pub actor_idle_secs: u64,

    /// Seconds an idle machine's state stays in memory at all.
    #[arg(long, env = "EQ_IDLE_TIMEOUT_SECS", default_value_t = 600)]
    pub idle_timeout_secs: u64,

    /// Shifts per site and the downtime-reason catalogue (JSON; see `history/calendar.rs`).
    /// Without it every hour is planned time and every reason unplanned.
    #[arg(long, env = "EQ_CALENDAR_FILE")]
    pub calendar_file: Option<PathBuf>,

    /// Delete raw history events (`equipment_event` rows) older than this many seconds;
    /// 0: keep them forever. Reports read the state spans, which stay; the event log in
    /// JetStream keeps everything (a rebuild restores the rows).
    #[arg(long, env = "EQ_RAW_EVENT_RETENTION_SECS", default_value_t = 0)]
    pub raw_event_retention_secs: u64,

    /// Alert (event `alert_raised`, NATS `eq.alerts.<id>`) when a machine stays red longer
    /// than this many seconds; 0: off.
    #[arg(long, env = "EQ_ALERT_RED_AFTER_SECS", default_value_t = 0)]
    pub alert_red_after_secs: u64,

    /// Alert when a machine's device has not reported for this many seconds; 0: off.
    #[arg(long, env = "EQ_ALERT_DEVICE_SILENT_AFTER_SECS", default_value_t = 0)]
    pub alert_device_silent_after_secs: u64,

    /// Seconds between watchdog checks (run by nodes with the history role).
    #[arg(long, env = "EQ_WATCHDOG_INTERVAL_SECS", default_value_t = 10)]
    pub watchdog_interval_secs: u64,

    /// Seconds between keep-alive comments on live (SSE) streams.
    #[arg(long, env = "EQ_SSE_HEARTBEAT_SECS", default_value_t = 15)]
    pub sse_heartbeat_secs: u64,

    /// Seconds the live hub keeps following the event log after its last SSE client left.
    #[arg(long, env = "EQ_LIVE_LINGER_SECS", default_value_t = 60)]
    pub live_linger_secs: u64,

    /// File(s) holding the key API tokens are signed with (HS256, at least 32 bytes),
    /// comma-separated: the first signs new tokens (`equipment-live token`), every one
    /// verifies (rotation: put the new key first, drop the old one when its tokens expired).
    /// Required when the gateway runs; `dev` creates one under the data dir.
    #[arg(long, env = "EQ_AUTH_KEY_FILE", value_delimiter = ',')]
    pub auth_key_file: Vec<PathBuf>,

    /// The `aud` every token must carry.
    #[arg(long, env = "EQ_AUTH_AUDIENCE", default_value = crate::auth::tokens::DEFAULT_AUDIENCE)]
    pub auth_audience: String,

    /// The `iss` every token must carry (not checked when unset).
    #[arg(long, env = "EQ_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// Sustained requests per second one token may make on one node; 0: no limit.
    #[arg(long, env = "EQ_RATE_LIMIT_PER_SEC", default_value_t = 20.0)]
    pub rate_limit_per_sec: f64,

    /// Requests one token may make at once before the sustained rate applies.
    #[arg(long, env = "EQ_RATE_LIMIT_BURST", default_value_t = 60)]
    pub rate_limit_burst: u32,

    /// Largest accepted HTTP request body, in bytes.
    #[arg(long, env = "EQ_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Sites where a red status needs a reason code (comma-separated).
    #[arg(long, env = "EQ_RED_REASON_SITES", value_delimiter = ',')]
    pub red_reason_sites: Vec<String>,

    /// Export traces over OTLP/gRPC to this endpoint (e.g. `http://otel-collector:4317`);
    /// unset: traces are not exported (trace ids still travel and show in the logs).
    #[arg(long, env = "EQ_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Fraction of new traces exported (0 to 1); a trace started elsewhere (a `traceparent`
    /// from a tablet or device) follows its own sampling decision.
    #[arg(long, env = "EQ_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    pub trace_sample_ratio: f64,

    /// Log format.
    #[arg(long, env = "EQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl NodeConfig {
    /// The node id, defaulting to host name and process id.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "node".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The history database URL (SQLite under the data dir unless `DATABASE_URL` is set).
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("history.db").display()
            )
        })
    }

    /// Token keys and rate limit of the gateway. A node without the gateway answers no API
    /// call, so it needs no key.
    pub fn auth(&self) -> anyhow::Result<crate::auth::Auth> {
        use crate::auth::{Auth, TokenKeys, limiter::RateLimiter};
        let keys = if self.auth_key_file.is_empty() {
            anyhow::ensure!(
                !self.gateway,
                "the gateway needs --auth-key-file (EQ_AUTH_KEY_FILE): a file with a random \
                 key of at least 32 bytes, e.g. `head -c 48 /dev/urandom | base64 > key`"
            );
            let mut unused = vec![0u8; 48];
            rand::fill(&mut unused[..]);
            TokenKeys::new(&[unused], &self.auth_audience, None)?
        } else {
            TokenKeys::load(
                &self.auth_key_file,
                &self.auth_audience,
                self.auth_issuer.as_deref(),
            )?
        };
        Ok(Auth {
            keys,
            limiter: RateLimiter::new(self.rate_limit_per_sec, self.rate_limit_burst),
            revocations: Default::default(),
        })
    }

    pub fn actor_idle(&self) -> Duration {
        Duration::from_secs(self.actor_idle_secs.max(1))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
}
