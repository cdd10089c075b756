//! The cluster: membership, leader election and shard assignment in JetStream KV, and the
//! reconciliation that makes this node host exactly the shards assigned to it.
//!
//! - Every node puts `nodes/<id>` every second; the bucket's `max_age` makes a dead node's key
//!   vanish after [`NODE_TTL`].
//! - One leader holds the lease `LEADER/leader` (taken with create-if-absent, renewed by
//!   revision; the bucket's `max_age` frees it when the leader dies) and writes
//!   `CLUSTER/assignment` whenever the live, non-draining shard hosts change, moving as few
//!   shards as possible.
//! - Every node watches `CLUSTER/assignment` and hosts or releases shards to match. A stale
//!   owner that has not noticed yet cannot write: JetStream fences its appends.

pub mod assignment;
pub mod drain;
pub mod router;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use eq_actors::ShardId;
use eq_actors::shard::ShardHost;
use eq_actors::subjects::Subjects;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ingest::IngestWorkers;
use assignment::{Assignment, assign};
use router::ShardServer;

/// How often a node renews its membership (and the leader its lease).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node (or leader) that stops renewing is gone after this long.
pub const NODE_TTL: Duration = Duration::from_secs(3);

const LEADER_KEY: &str = "leader";
const ASSIGNMENT_KEY: &str = "assignment";

/// What a node announces about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    pub hosts_shards: bool,
    pub gateway: bool,
    pub history: bool,
    pub draining: bool,
    pub http_addr: String,
    pub version: String,
}

/// A point-in-time view of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub me: String,
    pub leader: Option<String>,
    pub nodes: Vec<NodeInfo>,
    pub assignment: Assignment,
}

/// This node's part in the cluster.
pub struct Cluster {
    info: Mutex<NodeInfo>,
    shard_count: u32,
    nodes: kv::Store,
    lease: kv::Store,
    control: kv::Store,
    shards: Arc<ShardHost>,
    server: ShardServer,
    ingest: Arc<IngestWorkers>,
    assignment: watch::Sender<Assignment>,
    applied: AtomicBool,
}

/// The KV bucket `config` names, created with that config if it does not exist yet.
pub async fn open_bucket(js: &jetstream::Context, config: kv::Config) -> anyhow::Result<kv::Store> {
    match js.get_key_value(config.bucket.clone()).await {
        Ok(store) => Ok(store),
        Err(_) => Ok(js.create_key_value(config).await?),
    }
}

impl Cluster {
    /// Joins the cluster and starts the membership, leader and reconciliation loops.
    pub async fn start(
        js: jetstream::Context,
        client: async_nats::Client,
        subjects: Subjects,
        shards: Arc<ShardHost>,
        info: NodeInfo,
        replicas: usize,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let bucket = |what: &str, description: &str, max_age: Duration| {
            subjects.bucket_config(what, description, max_age, replicas)
        };
        let nodes = open_bucket(&js, bucket("NODES", "live nodes (heartbeats)", NODE_TTL)).await?;
        let lease = open_bucket(&js, bucket("LEADER", "the leader's lease", NODE_TTL)).await?;
        // No max_age (zero): the assignment must outlive any leader, so that a new leader
        // moves as few shards as the old one would have.
        let control =
            open_bucket(&js, bucket("CLUSTER", "shard assignment", Duration::ZERO)).await?;
        let (assignment, _) = watch::channel(Assignment::default());
        let cluster = Arc::new(Self {
            info: Mutex::new(info),
            shard_count: shards.config().shard_count,
            nodes,
            lease,
            control,
            ingest: IngestWorkers::new(
                js.clone(),
                client.clone(),
                subjects.clone(),
                shards.clone(),
            ),
            server: ShardServer::new(client, subjects, shards.clone()),
            shards,
            assignment,
            applied: AtomicBool::new(false),
        });
        cluster.heartbeat().await;
        tokio::spawn(cluster.clone().membership_loop(shutdown.clone()));
        tokio::spawn(cluster.clone().watch_loop(shutdown));
        Ok(cluster)
    }

    pub async fn node_id(&self) -> String {
        self.info.lock().await.id.clone()
    }

    /// The current owner of a shard.
    pub fn owner_of(&self, shard: ShardId) -> Option<String> {
        self.assignment
            .borrow()
            .owner_of(shard.0)
            .map(str::to_string)
    }

    /// Whether this node has applied an assignment (it knows which shards are its own).
    pub fn is_settled(&self) -> bool {
        self.applied.load(Ordering::Relaxed)
    }

    /// Announces that this node is leaving: the leader moves its shards away.
    pub async fn set_draining(&self) {
        self.info.lock().await.draining = true;
        self.heartbeat().await;
    }

