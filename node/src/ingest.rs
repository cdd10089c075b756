//! Durable device ingest. A device publishes on `eq.ingest.<id>.status` through JetStream
//! (stream `EQ_INGEST`) and gets the publish ack as soon as the message is stored, even when
//! no node is up. The server files each message under its shard (a subject transform with
//! `partition()`), and the node that hosts a shard consumes that shard's messages and applies
//! them in order, exactly once:
//!
//! - Order: one consumer per shard, and within a fetched chunk each machine's messages run
//!   one after the other (machines run side by side). When a message cannot be applied yet
//!   (a transient error), its machine's later messages are not applied either, and the
//!   consumer is recreated: `EQ_INGEST` is a work queue, so the recreated consumer starts
//!   again at the oldest message not yet acknowledged.
//! - Exactly once: a redelivered message carries its stream sequence (and the stream's
//!   creation time, so that a recreated stream starts over) into the command, and the
//!   machine's state remembers the highest sequence applied (`ingest_high`); a retried
//!   publish with the same `command_id` is caught by the idempotency keys, and one with the
//!   same `Nats-Msg-Id` by the stream's own dedupe window.
//! - Hand-off: a worker that stops (its shard moves) finishes its chunk, then deletes its
//!   consumer; the new owner deletes any consumer left by a dead owner before it creates its
//!   own. Appends stay fenced per machine, so two workers overlapping for a moment can delay
//!   a message but never apply one twice or out of order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, stream::Stream};
use eq_actors::ShardId;
use eq_actors::equipment::{CommandError, IngestMark, outcome_label};
use eq_actors::shard::ShardHost;
use eq_actors::subjects::{INGEST_CONSUMER_PREFIX, Subjects};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::backoff::Backoff;
use crate::devices;

/// Most messages applied per chunk.
const CHUNK: usize = 500;
/// How long a message may stay unacknowledged before JetStream redelivers it.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A consumer nobody pulls from for this long is removed by the server.
const INACTIVE: Duration = Duration::from_secs(3600);
/// How often a worker whose consumer was taken over checks whether it may resume.
const TAKEOVER_POLL: Duration = Duration::from_secs(2);

/// Creates `EQ_INGEST` if it does not exist (devices can publish durably from then on, even
/// while no node runs).
pub async fn ensure_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
    shard_count: u32,
    max_bytes: i64,
) -> anyhow::Result<Stream> {
    let config = subjects.ingest_stream_config(replicas, shard_count, max_bytes);
    match js.get_stream(subjects.ingest_stream()).await {
        Ok(mut stream) => {
            // Only what this node is sure of is changed, on the stream's own config (its
            // replicas and the rest stay as they are).
            let mut existing = stream.info().await?.config.clone();
            if existing.subject_transform != config.subject_transform {
                // The shard count is fixed when the cluster is created: messages filed under
                // another count would never reach an owner.
                warn!(
                    stream = subjects.ingest_stream(),
                    existing = ?existing.subject_transform,
                    "ingest stream was created for another shard count; updating it"
                );
                existing.subject_transform = config.subject_transform;
                js.update_stream(existing.clone()).await?;
            }
            if existing.max_bytes != config.max_bytes {
                let from = existing.max_bytes;
                existing.max_bytes = config.max_bytes;
                // The stream works as it is: a size the server cannot reserve is a warning.
                match js.update_stream(existing).await {
                    Ok(_) => info!(
                        stream = subjects.ingest_stream(),
                        from,
                        to = config.max_bytes,
                        "resized the ingest stream"
                    ),
                    Err(error) => warn!(
                        stream = subjects.ingest_stream(),
                        from,
                        to = config.max_bytes,
                        %error,
                        "cannot resize the ingest stream; keeping its size"
                    ),
                }
            }
            Ok(stream)
        }
        Err(_) => Ok(js
            .create_stream(config)
            .await
            .context("creating the ingest stream")?),
    }
}

/// One worker per hosted shard.
pub struct IngestWorkers {
    js: jetstream::Context,
    client: async_nats::Client,
    subjects: Subjects,
    shards: Arc<ShardHost>,
    running: Mutex<HashMap<ShardId, Worker>>,
}

