//! `History` operations: an equipment's changes over time.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use eq_entities::equipment_event;
use poem::web::Data;
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::auth::Caller;
use super::models::{EventKind, HistoryEntry, HistoryPage, Source, status_from_str};
use super::problem::ApiError;
use super::token::{Token, VersionCursor};
use super::{ApiTags, AppState, parse_id};
use crate::auth::Operation;
use crate::history::queries::{self, HistoryFilter};

/// Answer with a page of history.
#[derive(ApiResponse)]
pub enum History {
    #[oai(status = 200)]
    Ok(Json<HistoryPage>),
}

/// Operations of this tag (state comes from the request's data).
#[derive(Default)]
pub struct HistoryApi;

#[OpenApi(tag = "ApiTags::History")]
impl HistoryApi {
    /// An equipment's history
    ///
    /// Every accepted change, oldest first, recorded in `[from, to)` (server clock; `from`
    /// after `to` is 400 `invalid_range`).
    /// Served from the history database: a change appears once the history consumer has
    /// written it.
    #[oai(
        path = "/v1/equipment/:id/history",
        method = "get",
        operation_id = "getHistory"
    )]
    #[allow(clippy::too_many_arguments)] // one argument per request part
    async fn history(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        id: Path<Token>,
        /// Earliest `recorded_at`, inclusive.
        from: Query<Option<DateTime<Utc>>>,
        /// Latest `recorded_at`, exclusive.
        to: Query<Option<DateTime<Utc>>>,
        /// Page size, 1 to 1000 (default 100).
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u64>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<VersionCursor>>,
    ) -> Result<History, ApiError> {
        caller.require(Operation::Read)?;
        let id = parse_id(id.0.into_inner())?;
        let after_version = match cursor.0 {
            // At most 18 digits: `VERSION_CURSOR_PATTERN`, and always an `i64`.
            Some(c) => Some(
                super::parse_digits(c.as_str())
                    .filter(|_| c.as_str().len() <= 18)
                    .map(|v| v as i64)
                    .ok_or_else(|| {
                        ApiError::bad_request("invalid_cursor", "cursor is not valid")
                    })?,
            ),
            None => None,
        };
        if let (Some(f), Some(t)) = (from.0, to.0)
            && f > t
        {
            return Err(ApiError::bad_request(
                "invalid_range",
                "`from` is after `to`",
            ));
        }
        // 404 for an id that was never registered (the event log is authoritative).
        state.current(&id).await?;
        let db = state.db()?;
        let filter = HistoryFilter {
            from_ms: from.0.map(|t| t.timestamp_millis()),
            to_ms: to.0.map(|t| t.timestamp_millis()),
            after_version,
        };
        let page = queries::history(db, id.as_str(), &filter, limit.0)
            .await
            .map_err(|e| ApiError::unavailable(format!("history database: {e}")))?;
        Ok(History::Ok(Json(HistoryPage {
            items: page.items.into_iter().map(entry_from_row).collect(),
            next_cursor: page.next_cursor,
        })))
    }
}

fn default_limit() -> u64 {
    100
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn entry_from_row(row: equipment_event::Model) -> HistoryEntry {
    HistoryEntry {
        version: row.version as u64,
        kind: EventKind::from_stored(&row.kind),
        status: status_from_str(&row.status),
        previous_status: row.previous_status.as_deref().map(status_from_str),
        reason: row.reason,
        note: row.note,
        updated_by: row.updated_by,
        source: Source::from_stored(&row.source),
        site: row.site,
        line: row.line,
        occurred_at: row.occurred_at_ms.map(millis),
        recorded_at: millis(row.recorded_at_ms),
        clock_suspect: row.clock_suspect,
        command_id: row.command_id,
    }
}

pub(super) fn millis_to_time(ms: i64) -> DateTime<Utc> {
    millis(ms)
}
