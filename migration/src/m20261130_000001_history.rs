//! The history tables: `equipment_event` (one row per event, unique per equipment and
//! version) and `equipment` (the current state of each equipment, for listing).
//! Times are integer milliseconds since the Unix epoch: portable, sortable and compact.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EquipmentEvent {
    Table,
    EquipmentId,
    Version,
    StreamSeq,
    Kind,
    Site,
    Line,
    Status,
    PreviousStatus,
    Reason,
    Note,
    UpdatedBy,
    Source,
    OccurredAtMs,
    RecordedAtMs,
    ClockSuspect,
    CommandId,
    Payload,
}

#[derive(DeriveIden)]
enum Equipment {
    Table,
    Id,
    Name,
    Description,
    Site,
    Line,
    Tags,
    Status,
    Reason,
    Note,
    UpdatedBy,
    Source,
    StatusSinceMs,
    Version,
    Decommissioned,
    RegisteredAtMs,
    UpdatedAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EquipmentEvent::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(EquipmentEvent::EquipmentId).string_len(64).not_null())
                    .col(ColumnDef::new(EquipmentEvent::Version).big_integer().not_null())
                    .col(ColumnDef::new(EquipmentEvent::StreamSeq).big_integer().not_null())
                    .col(ColumnDef::new(EquipmentEvent::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(EquipmentEvent::Site).string_len(64).not_null())
                    .col(ColumnDef::new(EquipmentEvent::Line).string_len(64).not_null())
                    .col(ColumnDef::new(EquipmentEvent::Status).string_len(16).not_null())
                    .col(ColumnDef::new(EquipmentEvent::PreviousStatus).string_len(16).null())
                    .col(ColumnDef::new(EquipmentEvent::Reason).string_len(64).null())
                    .col(ColumnDef::new(EquipmentEvent::Note).text().null())
                    .col(ColumnDef::new(EquipmentEvent::UpdatedBy).string_len(128).not_null())
                    .col(ColumnDef::new(EquipmentEvent::Source).string_len(16).not_null())
                    .col(ColumnDef::new(EquipmentEvent::OccurredAtMs).big_integer().null())
                    .col(ColumnDef::new(EquipmentEvent::RecordedAtMs).big_integer().not_null())
                    .col(ColumnDef::new(EquipmentEvent::ClockSuspect).boolean().not_null())
                    .col(ColumnDef::new(EquipmentEvent::CommandId).string_len(128).null())
                    .col(ColumnDef::new(EquipmentEvent::Payload).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(EquipmentEvent::EquipmentId)
                            .col(EquipmentEvent::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_equipment_event_recorded")
                    .table(EquipmentEvent::Table)
                    .col(EquipmentEvent::EquipmentId)
                    .col(EquipmentEvent::RecordedAtMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Equipment::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Equipment::Id).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Equipment::Name).string_len(200).not_null())
                    .col(ColumnDef::new(Equipment::Description).text().not_null())
                    .col(ColumnDef::new(Equipment::Site).string_len(64).not_null())
                    .col(ColumnDef::new(Equipment::Line).string_len(64).not_null())
                    .col(ColumnDef::new(Equipment::Tags).text().not_null())
                    .col(ColumnDef::new(Equipment::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Equipment::Reason).string_len(64).null())
                    .col(ColumnDef::new(Equipment::Note).text().null())
                    .col(ColumnDef::new(Equipment::UpdatedBy).string_len(128).not_null())
                    .col(ColumnDef::new(Equipment::Source).string_len(16).not_null())
                    .col(ColumnDef::new(Equipment::StatusSinceMs).big_integer().not_null())
                    .col(ColumnDef::new(Equipment::Version).big_integer().not_null())
                    .col(ColumnDef::new(Equipment::Decommissioned).boolean().not_null())
                    .col(ColumnDef::new(Equipment::RegisteredAtMs).big_integer().not_null())
                    .col(ColumnDef::new(Equipment::UpdatedAtMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_equipment_site_line")
                    .table(Equipment::Table)
                    .col(Equipment::Site)
                    .col(Equipment::Line)
                    .col(Equipment::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_equipment_status")
                    .table(Equipment::Table)
                    .col(Equipment::Status)
                    .col(Equipment::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
