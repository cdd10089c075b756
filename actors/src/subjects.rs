//! Every NATS subject, stream, consumer and header name the system uses, and the stream
//! configurations, in one place. No subject string is written inline anywhere else.

use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

use crate::domain::{EquipmentId, Line, ShardId, Site};

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "eq";
/// Durable name of the history consumer group (one group, however many nodes run it).
pub const HISTORY_CONSUMER: &str = "history";
/// How long JetStream remembers a `Nats-Msg-Id` for dedupe.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// Prefix of the per-shard durable consumers on `EQ_INGEST` (`ingest-<shard>-<owner tag>`).
pub const INGEST_CONSUMER_PREFIX: &str = "ingest";
/// How many bytes of unapplied device messages `EQ_INGEST` keeps before it refuses new
/// ones (a device then gets an error on its publish, not a silent drop).
pub const INGEST_MAX_BYTES: i64 = 1 << 30;

/// Header carrying an error code on a NATS error reply.
pub const HEADER_ERROR_CODE: &str = "Eq-Error";

/// Subject and stream names under one prefix (default `eq`).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    events_stream: String,
    ingest_stream: String,
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
            ingest_stream: format!("{}_INGEST", prefix.to_ascii_uppercase()),
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

    /// The durable device ingest stream (`EQ_INGEST`).
    pub fn ingest_stream(&self) -> &str {
        &self.ingest_stream
    }

    /// `eq.ingest.<id>.status`: devices publish here through JetStream.
    pub fn ingest_status(&self, id: &EquipmentId) -> String {
        format!("{}.ingest.{}.status", self.prefix, id)
    }

    /// `eq.ingest.*.status`: what `EQ_INGEST` captures.
    pub fn ingest_status_all(&self) -> String {
        format!("{}.ingest.*.status", self.prefix)
    }

    /// `eq.ingest.<shard>.*.status`: the stored (partitioned) subjects of one shard; the
    /// filter of that shard's consumer.
    pub fn ingest_shard_filter(&self, shard: ShardId) -> String {
        format!("{}.ingest.{}.*.status", self.prefix, shard)
    }

    /// The `<id>` token of a stored ingest subject `eq.ingest.<shard>.<id>.status`.
    pub fn id_from_ingest_subject<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".ingest.")?
            .strip_suffix(".status")?;
        rest.split_once('.').map(|(_, id)| id)
    }

    /// `eq.live.<site>.<line>.<id>`: each accepted change, for dashboards.
    pub fn live(&self, site: &Site, line: &Line, id: &EquipmentId) -> String {
        format!("{}.live.{}.{}.{}", self.prefix, site, line, id)
    }

    /// `eq.alerts.<id>`: watchdog alerts (a machine red too long, a device silent).
    pub fn alerts(&self, id: &EquipmentId) -> String {
        format!("{}.alerts.{}", self.prefix, id)
    }

    /// `eq.rejects.<id>`: refused device messages.
    pub fn rejects(&self, id: &str) -> String {
        format!("{}.rejects.{}", self.prefix, id)
    }

    /// What one device's NATS user may publish: `eq.device.<id>.>` and `eq.ingest.<id>.>`.
    pub fn device_publish_permissions(&self, id: &EquipmentId) -> Vec<String> {
        vec![
            format!("{}.device.{}.>", self.prefix, id),
            format!("{}.ingest.{}.>", self.prefix, id),
        ]
    }

    /// What one device's NATS user may subscribe to: its own replies (the device sets the
    /// inbox prefix [`Self::device_inbox_prefix`]) and its own refusals.
    pub fn device_subscribe_permissions(&self, id: &EquipmentId) -> Vec<String> {
        vec![
            format!("{}.>", self.device_inbox_prefix(id)),
            self.rejects(id.as_str()),
        ]
    }

    /// `_INBOX.<id>`: the reply inbox prefix a device's client must use.
    pub fn device_inbox_prefix(&self, id: &EquipmentId) -> String {
        format!("_INBOX.{id}")
    }

    /// `eq.live.>`: what dashboards may subscribe to.
    pub fn live_all(&self) -> String {
        format!("{}.live.>", self.prefix)
    }

    /// `eq.admin.drain`: drain requests naming a node (the payload is its id); every node
    /// listens, the named one answers.
    pub fn node_drain(&self) -> String {
        format!("{}.admin.drain", self.prefix)
    }

    /// `eq.shard.<n>.cmd`: commands for a shard, subscribed by its owner only.
    pub fn shard_commands(&self, shard: ShardId) -> String {
        format!("{}.shard.{}.cmd", self.prefix, shard)
    }

    /// `EQ_<WHAT>`: a KV bucket of the system (`NODES`, `LEADER`, `CLUSTER`, `REVOKED`).
    pub fn bucket(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix.to_ascii_uppercase())
    }

    /// Configuration of the KV bucket `EQ_<WHAT>`: the latest entry per key, each kept for
    /// `max_age` (zero: until deleted).
    pub fn bucket_config(
        &self,
        what: &str,
        description: &str,
        max_age: Duration,
        replicas: usize,
    ) -> kv::Config {
        kv::Config {
            bucket: self.bucket(what),
            description: format!("Equipment Live: {description}"),
            history: 1,
            max_age,
            num_replicas: replicas.max(1),
            ..Default::default()
        }
    }

    /// `EQ_REVOKED`: the KV bucket of revoked API tokens.
    pub fn revocations_bucket(&self) -> String {
        self.bucket("REVOKED")
    }

    /// `$KV.EQ_REVOKED.<key>`: where a change of one revocation is published (the KV
    /// protocol; a delete is a message with the header `KV-Operation: DEL`).
    pub fn revocation_key(&self, key: &str) -> String {
        format!("$KV.{}.{key}", self.revocations_bucket())
    }

    /// Configuration of the `EQ_REVOKED` bucket: kept until lifted.
    pub fn revocations_bucket_config(&self, replicas: usize) -> kv::Config {
        self.bucket_config("REVOKED", "revoked API tokens", Duration::ZERO, replicas)
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

    /// Configuration of the `EQ_INGEST` stream: a work queue of device messages not yet
    /// applied. The server itself files each message under its shard
    /// (`eq.ingest.<id>.status` → `eq.ingest.<shard>.<id>.status`, with NATS's
    /// `partition()`, the same FNV-1a as [`crate::domain::shard_of`]), so each shard's owner
    /// consumes exactly its machines, in order. Acknowledged messages are removed: what is in
    /// the stream is exactly what is still to apply. Full → new publishes are refused.
    pub fn ingest_stream_config(
        &self,
        replicas: usize,
        shard_count: u32,
        max_bytes: i64,
    ) -> stream::Config {
        stream::Config {
            name: self.ingest_stream.clone(),
            description: Some("Equipment Live durable device ingest, filed by shard".into()),
            subjects: vec![self.ingest_status_all()],
            subject_transform: Some(stream::SubjectTransform {
                source: self.ingest_status_all(),
                destination: format!(
                    "{}.ingest.{{{{partition({},1)}}}}.{{{{wildcard(1)}}}}.status",
                    self.prefix,
                    shard_count.max(1)
                ),
            }),
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_bytes,
            num_replicas: replicas.max(1),
            // Devices set `Nats-Msg-Id` to their command id: a re-sent publish is stored once.
            duplicate_window: DEDUPE_WINDOW,
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
        assert_eq!(s.revocations_bucket(), "EQ_REVOKED");
        assert_eq!(s.revocation_key("token.YQ"), "$KV.EQ_REVOKED.token.YQ");
        assert_eq!(
            s.id_from_device_subject("eq.device.press-1.status"),
            Some("press-1")
        );
        assert_eq!(s.events_stream(), "EQ_EVENTS");
        assert_eq!(s.ingest_status(&id), "eq.ingest.press-1.status");
        assert_eq!(
            s.id_from_ingest_subject("eq.ingest.17.press-1.status"),
            Some("press-1")
        );
        assert_eq!(s.ingest_shard_filter(ShardId(17)), "eq.ingest.17.*.status");
    }
}
