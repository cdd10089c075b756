//! Append-only schema migrations of the history database. They run at node start-up on
//! SQLite and PostgreSQL alike; never edit a released migration, add a new file.

pub use sea_orm_migration::prelude::*;

mod m20261130_000001_history;
mod m20261130_000002_state_interval;
mod m20261130_000003_reason_correction;
mod m20261130_000004_watchdog_marks;

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261130_000001_history::Migration),
            Box::new(m20261130_000002_state_interval::Migration),
            Box::new(m20261130_000003_reason_correction::Migration),
            Box::new(m20261130_000004_watchdog_marks::Migration),
        ]
    }
}
