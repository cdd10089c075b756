//! One row per `reason_corrected` event: the stop (the version of the span that began it)
//! and its reason from then on.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reason_correction")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub equipment_id: String,
    /// The version of the correction event (later corrections win).
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    pub stop_version: i64,
    pub reason: Option<String>,
    pub corrected_by: String,
    pub recorded_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
