//! The history database: connection and migrations ([`connect`]), the JetStream consumer
//! that fills it ([`consumer`]), the read queries the API serves ([`queries`]) and the
//! factory analytics computed from state spans ([`analytics`]).

pub mod analytics;
pub mod calendar;
pub mod consumer;
pub mod maintenance;
pub mod queries;

#[cfg(test)]
mod tests;

use std::time::Duration;

use eq_migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    TransactionTrait,
};

/// Connects to SQLite (`sqlite://path?mode=rwc`) or PostgreSQL (`postgres://…`) and brings
/// the schema up to date.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5));
    if url.starts_with("sqlite:") {
        // WAL lets readers run beside the consumer's writes; FULL sync means a committed
        // (and therefore acknowledged) batch survives power loss.
        options.max_connections(4).map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
        });
    } else {
        options.max_connections(8);
    }
    let db = Database::connect(options).await?;
    migrate(&db).await?;
    Ok(db)
}

/// Brings the schema up to date. On PostgreSQL several nodes starting at once against a
/// fresh database would each try the same migrations (and all but one fail and retry):
/// one transaction holding an advisory lock makes them take turns, and PostgreSQL's
/// transactional DDL means a node either sees a migration whole or runs it itself. (So a
/// migration must not use what cannot run in a transaction, e.g. `CREATE INDEX
/// CONCURRENTLY`.)
async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        // SQLite: one file, one writer at a time anyway.
        return Migrator::up(db, None).await;
    }
    let txn = db.begin().await?;
    // A node that froze holding the lock must not hang the others: their attempt fails
    // after this and is retried (with a warning). Migrations themselves take well under it.
    txn.execute_unprepared("SET LOCAL lock_timeout = '30s'")
        .await?;
    // An arbitrary key of our own: "EQ-MIGR".
    txn.execute_unprepared("SELECT pg_advisory_xact_lock(4545814897158215)")
        .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Checks that the database answers (used by readiness).
pub async fn ping(db: &DatabaseConnection, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, db.execute_unprepared("SELECT 1")).await,
        Ok(Ok(_))
    )
}
