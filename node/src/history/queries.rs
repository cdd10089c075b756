//! Read queries over the history database: listing equipment with filters and keyset
//! pagination, and an equipment's history.

use eq_entities::{equipment, equipment_event};
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
