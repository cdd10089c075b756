//! Routing: a command reaches its equipment's owner, wherever it is. Local shards are called
//! directly; other shards through a NATS request to `eq.shard.<n>.cmd`, which only the
//! owner subscribes to ([`ShardServer`]). While a shard is between owners ("no responders",
//! "not hosted", a stale owner fenced off) the command is retried until the deadline; past
//! it the caller gets `Unavailable` (HTTP 503 with `Retry-After`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::RequestErrorKind;
use eq_actors::ShardId;
use eq_actors::equipment::{Command, CommandError, Outcome};
use eq_actors::shard::ShardHost;
use eq_actors::subjects::Subjects;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

use super::Cluster;

/// How long one routed attempt waits for the owner before trying again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

/// The reply to a routed command.
#[derive(Debug, Serialize, Deserialize)]
pub enum RemoteReply {
    Ok(Box<Outcome>),
    Err(CommandError),
}

/// Sends commands to their owners.
pub struct Router {
    shards: Arc<ShardHost>,
    cluster: Option<Arc<Cluster>>,
    client: async_nats::Client,
    subjects: Subjects,
    /// How long a command may wait for its shard's owner.
    deadline: Duration,
}

impl Router {
    pub fn new(
        shards: Arc<ShardHost>,
        cluster: Option<Arc<Cluster>>,
        client: async_nats::Client,
        subjects: Subjects,
        deadline: Duration,
    ) -> Self {
        Self {
            shards,
            cluster,
            client,
            subjects,
            deadline,
        }
    }

    pub fn shards(&self) -> &Arc<ShardHost> {
        &self.shards
    }

    /// Runs a command on the owning node, retrying while its shard changes hands.
    pub async fn execute(&self, command: Command) -> Result<Outcome, CommandError> {
        let shard = self.shards.shard_of(&command.equipment_id);
        let span = tracing::info_span!(
            "route",
            equipment_id = %command.equipment_id,
            shard = shard.0,
        );
        self.execute_on(shard, command).instrument(span).await
    }

    async fn execute_on(
        &self,
        shard: ShardId,
        mut command: Command,
    ) -> Result<Outcome, CommandError> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let mut backoff = Duration::from_millis(10);
        loop {
            let local = self.shards.hosted_contains(shard);
            let result = if local {
                self.shards.execute(command.clone()).await
            } else {
                // A command sent to another node carries an id, so that retrying it (after a
                // timeout at an owner that died or handed its shard over) cannot apply it twice.
                if command.command_id.is_none() {
                    command.command_id = Some(format!("auto-{}", uuid::Uuid::new_v4().simple()));
                }
                self.remote(shard, &command, deadline).await
            };
            let retry = match &result {
                Err(CommandError::NotHosted) => true,
                // The owner did not answer in time (it may have died mid-command): the
                // command id makes the retry safe.
                Err(CommandError::TimedOut) if !local => true,
                Err(CommandError::Fenced | CommandError::ActorStopped) => {
                    // A stale owner: if the shard is no longer ours, stop hosting it.
                    if local && let Some(cluster) = &self.cluster {
                        let me = cluster.node_id().await;
                        if cluster.owner_of(shard).as_deref() != Some(me.as_str()) {
                            self.shards.release(shard);
                        }
                    }
                    true
                }
                _ => false,
            };
            if !retry {
                return result;
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                metrics::counter!("eq_routing_timeouts_total").increment(1);
                return Err(CommandError::Unavailable(format!(
                    "shard {shard} has no owner right now; retry"
                )));
            }
            metrics::counter!("eq_routing_retries_total").increment(1);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    async fn remote(
        &self,
        shard: ShardId,
        command: &Command,
        deadline: tokio::time::Instant,
    ) -> Result<Outcome, CommandError> {
        let payload = serde_json::to_vec(command)
            .map_err(|e| CommandError::Unavailable(format!("encoding command: {e}")))?;
        let timeout = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(ATTEMPT_TIMEOUT);
        let mut headers = async_nats::HeaderMap::new();
        eq_actors::trace::inject(&tracing::Span::current(), &mut headers);
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload.into())
            .timeout(Some(timeout.max(Duration::from_millis(1))));
        match self
            .client
            .send_request(self.subjects.shard_commands(shard), request)
            .await
        {
            Ok(message) => match serde_json::from_slice::<RemoteReply>(&message.payload) {
                Ok(RemoteReply::Ok(outcome)) => Ok(*outcome),
                Ok(RemoteReply::Err(error)) => Err(error),
                Err(e) => Err(CommandError::Unavailable(format!(
                    "bad reply from owner: {e}"
                ))),
            },
            Err(e) if matches!(e.kind(), RequestErrorKind::NoResponders) => {
                Err(CommandError::NotHosted)
            }
            Err(e) if matches!(e.kind(), RequestErrorKind::TimedOut) => Err(CommandError::TimedOut),
            Err(e) => Err(CommandError::Unavailable(e.to_string())),
        }
    }
}

