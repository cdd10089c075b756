//! One row per event: the span `[start_ms, end_ms)` during which the state that event
//! produced held (`end_ms` is `None` while it is the machine's latest state).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "state_interval")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub equipment_id: String,
    /// The version of the event that began the span.
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    pub site: String,
    pub line: String,
    pub status: String,
    /// The reason in effect: the recorded one, or a later correction's.
    pub reason: Option<String>,
    /// The reason the event itself carried.
    pub recorded_reason: Option<String>,
    /// False once the machine is decommissioned: such spans count for nothing.
    pub in_service: bool,
    /// The span begins a stop: red, after a status that was not red.
    pub starts_stop: bool,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
