//! The current state of each equipment, kept by the history consumer (an upsert that never
//! goes back to an older version). Serves listing and filtering.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "equipment")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub description: String,
    pub site: String,
    pub line: String,
    /// JSON array of strings.
    pub tags: String,
    pub status: String,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub updated_by: String,
    pub source: String,
    pub status_since_ms: i64,
    pub version: i64,
    pub decommissioned: bool,
    pub registered_at_ms: i64,
    pub updated_at_ms: i64,
    /// Last change that came from the machine's device.
    pub device_seen_at_ms: Option<i64>,
    /// `status_since` of the red period already alerted as too long.
    pub red_alerted_since_ms: Option<i64>,
    /// `device_seen_at` of the silence already alerted.
    pub silence_alerted_seen_ms: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
