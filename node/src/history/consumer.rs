//! The history consumer: a durable JetStream pull consumer (one group however many nodes
//! run it) that writes events into SQL in batches. A batch is one transaction; the batch is
//! acknowledged only after the commit, and the unique key (equipment id, version) with
//! `ON CONFLICT DO NOTHING` makes a redelivery after a crash harmless.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use eq_actors::equipment::Event;
use eq_actors::store::decode;
use eq_actors::subjects::{HISTORY_CONSUMER, Subjects};
use eq_entities::{equipment, equipment_event, reason_correction, state_interval};
use futures::StreamExt;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    Statement, TransactionTrait,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;

/// Largest number of events written in one transaction.
pub const MAX_BATCH: usize = 500;

/// Runs the consumer until `shutdown`, reconnecting after any error.
pub async fn run(
    js: jetstream::Context,
    subjects: Subjects,
    db: DatabaseConnection,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        let started = std::time::Instant::now();
        match consume(&js, &subjects, &db, &shutdown, &mut backoff).await {
            Ok(()) => return,
            Err(error) => {
                let retry = backoff.failed_after(started.elapsed());
                if retry.loud {
                    warn!(
                        error = format!("{error:#}"),
                        "history consumer interrupted again; restarting"
                    );
                } else {
                    debug!(
                        error = format!("{error:#}"),
                        "history consumer interrupted; restarting"
                    );
                }
                metrics::counter!("eq_history_consumer_restarts_total").increment(1);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry.after) => {}
                }
            }
        }
    }
}

/// The consumer's configuration (durable, explicit acks, every event since the beginning).
pub fn consumer_config(subjects: &Subjects) -> pull::Config {
    pull::Config {
        durable_name: Some(HISTORY_CONSUMER.to_string()),
        description: Some("Equipment Live history writer".into()),
        filter_subject: subjects.events_all(),
        deliver_policy: DeliverPolicy::All,
        // Explicit, per message: with several nodes pulling from the one durable consumer,
        // an ack-all by one node would also acknowledge what another node has not committed.
        ack_policy: AckPolicy::Explicit,
        // Short, because messages a crashed node held are redelivered only after it; a
        // redelivery is harmless (ON CONFLICT DO NOTHING).
        ack_wait: Duration::from_secs(5),
        max_ack_pending: 20_000,
        ..Default::default()
    }
}

async fn consume(
    js: &jetstream::Context,
    subjects: &Subjects,
    db: &DatabaseConnection,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let stream = js.get_stream(subjects.events_stream()).await?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(HISTORY_CONSUMER, consumer_config(subjects))
        .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(2 * MAX_BATCH)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await?;
    // `ready_chunks` hands over whatever has arrived (up to a batch) while the client keeps
    // pulling in the background: fetching overlaps with the SQL transaction.
    let mut batches = messages.ready_chunks(MAX_BATCH);
    let mut lag_tick = tokio::time::interval(Duration::from_secs(2));
    info!("history consumer running");
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = lag_tick.tick() => {
                let mut consumer = consumer.clone();
                if let Ok(info) = consumer.info().await {
                    metrics::gauge!("eq_history_lag_events")
                        .set((info.num_pending + info.num_ack_pending as u64) as f64);
                }
                continue;
            }
            batch = batches.next() => match batch {
                Some(batch) => batch,
                None => anyhow::bail!("message stream ended"),
            },
        };
        let mut messages = Vec::with_capacity(batch.len());
        for message in batch {
            messages.push(message.map_err(|e| anyhow::anyhow!("pull failed: {e}"))?);
        }
        let mut events = Vec::with_capacity(messages.len());
        // One span per event, in the trace of the command that made it, lasting from the
        // batch's start to its acknowledgement: the last hop of that command's trace.
        let mut recorded = Vec::with_capacity(messages.len());
        for message in &messages {
            let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            match decode(seq, &message.payload) {
                Ok(event) => {
                    let span = tracing::info_span!(
                        "history.record",
                        equipment_id = %event.equipment_id,
                        version = event.version.0,
                        seq,
                        batch = messages.len(),
                        trace_id = tracing::field::Empty,
                    );
                    eq_actors::trace::follow(&span, message.headers.as_ref());
                    eq_actors::trace::record_trace_id(&span);
                    recorded.push(span);
                    events.push(Decoded { seq, event });
                }
                Err(error) => {
                    // Never written by this system; skip rather than block the history.
                    warn!(%error, subject = %message.subject, "undecodable event skipped");
                    metrics::counter!("eq_history_undecodable_total").increment(1);
                }
            }
        }
        write_with_retry(db, &events, shutdown).await?;
        for message in &messages {
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack failed: {e}"))?;
        }
        metrics::counter!("eq_history_events_written_total").increment(events.len() as u64);
        backoff.succeeded();
        for span in recorded {
            debug!(parent: &span, "event recorded in the history");
        }
        debug!(events = events.len(), "history batch committed");
    }
}

