//! `reason_correction`: the reason of a past stop, assigned or corrected later by an
//! operator (an event of its own in the log; this table is its projection). The consumer
//! applies each correction to the stop's spans, again whenever spans of that machine arrive,
//! so the order in which several nodes write batches does not matter.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ReasonCorrection {
    Table,
    EquipmentId,
    Version,
    StopVersion,
    Reason,
    CorrectedBy,
    RecordedAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ReasonCorrection as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(R::EquipmentId).string_len(64).not_null())
                    .col(ColumnDef::new(R::Version).big_integer().not_null())
                    .col(ColumnDef::new(R::StopVersion).big_integer().not_null())
                    .col(ColumnDef::new(R::Reason).string_len(64).null())
                    .col(ColumnDef::new(R::CorrectedBy).string_len(128).not_null())
                    .col(ColumnDef::new(R::RecordedAtMs).big_integer().not_null())
                    .primary_key(Index::create().col(R::EquipmentId).col(R::Version))
                    .to_owned(),
            )
            .await
    }
}
