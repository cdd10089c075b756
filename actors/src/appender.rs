//! Group commit for appends: concurrent appends of *different* equipment are sent to
//! JetStream as one atomic batch (ADR-50, nats-server 2.12+), so that they share one write
//! and — with `sync_interval: always` — one fsync. Each message keeps its own
//! `Nats-Expected-Last-Subject-Sequence`, which the server checks at commit; if the batch is
//! refused (e.g. one writer is fenced), every message is retried on its own so that only the
//! fenced one fails. An append never waits for a batch to fill: a worker takes whatever is
//! queued when it becomes free, so a lone append goes out at once.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID};
use bytes::Bytes;
use futures::future::join_all;
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{StoreError, publish_one};

/// Most messages in one batch (the server allows 1000).
pub const MAX_BATCH: usize = 256;
/// Batches in flight at once per node (the server allows 50 per stream).
pub const WORKERS: usize = 4;

/// One append waiting for its batch.
pub(crate) struct Pending {
    pub subject: String,
    pub payload: Bytes,
    pub expected_last_seq: u64,
    pub msg_id: Option<String>,
    /// The command's trace context (`traceparent`).
    pub trace: HeaderMap,
    pub reply: oneshot::Sender<Result<(u64, bool), StoreError>>,
}

/// The queue appends go through.
#[derive(Clone)]
pub(crate) struct Appender {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Appender {
    pub fn start(js: async_nats::jetstream::Context) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            let (rx, js) = (rx.clone(), js.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx).await {
                    commit(&js, batch).await;
                }
            });
        }
        Self { tx }
    }

    pub fn submit(&self, pending: Pending) -> Result<(), StoreError> {
        self.tx
            .send(pending)
            .map_err(|_| StoreError::Unavailable("appender stopped".into()))
    }
}

/// Waits for one append, then takes whatever else is already queued (up to the limit).
async fn next_batch(rx: &Mutex<mpsc::UnboundedReceiver<Pending>>) -> Option<Vec<Pending>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[derive(Deserialize)]
struct BatchAck {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: Option<u64>,
    #[serde(default)]
    description: String,
}

async fn commit(js: &async_nats::jetstream::Context, batch: Vec<Pending>) {
    metrics::histogram!("eq_append_batch_size").record(batch.len() as f64);
    if batch.len() == 1 {
        return individually(js, batch).await;
    }
    match publish_batch(js, &batch).await {
        Ok(last_seq) => {
            let n = batch.len() as u64;
            for (i, p) in batch.into_iter().enumerate() {
                let _ = p.reply.send(Ok((last_seq - (n - 1 - i as u64), false)));
            }
        }
        Err(reason) => {
            // One refused message fails the whole batch: give each its own answer.
            metrics::counter!("eq_append_batch_fallbacks_total").increment(1);
            tracing::debug!(%reason, size = batch.len(), "atomic batch refused; appending one by one");
            individually(js, batch).await;
        }
    }
}

async fn individually(js: &async_nats::jetstream::Context, batch: Vec<Pending>) {
    join_all(batch.into_iter().map(|p| async move {
        let result = publish_one(
            js,
            p.subject,
            p.payload,
            p.expected_last_seq,
            p.msg_id,
            p.trace,
        )
        .await;
        let _ = p.reply.send(result);
    }))
    .await;
}

/// Sends the batch (first message as a request, so the server has opened the batch; the
/// middle ones as plain publishes; the last one commits) and returns the last sequence.
async fn publish_batch(
    js: &async_nats::jetstream::Context,
    batch: &[Pending],
) -> Result<u64, String> {
    let client = js.client();
    let batch_id = client
        .new_inbox()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let n = batch.len();
    for (i, p) in batch.iter().enumerate() {
        let mut headers = p.trace.clone();
        headers.insert("Nats-Batch-Id", batch_id.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            p.expected_last_seq.to_string().as_str(),
        );
        if let Some(id) = &p.msg_id {
            headers.insert(NATS_MESSAGE_ID, id.as_str());
        }
        if i + 1 == n {
            headers.insert("Nats-Batch-Commit", "1");
        }
        if i == 0 || i + 1 == n {
            let response = client
                .request_with_headers(p.subject.clone(), headers, p.payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            if i + 1 < n {
                // The batch-opening reply is empty unless the server refused it.
                if !response.payload.is_empty() {
                    return Err(String::from_utf8_lossy(&response.payload).into_owned());
                }
                continue;
            }
            let ack: BatchAck =
                serde_json::from_slice(&response.payload).map_err(|e| e.to_string())?;
            if let Some(error) = ack.error {
                return Err(format!("{:?}: {}", error.err_code, error.description));
            }
            return match (ack.seq, ack.count) {
                (Some(seq), Some(count)) if count as usize == n => Ok(seq),
                (seq, count) => Err(format!(
                    "unexpected batch ack: seq {seq:?}, count {count:?}"
                )),
            };
        }
        client
            .publish_with_headers(p.subject.clone(), headers, p.payload.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    Err("empty batch".into())
}
