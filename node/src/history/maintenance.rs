//! History maintenance: rebuilding the database from the event log, the gap check, and the
//! retention of raw events. The event log (`EQ_EVENTS`) keeps every event, so the history
//! database is a projection that can always be thrown away and rebuilt; the rebuild uses the
//! consumer's own batch writer, so it produces the same tables as the running consumer.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use eq_actors::store::decode;
use eq_actors::subjects::Subjects;
use eq_entities::equipment_event;
use futures::StreamExt;
use sea_orm::{DatabaseConnection, EntityTrait, FromQueryResult, PaginatorTrait, Statement};
use tracing::{info, warn};

use super::consumer::{Decoded, MAX_BATCH, write_batch};

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub events: u64,
    pub last_seq: u64,
}

/// Writes every event of `EQ_EVENTS` (up to its last sequence when the rebuild starts) into
/// `db`, which must hold no history yet.
pub async fn rebuild(
    js: &jetstream::Context,
    subjects: &Subjects,
    db: &DatabaseConnection,
) -> anyhow::Result<Rebuilt> {
    let existing = equipment_event::Entity::find().count(db).await?;
    anyhow::ensure!(
        existing == 0,
        "the target database already holds {existing} events: rebuild into an empty one"
    );
    let mut stream = js
        .get_stream(subjects.events_stream())
        .await
        .context("the event stream")?;
    let state = stream.info().await?.state.clone();
    let last_seq = state.last_sequence;
    let mut rebuilt = Rebuilt {
        events: 0,
        last_seq,
    };
    if state.messages == 0 {
        return Ok(rebuilt);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subjects.events_all(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut chunks = consumer.messages().await?.ready_chunks(MAX_BATCH);
    'read: while let Some(chunk) = chunks.next().await {
        let mut batch = Vec::with_capacity(chunk.len());
        let mut reached_end = false;
        for message in chunk {
            let message = message.map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?;
            let seq = message
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence;
            if seq > last_seq {
                reached_end = true;
                break;
            }
            let pending = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending;
            match decode(seq, &message.payload) {
                Ok(event) => batch.push(Decoded { seq, event }),
                Err(error) => warn!(seq, %error, "undecodable event skipped"),
            }
            // The last stored message may be gone (deleted): stop when nothing is pending.
            reached_end |= seq >= last_seq || pending == 0;
        }
        write_batch(db, &batch).await?;
        rebuilt.events += batch.len() as u64;
        if rebuilt.events % 50_000 < batch.len() as u64 {
            info!(events = rebuilt.events, last_seq, "rebuilding history");
        }
        if reached_end {
            break 'read;
        }
    }
    Ok(rebuilt)
}

/// A machine whose stored versions are not contiguous.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct Gap {
    pub equipment_id: String,
    pub stored: i64,
    pub first_version: i64,
    pub last_version: i64,
}

/// The gap check: every machine whose stored event versions are not one contiguous run
/// (retention removes the oldest, so a run need not start at 1).
pub async fn gaps(db: &DatabaseConnection) -> anyhow::Result<Vec<Gap>> {
    let backend = db.get_database_backend();
    let sql = "SELECT equipment_id, COUNT(*) AS stored, MIN(version) AS first_version, \
               MAX(version) AS last_version FROM equipment_event GROUP BY equipment_id \
               HAVING COUNT(*) <> MAX(version) - MIN(version) + 1 ORDER BY equipment_id";
    Ok(Gap::find_by_statement(Statement::from_string(backend, sql))
        .all(db)
        .await?)
}

/// Deletes raw events recorded before `now − keep` (the state spans, which the reports
/// read, stay). Returns how many were deleted.
pub async fn apply_retention(db: &DatabaseConnection, keep: Duration) -> anyhow::Result<u64> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let cutoff = chrono::Utc::now().timestamp_millis() - keep.as_millis() as i64;
    let deleted = equipment_event::Entity::delete_many()
        .filter(equipment_event::Column::RecordedAtMs.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected;
    if deleted > 0 {
        info!(deleted, "raw events past their retention deleted");
        metrics::counter!("eq_history_retention_deleted_total").increment(deleted);
    }
    Ok(deleted)
}

/// Applies the retention every `every` until `shutdown` (`keep` zero: keep forever).
pub async fn retention_loop(
    db: DatabaseConnection,
    keep: Duration,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if keep.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = apply_retention(&db, keep).await {
            warn!(%error, "retention of raw events failed");
        }
    }
}

/// Publishes the floor's status counts as the gauge `eq_equipment_status{status}` (every
/// node with the history role reports the same numbers: dashboards take the max).
pub async fn floor_status_loop(
    db: DatabaseConnection,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match super::queries::status_counts(&db).await {
            Ok(counts) => {
                for status in ["green", "yellow", "red"] {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!("eq_equipment_status", "status" => status).set(n as f64);
                }
            }
            Err(error) => warn!(%error, "counting the floor's statuses failed"),
        }
    }
}
