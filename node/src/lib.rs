//! The Equipment Live node: one binary that runs the HTTP gateway, hosts shards of
//! equipment actors, listens to devices and writes the history, each switchable by
//! configuration. [`run`] is the entry point that `main.rs` and in-process tests call.

pub mod auth;
pub mod backoff;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod dev;
pub mod devices;
pub mod gateway;
pub mod history;
pub mod ingest;
pub mod live;
pub mod telemetry;
pub mod watchdog;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use eq_actors::equipment::Rules;
use eq_actors::shard::{ShardContext, ShardHost, ShardHostConfig};
use eq_actors::store::EventStore;
use eq_actors::subjects::Subjects;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::NodeConfig;

use cluster::router::Router;

/// Runs a node until `shutdown` is cancelled, then drains: stops taking requests, lets
/// in-flight commands finish, stops the actors.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(config, shutdown, |_| async { Ok(()) }).await
}

/// Like [`run`], with a hook that runs once the node is up (e.g. demo registration).
pub async fn run_with<F, Fut>(
    config: NodeConfig,
    shutdown: CancellationToken,
    on_started: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Arc<Router>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let node_id = config.node_id();
    let metrics = telemetry::metrics();
    let subjects = Subjects::new(&config.prefix);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let auth = config.auth()?;

    let client = connect_nats(&config, &format!("equipment-live {node_id}")).await?;
    let js = jetstream::new(client.clone());
    let store = retry_until_up("event stream", &shutdown, || {
        EventStore::open_with(
            js.clone(),
            subjects.clone(),
            config.replicas,
            config.group_commit,
        )
    })
    .await?;

    let calendar = Arc::new(match &config.calendar_file {
        Some(path) => history::calendar::Calendar::load(path)?,
        None => history::calendar::Calendar::default(),
    });
    let db = if config.gateway || config.history {
        let url = config.database_url();
        Some(retry_until_up("history database", &shutdown, || history::connect(&url)).await?)
    } else {
        None
    };

    let live = live::LivePublisher::start(client.clone(), subjects.clone());
    let ctx = Arc::new(ShardContext {
        store: store.clone(),
        rules: Rules {
            sites_requiring_red_reason: config.red_reason_sites.clone(),
            ..Rules::default()
        },
        listener: Some(live.listener()),
    });
    let shards = ShardHost::new(
        ShardHostConfig {
            shard_count: config.shards,
            actor_idle: config.actor_idle(),
            idle_timeout: config.idle_timeout(),
            ..ShardHostConfig::default()
        },
        ctx,
    );
    retry_until_up("ingest stream", &shutdown, || {
        ingest::ensure_stream(
            &js,
            &subjects,
            config.replicas,
            config.shards,
            config.ingest_max_bytes,
        )
    })
    .await?;
    // Membership, leader and assignment: this node hosts the shards assigned to it (all of
    // them when it is alone).
    let info = cluster::NodeInfo {
        id: node_id.clone(),
        hosts_shards: config.host_shards,
        gateway: config.gateway,
        history: config.history,
        draining: false,
        http_addr: config.http_addr.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    // Not a child of `shutdown`: membership must keep running while the node drains.
    let membership = CancellationToken::new();
    if config.gateway {
        // Loaded before the gateway serves: a restarted node never lets a revoked token in.
        retry_until_up("token revocation list", &shutdown, || {
            auth::revocations::follow(
                &js,
                &subjects,
                config.replicas,
                &auth.revocations,
                membership.clone(),
            )
        })
        .await?;
    }
    let drain_requests = cluster::drain::subscribe(&client, &subjects)
        .await
        .context("subscribing to drain requests")?;
    let cluster = retry_until_up("cluster membership", &shutdown, || {
        cluster::Cluster::start(
            js.clone(),
            client.clone(),
            subjects.clone(),
            shards.clone(),
            info.clone(),
            config.replicas,
            membership.clone(),
        )
    })
    .await?;
    // `POST /v1/admin/nodes/<this node>/drain` taken by another gateway arrives here.
    tokio::spawn(cluster::drain::listen(
        client.clone(),
        drain_requests,
        node_id.clone(),
        shutdown.clone(),
        membership.clone(),
    ));
    let router = Arc::new(cluster::router::Router::new(
        shards.clone(),
        Some(cluster.clone()),
        client.clone(),
        subjects.clone(),
        Duration::from_secs(config.route_deadline_secs.max(1)),
    ));

    let mut tasks = tokio::task::JoinSet::new();
    let workers = shutdown.child_token();
    if config.history
        && let Some(db) = db.clone()
    {
        tasks.spawn(history::consumer::run(
            js.clone(),
            subjects.clone(),
            db,
            workers.clone(),
        ));
    }
    if config.history
        && let Some(db) = db.clone()
    {
        tasks.spawn(watchdog::run(
            db,
            router.clone(),
            watchdog::Limits {
                red_after: Duration::from_secs(config.alert_red_after_secs),
                device_silent_after: Duration::from_secs(config.alert_device_silent_after_secs),
                interval: Duration::from_secs(config.watchdog_interval_secs.max(1)),
            },
            workers.clone(),
        ));
    }
    if config.history
        && let Some(db) = db.clone()
    {
        tasks.spawn(history::maintenance::floor_status_loop(
            db.clone(),
            Duration::from_secs(5),
            workers.clone(),
        ));
        let keep = Duration::from_secs(config.raw_event_retention_secs);
        tasks.spawn(history::maintenance::retention_loop(
            db,
            keep,
            (keep / 2).clamp(Duration::from_secs(1), Duration::from_secs(3600)),
            workers.clone(),
        ));
    }
    if config.devices {
        let (client, subjects, router, token) = (
            client.clone(),
            subjects.clone(),
            router.clone(),
            workers.clone(),
        );
        tasks.spawn(async move {
            if let Err(error) = devices::run(client, subjects, router, token).await {
                warn!(%error, "device listener stopped");
            }
        });
    }

    let live_hub = live::LiveHub::start(
        store.stream().clone(),
        subjects.clone(),
        Duration::from_secs(config.live_linger_secs),
        workers.clone(),
    );
    let state = Arc::new(gateway::AppState {
        router: router.clone(),
        cluster: cluster.clone(),
        shutdown: shutdown.clone(),
        store,
        db,
        nats: client.clone(),
        metrics,
        live: live_hub,
        sse_heartbeat: Duration::from_secs(config.sse_heartbeat_secs.max(1)),
        calendar,
        draining: AtomicBool::new(false),
        node_id: node_id.clone(),
        auth,
    });
    let http_stop = CancellationToken::new();
    let http_stopped = CancellationToken::new();
    if config.gateway {
        let app = gateway::app(
            state.clone(),
            &gateway::GatewayConfig {
                max_body_bytes: config.max_body_bytes,
            },
        );
        let acceptor = gateway::listener::NoDelayAcceptor::bind(config.http_addr)
            .await
            .with_context(|| format!("binding {}", config.http_addr))?;
        let stop = http_stop.clone();
        let done = http_stopped.clone();
        let addr = config.http_addr;
        tasks.spawn(async move {
            info!(%addr, "HTTP gateway listening");
            if let Err(error) = poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(app, stop.cancelled(), Some(Duration::from_secs(10)))
                .await
            {
                warn!(%error, "HTTP server stopped");
            }
            done.cancel();
        });
    } else {
        http_stopped.cancel();
    }

    on_started(router.clone()).await?;
    info!(node = %node_id, nats = %config.nats_url, shards = config.shards, "node ready");

    shutdown.cancelled().await;
    info!("shutting down: draining");
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Hand the shards over first (the gateway keeps routing to their new owners meanwhile),
    // unless no other node could take them.
    // Every step is bounded: with NATS unreachable (say, a dev nats-server that got the same
    // Ctrl-C) the node must still exit.
    let connected = || {
        matches!(
            client.connection_state(),
            async_nats::connection::State::Connected
        )
    };
    let step = Duration::from_secs(3);
    if connected() {
        let _ = tokio::time::timeout(step, cluster.set_draining()).await;
    }
    let me = cluster.node_id().await;
    let others = connected()
        && match tokio::time::timeout(step, cluster.view()).await {
            Ok(view) => view
                .nodes
                .iter()
                .any(|n| n.id != me && n.hosts_shards && !n.draining),
            Err(_) => false,
        };
    if others && !cluster.wait_until_released(Duration::from_secs(20)).await {
        warn!("shards were not all handed over in time");
    }
    // Then the HTTP server finishes in-flight requests (and with them their commands).
    http_stop.cancel();
    http_stopped.cancelled().await;
    workers.cancel();
    while tasks.join_next().await.is_some() {}
    membership.cancel();
    if connected() {
        let _ = tokio::time::timeout(step, cluster.leave()).await;
        let _ = tokio::time::timeout(step, live.flush()).await;
        let _ = tokio::time::timeout(step, client.flush()).await;
    } else {
        cluster.release_local().await;
    }
    info!("node stopped");
    Ok(())
}

/// Connects to NATS with the node's servers and credentials (waits for a server that is not
/// up yet).
pub async fn connect_nats(config: &NodeConfig, name: &str) -> anyhow::Result<async_nats::Client> {
    nats_auth(config)?
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(nats_servers(&config.nats_url)?)
        .await
        .context("connecting to NATS")
}

/// Connect options with the node's NATS credentials, if any.
fn nats_auth(config: &NodeConfig) -> anyhow::Result<async_nats::ConnectOptions> {
    let options = async_nats::ConnectOptions::new();
    if let Some(path) = &config.nats_nkey_file {
        let seed = std::fs::read_to_string(path)
            .with_context(|| format!("reading the nkey seed {}", path.display()))?;
        return Ok(options.nkey(seed.trim().to_string()));
    }
    Ok(match (&config.nats_user, &config.nats_password) {
        (Some(user), Some(password)) => options.user_and_password(user.clone(), password.clone()),
        (Some(_), None) => anyhow::bail!("--nats-user needs --nats-password (or EQ_NATS_PASSWORD)"),
        _ => options,
    })
}

/// Parses `nats://a:4222,nats://b:4222` into the server list (the client tries them all
/// and follows the cluster's own gossip too).
fn nats_servers(urls: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse().with_context(|| format!("invalid NATS URL {u:?}")))
        .collect()
}

/// Retries `attempt` every second until it succeeds or the node shuts down; start-up waits
/// for NATS and the database instead of failing (readiness stays false meanwhile).
async fn retry_until_up<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                // The whole cause chain: the outermost context alone ("creating the ingest
                // stream") does not say what to fix.
                let error = format!("{:#}", error.into());
                warn!(%error, "{what} not available yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shut down before the {what} was available"),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