/// Retries a batch until it commits or the node shuts down (then it stays unacknowledged
/// and is redelivered).
async fn write_with_retry(
    db: &DatabaseConnection,
    events: &[Decoded],
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match write_batch(db, events).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                warn!(%error, "history batch failed; retrying");
                metrics::counter!("eq_history_write_errors_total").increment(1);
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shutdown during retry"),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Writes events and the resulting current states in one transaction.
pub async fn write_batch(db: &DatabaseConnection, events: &[Decoded]) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<equipment_event::ActiveModel> = events.iter().map(event_row).collect();
    // Only the newest state per equipment in this batch goes to the current-state table.
    let mut latest: std::collections::HashMap<&str, &Event> = std::collections::HashMap::new();
    for Decoded { event, .. } in events {
        let entry = latest.entry(event.equipment_id.as_str()).or_insert(event);
        if event.version > entry.version {
            *entry = event;
        }
    }
    let states: Vec<equipment::ActiveModel> = latest.values().map(|e| state_row(e)).collect();

    let txn = db.begin().await?;
    serialize_writers(&txn).await?;
    equipment_event::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([
                equipment_event::Column::EquipmentId,
                equipment_event::Column::Version,
            ])
            .do_nothing()
            .to_owned(),
        )
        .try_insert()
        .exec_without_returning(&txn)
        .await?;
    let spans: Vec<state_interval::ActiveModel> =
        events.iter().map(|d| span_row(&d.event)).collect();
    state_interval::Entity::insert_many(spans)
        .on_conflict(
            OnConflict::columns([
                state_interval::Column::EquipmentId,
                state_interval::Column::Version,
            ])
            .do_nothing()
            .to_owned(),
        )
        .try_insert()
        .exec_without_returning(&txn)
        .await?;
    close_spans(&txn, latest.keys().copied()).await?;
    let corrections: Vec<reason_correction::ActiveModel> = events
        .iter()
        .filter_map(|d| correction_row(&d.event))
        .collect();
    if !corrections.is_empty() {
        reason_correction::Entity::insert_many(corrections)
            .on_conflict(
                OnConflict::columns([
                    reason_correction::Column::EquipmentId,
                    reason_correction::Column::Version,
                ])
                .do_nothing()
                .to_owned(),
            )
            .try_insert()
            .exec_without_returning(&txn)
            .await?;
    }
    apply_corrections(&txn, latest.keys().copied()).await?;
    use equipment::Column as C;
    equipment::Entity::insert_many(states)
        .on_conflict(
            OnConflict::column(C::Id)
                .update_columns([
                    C::Name,
                    C::Description,
                    C::Site,
                    C::Line,
                    C::Tags,
                    C::Status,
                    C::Reason,
                    C::Note,
                    C::UpdatedBy,
                    C::Source,
                    C::StatusSinceMs,
                    C::Version,
                    C::Decommissioned,
                    C::RegisteredAtMs,
                    C::UpdatedAtMs,
                    C::DeviceSeenAtMs,
                    C::RedAlertedSinceMs,
                    C::SilenceAlertedSeenMs,
                ])
                // Never move the current state back to an older version (redeliveries).
                .action_and_where(Expr::cust("equipment.version < excluded.version"))
                .to_owned(),
        )
        .try_insert()
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await
}