    /// Waits until this node hosts no shard (they moved), or the timeout.
    pub async fn wait_until_released(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.shards.hosted().is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Leaves: stops hosting, gives up leadership and membership at once (no TTL wait).
    pub async fn leave(&self) {
        let me = self.node_id().await;
        self.ingest.stop_all().await;
        self.server.stop_all().await;
        self.shards.release_all();
        if let Ok(Some(entry)) = self.lease.entry(LEADER_KEY).await
            && entry.value.as_ref() == me.as_bytes()
        {
            let _ = self.lease.delete(LEADER_KEY).await;
        }
        let _ = self.nodes.delete(&me).await;
    }

    /// Stops hosting everything without telling the cluster (NATS is unreachable; the
    /// heartbeat expiring tells the others).
    pub async fn release_local(&self) {
        self.ingest.stop_all().await;
        self.server.stop_all().await;
        self.shards.release_all();
    }

    /// Nodes, leader and assignment, as seen now.
    pub async fn view(&self) -> ClusterView {
        let leader = match self.lease.get(LEADER_KEY).await {
            Ok(Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
            _ => None,
        };
        ClusterView {
            me: self.node_id().await,
            leader,
            nodes: self.live_nodes().await,
            assignment: self.assignment.borrow().clone(),
        }
    }

    async fn heartbeat(&self) {
        let info = self.info.lock().await.clone();
        let value = serde_json::to_vec(&info).unwrap_or_default();
        if let Err(error) = self.nodes.put(&info.id, Bytes::from(value)).await {
            warn!(%error, "heartbeat failed");
        }
    }

    async fn live_nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = Vec::new();
        let Ok(mut keys) = self.nodes.keys().await else {
            return nodes;
        };
        while let Some(Ok(key)) = keys.next().await {
            if let Ok(Some(value)) = self.nodes.get(&key).await
                && let Ok(info) = serde_json::from_slice::<NodeInfo>(&value)
            {
                nodes.push(info);
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// Heartbeat, and (as leader) keep the assignment in line with the live nodes.
    async fn membership_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT / 2);
        let mut lease: Option<u64> = None;
        let mut beat = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            beat += 1;
            if beat.is_multiple_of(2) {
                self.heartbeat().await;
            }
            let me = self.node_id().await;
            lease = self.hold_lease(&me, lease).await;
            metrics::gauge!("eq_cluster_leader").set(if lease.is_some() { 1.0 } else { 0.0 });
            if lease.is_some()
                && let Err(error) = self.lead().await
            {
                warn!(%error, "could not update the shard assignment");
            }
        }
    }

    /// Takes or renews the leader lease; `Some(revision)` while this node leads.
    async fn hold_lease(&self, me: &str, lease: Option<u64>) -> Option<u64> {
        let value = Bytes::from(me.as_bytes().to_vec());
        match lease {
            Some(revision) => self.lease.update(LEADER_KEY, value, revision).await.ok(),
            None => match self.lease.create(LEADER_KEY, value).await {
                Ok(revision) => {
                    info!(node = me, "became leader");
                    Some(revision)
                }
                Err(_) => None,
            },
        }
    }

    /// As leader: computes the assignment from the live, non-draining shard hosts.
    async fn lead(&self) -> anyhow::Result<()> {
        let live: Vec<String> = self
            .live_nodes()
            .await
            .into_iter()
            .filter(|n| n.hosts_shards && !n.draining)
            .map(|n| n.id)
            .collect();
        let current = match self.control.get(ASSIGNMENT_KEY).await? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => Assignment::default(),
        };
        let next = assign(&current, &live, self.shard_count);
        if next.epoch != current.epoch {
            let value = Bytes::from(serde_json::to_vec(&next)?);
            self.control.put(ASSIGNMENT_KEY, value).await?;
            info!(
                epoch = next.epoch,
                nodes = live.len(),
                "shard assignment changed"
            );
            metrics::counter!("eq_assignment_changes_total").increment(1);
        }
        Ok(())
    }

    /// Follows the assignment and hosts exactly this node's shards.
    async fn watch_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let mut watch = match self.control.watch(ASSIGNMENT_KEY).await {
                Ok(w) => w,
                Err(error) => {
                    warn!(%error, "cannot watch the assignment; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Ok(Some(v)) = self.control.get(ASSIGNMENT_KEY).await
                && let Ok(a) = serde_json::from_slice::<Assignment>(&v)
            {
                self.apply(a).await;
            }
            loop {
                let entry = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    entry = watch.next() => entry,
                };
                match entry {
                    Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                        if let Ok(a) = serde_json::from_slice::<Assignment>(&entry.value) {
                            self.apply(a).await;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        }
    }

    /// Hosts the shards assigned here and releases the others.
    async fn apply(&self, next: Assignment) {
        if next.owners.len() != self.shard_count as usize {
            return;
        }
        let unchanged = {
            let current = self.assignment.borrow();
            current.epoch == next.epoch && self.is_settled()
        };
        if unchanged {
            return;
        }
        let me = self.node_id().await;
        let mine: BTreeSet<ShardId> = next.shards_of(&me).into_iter().map(ShardId).collect();
        let hosted: BTreeSet<ShardId> = self.shards.hosted().into_iter().collect();
        for shard in hosted.difference(&mine) {
            // Stop taking durable device messages and remote commands first, then let the
            // actors finish and stop.
            self.ingest.stop(*shard).await;
            self.server.stop(*shard).await;
            self.shards.release(*shard);
            metrics::counter!("eq_handoffs_total", "direction" => "out").increment(1);
        }
        for shard in mine.difference(&hosted) {
            if let Err(error) = self.shards.host(*shard).await {
                warn!(shard = %shard, %error, "cannot host shard");
                continue;
            }
            self.server.serve(*shard).await;
            self.ingest.start(*shard).await;
            metrics::counter!("eq_handoffs_total", "direction" => "in").increment(1);
        }
        self.assignment.send_replace(next);
        self.applied.store(true, Ordering::Relaxed);
    }
}
