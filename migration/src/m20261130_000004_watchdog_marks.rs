//! Columns on `equipment` for the watchdogs: when the machine's device last reported, and
//! which red period and which silence were already alerted (so the watchdog only asks the
//! owning actor about machines that may be due).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Equipment {
    Table,
    DeviceSeenAtMs,
    RedAlertedSinceMs,
    SilenceAlertedSeenMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one column at a time.
        for column in [
            Equipment::DeviceSeenAtMs,
            Equipment::RedAlertedSinceMs,
            Equipment::SilenceAlertedSeenMs,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Equipment::Table)
                        .add_column(ColumnDef::new(column).big_integer().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
