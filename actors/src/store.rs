//! The event store: JetStream stream `EQ_EVENTS`. Appends are fenced with
//! `Nats-Expected-Last-Subject-Sequence`, so a stale writer is refused by JetStream itself;
//! reads are direct gets of a subject's last message.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{DirectGetErrorKind, Stream},
};
use bytes::Bytes;

use crate::appender::{Appender, Pending};
use crate::domain::EquipmentId;
use crate::equipment::state::{EquipmentState, Event, apply};
use crate::subjects::Subjects;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to this equipment since we read it: we are not (or no
    /// longer) the only writer.
    #[error("fenced: the equipment's last sequence moved")]
    Fenced,
    /// JetStream did not answer or refused for another reason; the outcome of an append
    /// is unknown.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// A stored event did not decode.
    #[error("corrupt event at sequence {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
}

/// What an append produced.
#[derive(Debug, Clone)]
pub struct Appended {
    pub seq: u64,
    /// The event's JSON as stored.
    pub payload: Bytes,
    /// JetStream recognised the `Nats-Msg-Id` and stored nothing new.
    pub duplicate: bool,
}

/// A state read back from the stream, with the sequence of its last event (0 if none).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub state: EquipmentState,
    pub last_seq: u64,
}

/// JetStream-backed event store, cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    js: jetstream::Context,
    stream: Stream,
    subjects: Subjects,
    /// Group commit of concurrent appends (None: one publish per append).
    appender: Option<Appender>,
}

impl EventStore {
    /// Creates (or updates) the events stream and returns a store over it, appending one
    /// publish per event.
    pub async fn open(
        js: jetstream::Context,
        subjects: Subjects,
        replicas: usize,
    ) -> Result<Self, StoreError> {
        Self::open_with(js, subjects, replicas, false).await
    }

    /// Like [`open`](Self::open); with `group_commit`, concurrent appends of different
    /// equipment share atomic batches (see [`crate::appender`]).
    pub async fn open_with(
        js: jetstream::Context,
        subjects: Subjects,
        replicas: usize,
        group_commit: bool,
    ) -> Result<Self, StoreError> {
        let config = subjects.events_stream_config(replicas);
        let stream = match js.get_stream(subjects.events_stream()).await {
            Ok(stream) => stream,
            Err(_) => js
                .get_or_create_stream(config)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        };
        let appender = group_commit.then(|| Appender::start(js.clone()));
        Ok(Self {
            js,
            stream,
            subjects,
            appender,
        })
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Reads an equipment's state from its last event.
    pub async fn load(&self, id: &EquipmentId) -> Result<Loaded, StoreError> {
        match self
            .stream
            .direct_get_last_for_subject(self.subjects.events(id))
            .await
        {
            Ok(message) => {
                let event = decode(message.sequence, &message.payload)?;
                Ok(Loaded {
                    state: apply(EquipmentState::default(), &event, message.sequence),
                    last_seq: message.sequence,
                })
            }
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(Loaded::default()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    /// Reads the event at a stream sequence.
    pub async fn event_at(&self, seq: u64) -> Result<Event, StoreError> {
        // From the stream's leader, not a direct get: this reads an event that was just
        // acknowledged (to answer a duplicate), which a lagging replica may not hold yet.
        let message = self
            .stream
            .get_raw_message(seq)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        decode(seq, &message.payload)
    }

    /// Appends an event, fenced on the subject's last sequence, deduplicated on the
    /// command id. Answers only once JetStream acknowledged (stored, on a quorum).
    pub async fn append(
        &self,
        event: &Event,
        expected_last_seq: u64,
    ) -> Result<Appended, StoreError> {
        // While disconnected the client would buffer the publish and send it after a
        // reconnect: the caller would see a timeout for a change that later lands. Refuse
        // at once instead, so that "unavailable" nearly always means "not applied".
        if !matches!(
            self.js.client().connection_state(),
            async_nats::connection::State::Connected
        ) {
            return Err(StoreError::Unavailable("not connected to NATS".into()));
        }
        let payload = Bytes::from(serde_json::to_vec(event).map_err(|e| StoreError::Corrupt {
            seq: 0,
            reason: e.to_string(),
        })?);
        let subject = self.subjects.events(&event.equipment_id);
        let msg_id = event
            .command_id
            .as_ref()
            .map(|key| format!("{}:{}", event.equipment_id, key));
        // The event carries the command's trace, for the history consumer and anyone reading.
        let mut trace = HeaderMap::new();
        crate::trace::inject(&tracing::Span::current(), &mut trace);
        let (seq, duplicate) = match &self.appender {
            Some(appender) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                appender.submit(Pending {
                    subject,
                    payload: payload.clone(),
                    expected_last_seq,
                    msg_id,
                    trace,
                    reply,
                })?;
                answer
                    .await
                    .map_err(|_| StoreError::Unavailable("appender stopped".into()))??
            }
            None => {
                publish_one(
                    &self.js,
                    subject,
                    payload.clone(),
                    expected_last_seq,
                    msg_id,
                    trace,
                )
                .await?
            }
        };
        Ok(Appended {
            seq,
            duplicate,
            payload,
        })
    }

    /// Checks that JetStream answers (used by readiness).
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.js.query_account()).await,
            Ok(Ok(_))
        )
    }
}

/// Publishes one message with fencing and dedupe headers; `(sequence, duplicate)`.
pub(crate) async fn publish_one(
    js: &jetstream::Context,
    subject: String,
    payload: Bytes,
    expected_last_seq: u64,
    msg_id: Option<String>,
    headers: HeaderMap,
) -> Result<(u64, bool), StoreError> {
    let mut message = PublishMessage::build()
        .headers(headers)
        .payload(payload)
        .expected_last_subject_sequence(expected_last_seq);
    if let Some(id) = msg_id {
        message = message.message_id(id);
    }
    let ack_future = js
        .send_publish(subject, message)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    match ack_future.await {
        Ok(ack) => Ok((ack.sequence, ack.duplicate)),
        Err(e) if matches!(e.kind(), PublishErrorKind::WrongLastSequence) => {
            Err(StoreError::Fenced)
        }
        // Another publish with the same message id is being stored right now: the previous
        // owner's, in flight during a hand-off. Like a fenced append, the actor reloads
        // and the router retries; the retry then finds the stored event as a duplicate.
        Err(e) if duplicate_in_process(&e) => Err(StoreError::Fenced),
        Err(e) => Err(StoreError::Unavailable(e.to_string())),
    }
}

/// JetStream's "duplicate message id is in process" (error code 10158).
fn duplicate_in_process(error: &async_nats::jetstream::context::PublishError) -> bool {
    const DUPLICATE_IN_PROCESS: u64 = 10158;
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|e| e.error_code() == async_nats::jetstream::ErrorCode(DUPLICATE_IN_PROCESS))
}

/// Decodes an event payload.
pub fn decode(seq: u64, payload: &[u8]) -> Result<Event, StoreError> {
    serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
        seq,
        reason: e.to_string(),
    })
}