struct Worker {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Our consumer was deleted by another worker (the shard's next owner).
#[derive(Debug, thiserror::Error)]
#[error("ingest consumer taken over")]
struct TakenOver;

/// What became of one message.
enum Applied {
    /// Applied, recognised as applied before, or refused for good: acknowledge it.
    Settled,
    /// Not applicable now (store unavailable, shard moving): keep it for later.
    Retry(CommandError),
}

impl IngestWorkers {
    pub fn new(
        js: jetstream::Context,
        client: async_nats::Client,
        subjects: Subjects,
        shards: Arc<ShardHost>,
    ) -> Arc<Self> {
        Arc::new(Self {
            js,
            client,
            subjects,
            shards,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Starts consuming a shard's durable device messages (no-op if running).
    pub async fn start(self: &Arc<Self>, shard: ShardId) {
        let mut running = self.running.lock().await;
        if running.get(&shard).is_some_and(|w| !w.task.is_finished()) {
            return;
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.clone().run(shard, stop.clone()));
        running.insert(shard, Worker { stop, task });
    }

    /// Stops a shard's worker once its current chunk is applied and acknowledged.
    pub async fn stop(&self, shard: ShardId) {
        let worker = self.running.lock().await.remove(&shard);
        if let Some(worker) = worker {
            worker.stop.cancel();
            if tokio::time::timeout(Duration::from_secs(15), worker.task)
                .await
                .is_err()
            {
                warn!(shard = %shard, "ingest worker did not stop in time");
            }
        }
    }

    pub async fn stop_all(&self) {
        let shards: Vec<ShardId> = self.running.lock().await.keys().copied().collect();
        futures::future::join_all(shards.into_iter().map(|s| self.stop(s))).await;
    }

    async fn run(self: Arc<Self>, shard: ShardId, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut mine: Option<String> = None;
        while !stop.is_cancelled() {
            // A shard released behind the cluster's back (a fenced stale owner) must not
            // take the consumer back from its new owner.
            let hosted = self.shards.hosted_contains(shard);
            let taken = if hosted {
                self.take_consumer(shard, mine.as_deref()).await
            } else {
                Ok(None)
            };
            let started = std::time::Instant::now();
            let result = match taken {
                Ok(Some((consumer, epoch))) => {
                    mine = consumer.cached_info().config.durable_name.clone();
                    self.consume(shard, consumer, epoch, &stop, &mut backoff)
                        .await
                }
                Ok(None) => {
                    // Another node's worker holds this shard's consumer (it owned the shard
                    // a moment ago, or it is a stale owner), or the shard is not ours: wait.
                    debug!(shard = %shard, hosted, "ingest consumer held elsewhere; waiting");
                    if hosted {
                        mine = None;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(TAKEOVER_POLL) => continue,
                    }
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => backoff.succeeded(),
                Err(error) => {
                    // A consumer deleted under us is a hand-off (the next owner took over),
                    // not a fault; so are the first errors of a streak (the previous owner's
                    // consumer not gone yet, a stream leader being elected).
                    let retry = backoff.failed_after(started.elapsed());
                    if error.is::<TakenOver>() {
                        debug!(shard = %shard, "ingest consumer taken over");
                    } else if retry.loud {
                        warn!(shard = %shard, error = format!("{error:#}"), "durable ingest paused again; resuming in order");
                    } else {
                        debug!(shard = %shard, error = format!("{error:#}"), "durable ingest paused; resuming in order");
                    }
                    metrics::counter!("eq_ingest_resets_total").increment(1);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(retry.after) => {}
                    }
                }
            }
        }
        // Hand-off: let the next owner start at once, at the oldest unacknowledged message.
        let _ = self.client.flush().await;
        if let Some(name) = mine
            && let Ok(stream) = self.js.get_stream(self.subjects.ingest_stream()).await
        {
            let _ = stream.delete_consumer(&name).await;
        }
        debug!(shard = %shard, "ingest worker stopped");
    }

    /// Replaces this shard's consumer by a fresh one that starts at the oldest message not
    /// yet acknowledged, with the stream's epoch (its creation time). `None` if our previous
    /// consumer was deleted by someone else who still holds one (they own the shard now, or
    /// think so).
    async fn take_consumer(
        &self,
        shard: ShardId,
        mine: Option<&str>,
    ) -> anyhow::Result<Option<(jetstream::consumer::Consumer<pull::Config>, i64)>> {
        let stream = self.js.get_stream(self.subjects.ingest_stream()).await?;
        let created = stream.cached_info().created;
        let epoch = i64::try_from(created.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        let prefix = format!("{INGEST_CONSUMER_PREFIX}-{shard}-");
        let existing: Vec<String> = stream
            .consumer_names()
            .try_filter(|name| futures::future::ready(name.starts_with(&prefix)))
            .try_collect()
            .await?;
        if let Some(mine) = mine
            && !existing.iter().any(|n| n == mine)
            && !existing.is_empty()
        {
            return Ok(None);
        }
        // Delete first: a work-queue stream allows one consumer per subject.
        for name in &existing {
            stream.delete_consumer(name).await?;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{prefix}{nanos:x}");
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("durable device ingest of shard {shard}")),
                filter_subject: self.subjects.ingest_shard_filter(shard),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_wait: ACK_WAIT,
                max_ack_pending: (CHUNK * 4) as i64,
                inactive_threshold: INACTIVE,
                ..Default::default()
            })
            .await?;
        info!(shard = %shard, consumer = %name, "consuming durable device messages");
        Ok(Some((consumer, epoch)))
    }

    /// Applies chunks until stopped (`Ok`) or until something must be retried (`Err`).
    async fn consume(
        &self,
        shard: ShardId,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        epoch: i64,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let mut messages = consumer.messages().await?.ready_chunks(CHUNK);
        loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                chunk = messages.next() => chunk.context("ingest consumer ended")?,
            };
            let mut delivered = Vec::with_capacity(chunk.len());
            let mut failure = None;
            for message in chunk {
                match message {
                    Ok(m) => delivered.push(m),
                    Err(error) if error.kind() == pull::MessagesErrorKind::ConsumerDeleted => {
                        failure = Some(anyhow::Error::new(TakenOver));
                    }
                    Err(error) => failure = Some(anyhow::anyhow!("ingest consumer: {error}")),
                }
            }
            // Device messages of this shard stored but not yet delivered to us: the
            // durable path's backlog, for ops.
            if let Some(info) = delivered.last().and_then(|m| m.info().ok()) {
                metrics::gauge!("eq_ingest_pending", "shard" => shard.to_string())
                    .set(info.pending as f64);
            }
            let applied_any = !delivered.is_empty();
            if let Some(error) = self.apply_chunk(shard, epoch, delivered).await {
                return Err(anyhow::anyhow!("message kept for a retry: {error}"));
            }
            if applied_any {
                backoff.succeeded();
            }
            if let Some(error) = failure {
                return Err(error);
            }
        }
    }

    /// Applies one chunk: each machine's messages in order, machines side by side. Returns
    /// the first error that left a message unapplied.
    async fn apply_chunk(
        &self,
        shard: ShardId,
        epoch: i64,
        messages: Vec<jetstream::Message>,
    ) -> Option<CommandError> {
        let mut chains: Vec<Vec<jetstream::Message>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for message in messages {
            let id = self
                .subjects
                .id_from_ingest_subject(&message.subject)
                .unwrap_or_default()
                .to_string();
            let at = *index.entry(id).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[at].push(message);
        }
        let results = futures::future::join_all(chains.into_iter().map(|chain| async move {
            for message in chain {
                match self.apply_one(epoch, &message).await {
                    Applied::Settled => {
                        if let Err(error) = message.ack().await {
                            // Redelivered later and recognised as applied.
                            debug!(%error, "ingest ack not sent");
                        }
                    }
                    Applied::Retry(error) => return Some(error),
                }
            }
            None
        }))
        .await;
        let failed = results.into_iter().flatten().next();
        if let Some(error) = &failed {
            debug!(shard = %shard, %error, "ingest chunk left messages for a retry");
        }
        failed
    }

    async fn apply_one(&self, epoch: i64, message: &jetstream::Message) -> Applied {
        let refused = devices::Refused {
            subject: &message.subject,
            raw_id: self.subjects.id_from_ingest_subject(&message.subject),
            payload: &message.payload,
        };
        let mut command = match devices::parse_body(refused.raw_id, &message.payload) {
            Ok(command) => command,
            Err(error) => {
                devices::reject(&self.client, &self.subjects, &refused, &error).await;
                return Applied::Settled;
            }
        };
        match message.info() {
            Ok(info) => {
                let stored_at = chrono::DateTime::from_timestamp_nanos(
                    i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX),
                );
                command.ingest = Some(IngestMark {
                    epoch,
                    seq: info.stream_sequence,
                    stored_at,
                });
            }
            Err(error) => {
                return Applied::Retry(CommandError::Unavailable(format!(
                    "message without metadata: {error}"
                )));
            }
        }
        let span = eq_actors::trace::joined(
            tracing::info_span!(
                "ingest.message",
                subject = %message.subject,
                trace_id = tracing::field::Empty,
            ),
            message.headers.as_ref(),
        );
        let started = std::time::Instant::now();
        let result = self.shards.execute(command).instrument(span).await;
        metrics::counter!("eq_commands_total", "source" => "ingest", "result" => outcome_label(&result))
            .increment(1);
        metrics::histogram!("eq_command_duration_seconds", "source" => "ingest")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => Applied::Settled,
            Err(CommandError::Rejected(rejection)) => {
                let error = devices::refuse(rejection.code(), rejection.to_string());
                devices::reject(&self.client, &self.subjects, &refused, &error).await;
                Applied::Settled
            }
            Err(error) => Applied::Retry(error),
        }
    }
}