/// Serves `eq.shard.<n>.cmd` for the shards this node hosts.
pub struct ShardServer {
    client: async_nats::Client,
    subjects: Subjects,
    shards: Arc<ShardHost>,
    serving: Mutex<HashMap<ShardId, CancellationToken>>,
}

impl ShardServer {
    pub fn new(client: async_nats::Client, subjects: Subjects, shards: Arc<ShardHost>) -> Self {
        Self {
            client,
            subjects,
            shards,
            serving: Mutex::new(HashMap::new()),
        }
    }

    /// Starts answering commands for a shard.
    pub async fn serve(&self, shard: ShardId) {
        let mut serving = self.serving.lock().await;
        if serving.contains_key(&shard) {
            return;
        }
        let subject = self.subjects.shard_commands(shard);
        // A queue group: while an old and a new owner both listen during a hand-off, each
        // request goes to one of them (never answered twice).
        let mut subscription = match self
            .client
            .queue_subscribe(subject.clone(), "owner".to_string())
            .await
        {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, %subject, "cannot serve shard");
                return;
            }
        };
        // Make sure the server knows the subscription before others are told to use it.
        let _ = self.client.flush().await;
        let stop = CancellationToken::new();
        serving.insert(shard, stop.clone());
        let (client, shards) = (self.client.clone(), self.shards.clone());
        tokio::spawn(async move {
            let mut draining = false;
            loop {
                // On stop, drain rather than drop: requests already delivered to this
                // subscription still get an answer (from the actor, or "not hosted" so that
                // the sender retries at the new owner) instead of waiting for a timeout.
                let message = if draining {
                    subscription.next().await
                } else {
                    tokio::select! {
                        _ = stop.cancelled() => {
                            if subscription.drain().await.is_err() {
                                break;
                            }
                            draining = true;
                            continue;
                        }
                        m = subscription.next() => m,
                    }
                };
                let Some(message) = message else { break };
                let (client, shards) = (client.clone(), shards.clone());
                // A routed command continues the trace of the node that sent it.
                let span = eq_actors::trace::joined(
                    tracing::info_span!(
                        "shard.serve",
                        shard = shard.0,
                        trace_id = tracing::field::Empty,
                    ),
                    message.headers.as_ref(),
                );
                tokio::spawn(async move {
                    let reply = match serde_json::from_slice::<Command>(&message.payload) {
                        Ok(command) if shards.hosted_contains(shard) => {
                            match shards.execute(command).instrument(span).await {
                                Ok(o) => RemoteReply::Ok(Box::new(o)),
                                Err(e) => RemoteReply::Err(e),
                            }
                        }
                        Ok(_) => RemoteReply::Err(CommandError::NotHosted),
                        Err(e) => {
                            RemoteReply::Err(CommandError::Unavailable(format!("bad command: {e}")))
                        }
                    };
                    if let Some(reply_to) = message.reply {
                        let body = serde_json::to_vec(&reply).unwrap_or_default();
                        if let Err(error) = client.publish(reply_to, body.into()).await {
                            debug!(%error, "routed reply not sent");
                        }
                    }
                });
            }
        });
    }

    /// Stops answering commands for a shard (new requests then find no responder).
    pub async fn stop(&self, shard: ShardId) {
        if let Some(stop) = self.serving.lock().await.remove(&shard) {
            stop.cancel();
        }
    }

    pub async fn stop_all(&self) {
        for (_, stop) in self.serving.lock().await.drain() {
            stop.cancel();
        }
    }
}
