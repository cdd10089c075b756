//! Every NATS subject, stream, consumer and header name the system uses, and the stream
//! configurations, in one place. No subject string is written inline anywhere else.

use std::time::Duration;

use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

use crate::domain::{EquipmentId, Line, ShardId, Site};

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "eq";
/// Durable name of the history consumer group (one group, however many nodes run it).
pub const HISTORY_CONSUMER: &str = "history";
/// How long JetStream remembers a `Nats-Msg-Id` for dedupe.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// Header carrying an error code on a NATS error reply.
pub const HEADER_ERROR_CODE: &str = "Eq-Error";

/// Subject and stream names under one prefix (default `eq`).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    events_stream: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Subjects {
    /// Names under `prefix`; the events stream is `<PREFIX>_EVENTS` (`EQ_EVENTS`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            events_stream: format!("{}_EVENTS", prefix.to_ascii_uppercase()),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The event log stream (`EQ_EVENTS`).
    pub fn events_stream(&self) -> &str {
        &self.events_stream
    }

    /// `eq.events.<id>`: one subject per equipment; its last message is the current state.
    pub fn events(&self, id: &EquipmentId) -> String {
        format!("{}.events.{}", self.prefix, id)
    }

    /// `eq.events.>`: every equipment's events.
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The token after `eq.events.` in an event subject.
    pub fn id_from_events_subject<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".events.")
    }

    /// `eq.device.<id>.status`: devices publish status changes here.
    pub fn device_status(&self, id: &EquipmentId) -> String {
        format!("{}.device.{}.status", self.prefix, id)
    }

    /// `eq.device.*.status`: what the node subscribes to.
    pub fn device_status_all(&self) -> String {
        format!("{}.device.*.status", self.prefix)
    }

    /// The `<id>` token of a device subject, unvalidated.
    pub fn id_from_device_subject<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".device.")?
            .strip_suffix(".status")
    }

    /// `eq.live.<site>.<line>.<id>`: each accepted change, for dashboards.
    pub fn live(&self, site: &Site, line: &Line, id: &EquipmentId) -> String {
        format!("{}.live.{}.{}.{}", self.prefix, site, line, id)
    }

    /// `eq.rejects.<id>`: refused device messages.
    pub fn rejects(&self, id: &str) -> String {
        format!("{}.rejects.{}", self.prefix, id)
    }

    /// `eq.shard.<n>.cmd`: commands for a shard, subscribed by its owner only.
    pub fn shard_commands(&self, shard: ShardId) -> String {
        format!("{}.shard.{}.cmd", self.prefix, shard)
    }

    /// Configuration of the `EQ_EVENTS` stream: every event kept (the history can always be
    /// rebuilt), file storage, dedupe window for `Nats-Msg-Id`, direct get for fast reads.
    pub fn events_stream_config(&self, replicas: usize) -> stream::Config {
        stream::Config {
            name: self.events_stream.clone(),
            description: Some("Equipment Live event log: one subject per equipment".into()),
            subjects: vec![self.events_all()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            num_replicas: replicas.max(1),
            duplicate_window: DEDUPE_WINDOW,
            allow_direct: true,
            max_messages_per_subject: -1,
            // Group commit (atomic batch publish, nats-server 2.12+).
            allow_atomic_publish: true,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let s = Subjects::default();
        let id = EquipmentId::parse("press-1").unwrap();
        assert_eq!(s.events(&id), "eq.events.press-1");
        assert_eq!(
            s.id_from_events_subject("eq.events.press-1"),
            Some("press-1")
        );
        assert_eq!(s.device_status(&id), "eq.device.press-1.status");
        assert_eq!(
            s.id_from_device_subject("eq.device.press-1.status"),
            Some("press-1")
        );
        assert_eq!(s.events_stream(), "EQ_EVENTS");
    }
}