/// One history batch at a time, across every node. Spans are closed and corrections applied
/// by statements that read other rows of the same machine: two PostgreSQL transactions
/// running side by side (READ COMMITTED) would not see each other's rows, and a span could
/// stay open. A transaction-scoped advisory lock serializes the writers (several history
/// nodes then give availability, not throughput; SQLite serializes writers anyway).
async fn serialize_writers(txn: &DatabaseTransaction) -> Result<(), DbErr> {
    if txn.get_database_backend() == DbBackend::Postgres {
        // An arbitrary key of our own: "EQ-HIST".
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(4545814897152340)")
            .await?;
    }
    Ok(())
}

/// Closes every open span of these machines whose successor (the next version) is known:
/// its end is the successor's start. Whatever order events arrive in (several nodes pull
/// from the one consumer), the spans end up as if they had been written in order, and a
/// redelivery changes nothing.
async fn close_spans<'a>(
    txn: &DatabaseTransaction,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), DbErr> {
    let ids: Vec<&str> = ids.collect();
    let backend = txn.get_database_backend();
    let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
    let successor = "FROM state_interval n WHERE n.equipment_id = state_interval.equipment_id \
                     AND n.version = state_interval.version + 1";
    let sql = format!(
        "UPDATE state_interval SET end_ms = (SELECT n.start_ms {successor}) \
         WHERE end_ms IS NULL AND equipment_id IN ({}) AND EXISTS (SELECT 1 {successor})",
        placeholders.join(", ")
    );
    let values: Vec<sea_orm::Value> = ids.iter().map(|id| (*id).into()).collect();
    let sql = numbered(backend, &sql);
    txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(())
}

/// Applies every reason correction of these machines to the spans of its stop (the red
/// spans from the stop's first version until the machine left red, and before the
/// correction itself: a reason set later wins), oldest correction first. Run for every
/// batch, so that spans written after their correction (another node's batch, committed
/// later) are corrected too. Each run starts again from the recorded reasons: a run that
/// saw only part of a stop (its end not written yet) may have reached too far.
async fn apply_corrections<'a>(
    txn: &DatabaseTransaction,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
    let ids: Vec<&str> = ids.collect();
    let corrections = reason_correction::Entity::find()
        .filter(reason_correction::Column::EquipmentId.is_in(ids))
        .order_by_asc(reason_correction::Column::EquipmentId)
        .order_by_asc(reason_correction::Column::Version)
        .all(txn)
        .await?;
    let backend = txn.get_database_backend();
    let reset = numbered(
        backend,
        "UPDATE state_interval SET reason = recorded_reason \
         WHERE equipment_id = $1 AND version >= $2 AND version < $3",
    );
    for c in &corrections {
        let values: Vec<sea_orm::Value> = vec![
            c.equipment_id.clone().into(),
            c.stop_version.into(),
            c.version.into(),
        ];
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            reset.clone(),
            values,
        ))
        .await?;
    }
    let sql = numbered(
        backend,
        "UPDATE state_interval SET reason = $1 \
         WHERE equipment_id = $2 AND version >= $3 AND version < $4 AND status = 'red' \
         AND version < COALESCE((SELECT MIN(n.version) FROM state_interval n \
             WHERE n.equipment_id = $2 AND n.version > $3 AND n.status <> 'red'), \
             9223372036854775807)",
    );
    for c in corrections {
        let values: Vec<sea_orm::Value> = vec![
            c.reason.clone().into(),
            c.equipment_id.clone().into(),
            c.stop_version.into(),
            c.version.into(),
        ];
        txn.execute_raw(Statement::from_sql_and_values(backend, sql.clone(), values))
            .await?;
    }
    Ok(())
}

fn correction_row(e: &Event) -> Option<reason_correction::ActiveModel> {
    use sea_orm::ActiveValue::Set;
    let c = e.correction.as_ref()?;
    Some(reason_correction::ActiveModel {
        equipment_id: Set(e.equipment_id.to_string()),
        version: Set(e.version.0 as i64),
        stop_version: Set(c.stop_version.0 as i64),
        reason: Set(c.reason.as_ref().map(|r| r.to_string())),
        corrected_by: Set(e.state.updated_by.clone()),
        recorded_at_ms: Set(e.recorded_at.timestamp_millis()),
    })
}

