//! Read queries over the history database: listing equipment with filters and keyset
//! pagination, an equipment's history, and the state spans that overlap a window.

use eq_entities::{equipment, equipment_event, state_interval};

use super::analytics::{Span, Window};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

/// Filters for listing equipment.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub site: Option<String>,
    pub line: Option<String>,
    pub status: Option<String>,
    pub include_decommissioned: bool,
}

/// A page of rows and the cursor to the next page.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Keyset pagination: the query fetched `limit + 1` rows; an extra row means there is a
    /// next page, which starts after the last row kept.
    fn from_rows(mut items: Vec<T>, limit: u64, cursor_of: impl Fn(&T) -> String) -> Self {
        let next_cursor = if items.len() as u64 > limit {
            items.truncate(limit as usize);
            items.last().map(cursor_of)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// Lists equipment ordered by id, after `cursor` (an id), at most `limit`.
pub async fn list_equipment(
    db: &DatabaseConnection,
    filter: &ListFilter,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<equipment::Model>, DbErr> {
    use equipment::Column as C;
    let mut query = equipment::Entity::find();
    if let Some(site) = &filter.site {
        query = query.filter(C::Site.eq(site.as_str()));
    }
    if let Some(line) = &filter.line {
        query = query.filter(C::Line.eq(line.as_str()));
    }
    if let Some(status) = &filter.status {
        query = query.filter(C::Status.eq(status.as_str()));
    }
    if !filter.include_decommissioned {
        query = query.filter(C::Decommissioned.eq(false));
    }
    if let Some(cursor) = cursor {
        query = query.filter(C::Id.gt(cursor));
    }
    let mut items = query.order_by_asc(C::Id).limit(limit + 1).all(db).await?;
    let next_cursor = if items.len() as u64 > limit {
        items.truncate(limit as usize);
        items.last().map(|m| m.id.clone())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Filters for an equipment's history; times are milliseconds since the epoch, `[from, to)`.
#[derive(Debug, Default, Clone)]
pub struct HistoryFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Only versions greater than this (the cursor).
    pub after_version: Option<i64>,
}

/// An equipment's events, oldest first.
pub async fn history(
    db: &DatabaseConnection,
    id: &str,
    filter: &HistoryFilter,
    limit: u64,
) -> Result<Page<equipment_event::Model>, DbErr> {
    use equipment_event::Column as C;
    let mut query = equipment_event::Entity::find().filter(C::EquipmentId.eq(id));
    if let Some(from) = filter.from_ms {
        query = query.filter(C::RecordedAtMs.gte(from));
    }
    if let Some(to) = filter.to_ms {
        query = query.filter(C::RecordedAtMs.lt(to));
    }
    if let Some(after) = filter.after_version {
        query = query.filter(C::Version.gt(after));
    }
    let items = query
        .order_by_asc(C::Version)
        .limit(limit + 1)
        .all(db)
        .await?;
    Ok(Page::from_rows(items, limit, |m| m.version.to_string()))
}

/// Which machines' spans to read.
#[derive(Debug, Default, Clone)]
pub struct SpanFilter {
    pub equipment_id: Option<String>,
    pub site: Option<String>,
    pub line: Option<String>,
}

/// The span that begins at `version` of a machine, and whether a span that is not red
/// follows it (the stop it begins, if any, has ended).
pub async fn span_at(
    db: &DatabaseConnection,
    equipment_id: &str,
    version: u64,
) -> Result<Option<(Span, bool)>, DbErr> {
    use state_interval::Column as C;
    let Some(span) = state_interval::Entity::find()
        .filter(C::EquipmentId.eq(equipment_id))
        .filter(C::Version.eq(version as i64))
        .one(db)
        .await?
        .and_then(span_of)
    else {
        return Ok(None);
    };
    let ended = state_interval::Entity::find()
        .filter(C::EquipmentId.eq(equipment_id))
        .filter(C::Version.gt(version as i64))
        .filter(C::Status.ne("red"))
        .one(db)
        .await?
        .is_some();
    Ok(Some((span, ended)))
}

/// The state spans that overlap `window` (for one machine: oldest first). Only the columns
/// the reports need are read, as tuples (a month of a fleet is millions of rows).
pub async fn spans(
    db: &DatabaseConnection,
    filter: &SpanFilter,
    window: Window,
) -> Result<Vec<Span>, DbErr> {
    use sea_orm::Condition;
    use state_interval::Column as C;
    let mut query = state_interval::Entity::find()
        .select_only()
        .columns([
            C::EquipmentId,
            C::Version,
            C::Site,
            C::Line,
            C::Status,
            C::Reason,
            C::InService,
            C::StartsStop,
            C::StartMs,
            C::EndMs,
        ])
        .filter(C::StartMs.lt(window.to_ms))
        .filter(
            Condition::any()
                .add(C::EndMs.is_null())
                .add(C::EndMs.gt(window.from_ms)),
        );
    if let Some(id) = &filter.equipment_id {
        query = query.filter(C::EquipmentId.eq(id.as_str()));
    }
    if let Some(site) = &filter.site {
        query = query.filter(C::Site.eq(site.as_str()));
    }
    if let Some(line) = &filter.line {
        query = query.filter(C::Line.eq(line.as_str()));
    }
    type Row = (
        String,
        i64,
        String,
        String,
        String,
        Option<String>,
        bool,
        bool,
        i64,
        Option<i64>,
    );
    // One machine's spans in version order (stops need it); a fleet's in table order: a
    // scan in key order would be millions of index lookups, and totals do not need it.
    if filter.equipment_id.is_some() {
        query = query.order_by_asc(C::EquipmentId).order_by_asc(C::Version);
    }
    let rows: Vec<Row> = query.into_tuple().all(db).await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(
                equipment_id,
                version,
                site,
                line,
                status,
                reason,
                in_service,
                starts_stop,
                start_ms,
                end_ms,
            )| {
                Some(Span {
                    status: eq_actors::Status::parse(&status).ok()?,
                    equipment_id,
                    version: version as u64,
                    site,
                    line,
                    reason,
                    in_service,
                    starts_stop,
                    start_ms,
                    end_ms,
                })
            },
        )
        .collect())
}

fn span_of(row: state_interval::Model) -> Option<Span> {
    Some(Span {
        status: eq_actors::Status::parse(&row.status).ok()?,
        equipment_id: row.equipment_id,
        version: row.version as u64,
        site: row.site,
        line: row.line,
        reason: row.reason,
        in_service: row.in_service,
        starts_stop: row.starts_stop,
        start_ms: row.start_ms,
        end_ms: row.end_ms,
    })
}

/// How many machines in service are in each status (`(status, count)`).
pub async fn status_counts(db: &DatabaseConnection) -> Result<Vec<(String, i64)>, DbErr> {
    equipment::Entity::find()
        .select_only()
        .column(equipment::Column::Status)
        .column_as(equipment::Column::Id.count(), "count")
        .filter(equipment::Column::Decommissioned.eq(false))
        .group_by(equipment::Column::Status)
        .into_tuple::<(String, i64)>()
        .all(db)
        .await
}
