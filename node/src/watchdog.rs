//! Watchdogs: "red for longer than M" and "no change from this machine's device for N".
//! Every few seconds the node asks the history database which machines may be due (red
//! since before now − M, or last heard from their device before now − N, and not alerted
//! for that occurrence yet), and sends each a `RaiseAlert` command through the router. The
//! owning actor decides with its own, current state: it appends an `alert_raised` event
//! (published on `eq.alerts.<id>` too) only if the condition holds and that occurrence was
//! not alerted before — the marks travel in every event, so a restart, a hand-off or
//! several nodes running the watchdog never alert one occurrence twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use eq_actors::domain::{EquipmentId, Source};
use eq_actors::equipment::{Action, AlertKind, Command, CommandError, Rejection};
use eq_entities::equipment;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::router::Router;

/// Most machines asked about per check and kind (the rest wait for the next check).
const MAX_PER_CHECK: u64 = 1_000;

/// The watchdogs' limits (zero: off).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub red_after: Duration,
    pub device_silent_after: Duration,
    pub interval: Duration,
}

/// Runs the checks until `shutdown`.
pub async fn run(
    db: DatabaseConnection,
    router: Arc<Router>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    if limits.red_after.is_zero() && limits.device_silent_after.is_zero() {
        return;
    }
    info!(?limits, "watchdogs running");
    let mut tick = tokio::time::interval(limits.interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !limits.red_after.is_zero() {
            check(
                &db,
                &router,
                AlertKind::RedTooLong {
                    after_secs: limits.red_after.as_secs(),
                },
            )
            .await;
        }
        if !limits.device_silent_after.is_zero() {
            check(
                &db,
                &router,
                AlertKind::DeviceSilent {
                    after_secs: limits.device_silent_after.as_secs(),
                },
            )
            .await;
        }
    }
}

/// Asks the owners of the machines that may be due.
async fn check(db: &DatabaseConnection, router: &Router, kind: AlertKind) {
    use equipment::Column as C;
    let now_ms = Utc::now().timestamp_millis();
    let query = equipment::Entity::find().filter(C::Decommissioned.eq(false));
    let query = match kind {
        AlertKind::RedTooLong { after_secs } => query
            .filter(C::Status.eq("red"))
            .filter(C::StatusSinceMs.lte(now_ms - after_secs as i64 * 1000))
            .filter(
                Condition::any()
                    .add(C::RedAlertedSinceMs.is_null())
                    .add(Expr::col(C::RedAlertedSinceMs).ne(Expr::col(C::StatusSinceMs))),
            ),
        AlertKind::DeviceSilent { after_secs } => query
            .filter(C::DeviceSeenAtMs.lte(now_ms - after_secs as i64 * 1000))
            .filter(
                Condition::any()
                    .add(C::SilenceAlertedSeenMs.is_null())
                    .add(Expr::col(C::SilenceAlertedSeenMs).ne(Expr::col(C::DeviceSeenAtMs))),
            ),
    };
    let candidates = match query.limit(MAX_PER_CHECK).all(db).await {
        Ok(rows) => rows,
        Err(error) => {
            warn!(%error, "watchdog cannot read the history database");
            return;
        }
    };
    for row in candidates {
        let Ok(id) = EquipmentId::parse(&row.id) else {
            continue;
        };
        let command = Command {
            equipment_id: id.clone(),
            action: Action::RaiseAlert(kind),
            command_id: None,
            expected_version: None,
            updated_by: "watchdog".into(),
            source: Source::System,
            ingest: None,
            scope: None,
        };
        match router.execute(command).await {
            Ok(_) => {
                let label = match kind {
                    AlertKind::RedTooLong { .. } => "red_too_long",
                    AlertKind::DeviceSilent { .. } => "device_silent",
                };
                metrics::counter!("eq_alerts_total", "kind" => label).increment(1);
                info!(equipment_id = %id, alert = label, "alert raised");
            }
            // The history lagged behind the actor: nothing to do.
            Err(CommandError::Rejected(Rejection::AlertNotDue)) => {}
            Err(error) => debug!(equipment_id = %id, %error, "watchdog command not applied"),
        }
    }
}