/// Raw SQL is written with PostgreSQL's numbered parameters (`$1`, which may repeat);
/// SQLite spells them `?1`. Plain `?` would bind by position of appearance instead.
fn numbered(backend: DbBackend, sql: &str) -> String {
    match backend {
        DbBackend::Postgres => sql.to_string(),
        _ => sql.replace('$', "?"),
    }
}

/// The span an event begins.
fn span_row(e: &Event) -> state_interval::ActiveModel {
    use eq_actors::Status;
    use eq_actors::equipment::EventKind;
    use sea_orm::ActiveValue::Set;
    let s = &e.state;
    let was_red = match e.kind {
        EventKind::Registered => false,
        _ => e.previous_status.unwrap_or(s.status) == Status::Red,
    };
    state_interval::ActiveModel {
        equipment_id: Set(e.equipment_id.to_string()),
        version: Set(e.version.0 as i64),
        site: Set(s.site.to_string()),
        line: Set(s.line.to_string()),
        status: Set(s.status.as_str().to_string()),
        reason: Set(s.reason.as_ref().map(|r| r.to_string())),
        recorded_reason: Set(s.reason.as_ref().map(|r| r.to_string())),
        in_service: Set(!s.decommissioned),
        starts_stop: Set(s.status == Status::Red && !was_red),
        start_ms: Set(e.recorded_at.timestamp_millis()),
        end_ms: Set(None),
    }
}

/// An event as pulled from the stream.
pub struct Decoded {
    pub seq: u64,
    pub event: Event,
}

fn event_row(d: &Decoded) -> equipment_event::ActiveModel {
    use sea_orm::ActiveValue::Set;
    let (seq, e) = (d.seq, &d.event);
    let s = &e.state;
    equipment_event::ActiveModel {
        equipment_id: Set(e.equipment_id.to_string()),
        version: Set(e.version.0 as i64),
        stream_seq: Set(seq as i64),
        kind: Set(e.kind.as_str().to_string()),
        site: Set(s.site.to_string()),
        line: Set(s.line.to_string()),
        status: Set(s.status.as_str().to_string()),
        previous_status: Set(e.previous_status.map(|p| p.as_str().to_string())),
        reason: Set(s.reason.as_ref().map(|r| r.to_string())),
        note: Set(s.note.clone()),
        updated_by: Set(s.updated_by.clone()),
        source: Set(s.source.as_str().to_string()),
        occurred_at_ms: Set(s.occurred_at.map(|t| t.timestamp_millis())),
        recorded_at_ms: Set(e.recorded_at.timestamp_millis()),
        clock_suspect: Set(s.clock_suspect),
        command_id: Set(e.command_id.clone()),
    }
}

fn state_row(e: &Event) -> equipment::ActiveModel {
    use sea_orm::ActiveValue::Set;
    let s = &e.state;
    equipment::ActiveModel {
        id: Set(s.id.to_string()),
        name: Set(s.name.clone()),
        description: Set(s.description.clone()),
        site: Set(s.site.to_string()),
        line: Set(s.line.to_string()),
        tags: Set(serde_json::to_string(&s.tags).unwrap_or_else(|_| "[]".into())),
        status: Set(s.status.as_str().to_string()),
        reason: Set(s.reason.as_ref().map(|r| r.to_string())),
        note: Set(s.note.clone()),
        updated_by: Set(s.updated_by.clone()),
        source: Set(s.source.as_str().to_string()),
        status_since_ms: Set(s.status_since.timestamp_millis()),
        version: Set(s.version.0 as i64),
        decommissioned: Set(s.decommissioned),
        registered_at_ms: Set(s.registered_at.timestamp_millis()),
        updated_at_ms: Set(s.updated_at.timestamp_millis()),
        device_seen_at_ms: Set(s.device_seen_at.map(|t| t.timestamp_millis())),
        red_alerted_since_ms: Set(e.alerted.red_since.map(|t| t.timestamp_millis())),
        silence_alerted_seen_ms: Set(e.alerted.device_seen_at.map(|t| t.timestamp_millis())),
    }
}
