//! One row per accepted event; (equipment_id, version) is unique, so a redelivered event
//! can never become a second row.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "equipment_event")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub equipment_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    pub stream_seq: i64,
    pub kind: String,
    pub site: String,
    pub line: String,
    pub status: String,
    pub previous_status: Option<String>,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub updated_by: String,
    pub source: String,
    pub occurred_at_ms: Option<i64>,
    pub recorded_at_ms: i64,
    pub clock_suspect: bool,
    pub command_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
