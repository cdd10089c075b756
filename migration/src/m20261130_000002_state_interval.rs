//! `state_interval`: for every event of an equipment, the `[start, end)` span during which
//! the state it produced held (`end` is the next version's start; open while it is the
//! latest). Time in state, availability, downtime by reason, MTBF and MTTR are read from
//! here (sums over the spans that overlap a window), never recomputed from the raw events,
//! and they survive the raw events' retention.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StateInterval {
    Table,
    EquipmentId,
    Version,
    Site,
    Line,
    Status,
    Reason,
    RecordedReason,
    InService,
    StartsStop,
    StartMs,
    EndMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use StateInterval as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(S::EquipmentId).string_len(64).not_null())
                    .col(ColumnDef::new(S::Version).big_integer().not_null())
                    .col(ColumnDef::new(S::Site).string_len(64).not_null())
                    .col(ColumnDef::new(S::Line).string_len(64).not_null())
                    .col(ColumnDef::new(S::Status).string_len(16).not_null())
                    .col(ColumnDef::new(S::Reason).string_len(64).null())
                    .col(ColumnDef::new(S::RecordedReason).string_len(64).null())
                    .col(ColumnDef::new(S::InService).boolean().not_null())
                    .col(ColumnDef::new(S::StartsStop).boolean().not_null())
                    .col(ColumnDef::new(S::StartMs).big_integer().not_null())
                    .col(ColumnDef::new(S::EndMs).big_integer().null())
                    .primary_key(Index::create().col(S::EquipmentId).col(S::Version))
                    .to_owned(),
            )
            .await?;
        // Fleet reports read the spans of a site (and line) that overlap a window; one
        // machine's time in state reads its own.
        for (name, columns) in [
            (
                "idx_state_interval_site_line_start",
                vec![S::Site, S::Line, S::StartMs],
            ),
            (
                "idx_state_interval_equipment_start",
                vec![S::EquipmentId, S::StartMs],
            ),
        ] {
            let mut index = Index::create();
            index.if_not_exists().name(name).table(S::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        // The open span of each machine (the consumer closes them on every batch): a
        // partial index, so that finding them does not read a machine's whole past.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_state_interval_open \
                 ON state_interval (equipment_id, version) WHERE end_ms IS NULL",
            )
            .await?;
        Ok(())
    }
}
