//! The store: desired state (users), the instance ledger, launches in flight, interruption
//! notices, the journal and on-call's state, in SQLite via sqlx.
//!
//! Owns: all SQL, as plain async functions returning domain types, one file per table
//! (`users`, `instances`, `launches`, `notices`, `journal`, `admin`). Must not: call the cloud or
//! hold a secret value (only secret ARNs are stored).
//!
//! Concurrency: the API and the reconciler both write user rows. Every row carries a `version`;
//! the reconciler writes with `update_user`, which only applies if nobody changed the row since it
//! was read, so a DELETE that lands mid-claim is never overwritten. The one cross-row invariant
//! (an instance serves at most one user) is enforced by `assign`'s transaction and by the unique
//! index on `users.instance_id`.

mod admin;
mod conditions;
mod generations;
mod images;
mod instances;
mod journal;
mod launches;
mod notices;
mod users;

pub use crate::model::TierOverride;
pub use admin::AuditEntry;
pub use instances::InstanceRecord;
pub use journal::JournalEntry;
pub use launches::PendingLaunch;
pub use notices::StoredNotice;
pub use users::UserRecord;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("running migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The reconciler's last reads of the users and the ledger (`generations.rs`).
    snapshots: std::sync::Arc<generations::Snapshots>,
}

impl Store {
    /// Opens (creating if missing) the database at `url` and runs the embedded migrations.
    /// `sqlite::memory:` gives a private in-memory database (one connection).
    pub async fn open(url: &str) -> StoreResult<Store> {
        let in_memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if in_memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists per connection, so it must be exactly one.
            .max_connections(if in_memory { 1 } else { 8 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store {
            pool,
            snapshots: Default::default(),
        })
    }

    /// Whether a statement or transaction is in flight (a connection is checked out). SQLite
    /// runs on sqlx's worker threads, outside tokio's view: the simulated-time tests hold their
    /// paused clock while this is true, so time does not jump during a database call.
    pub fn busy(&self) -> bool {
        (self.pool.size() as usize) > self.pool.num_idle()
    }

    /// Closes the pool, waiting for statements in flight to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// A stored enum column back into its type, or a `Corrupt` error naming the row and the value.
fn parse_column<T>(
    parse: impl Fn(&str) -> Option<T>,
    raw: Option<String>,
    what: impl Fn() -> String,
) -> StoreResult<Option<T>> {
    raw.map(|raw| parse(&raw).ok_or_else(|| StoreError::Corrupt(format!("{}: {raw:?}", what()))))
        .transpose()
}

#[cfg(test)]
mod tests;
