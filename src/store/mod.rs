//! The store: desired state (users), the instance ledger, launches in flight, interruption
//! notices, the journal and on-call's state, in SQLite or PostgreSQL via sqlx.
//!
//! Owns: all SQL, as plain async functions returning domain types, one file per table
//! (`users`, `instances`, `launches`, `notices`, `journal`, `admin`, `conditions`, `images`,
//! `prices`, `spares`, ...),
//! and the copy of a whole store into another (`copy`, for `spotpool migrate-store`).
//! Must not: call the cloud or hold a secret value (only secret ARNs are stored).
//!
//! Two databases, one API: [`Store`] holds a SQLite or a PostgreSQL pool ([`Store::open`] picks
//! by the URL's scheme) and each method runs on whichever it has through `on_pool!`: the same
//! SQL text and bindings, compiled once per database (`$n` placeholders, `ON CONFLICT ... DO
//! UPDATE SET col = excluded.col` and `DO NOTHING` mean the same in both). What differs is
//! written per database: the schema (`migrations/sqlite/`, `migrations/postgres/`, paired by
//! number: `BIGINT` for every integer column in PostgreSQL, identity ids) and the claim of a
//! spare (`users::take_spare`: PostgreSQL locks the instance row with `FOR UPDATE SKIP
//! LOCKED`). sqlx's `Any` driver is not used: it cannot say `SKIP LOCKED` nor take advisory
//! locks.
//!
//! Concurrency: the API and the reconciler both write user rows. Every row carries a `version`;
//! the reconciler writes with `update_user`, which only applies if nobody changed the row since it
//! was read, so a DELETE that lands mid-claim is never overwritten. The one cross-row invariant
//! (an instance serves at most one user) is enforced by `assign`'s transaction and by the unique
//! index on `users.instance_id`.

/// `on_pool!(store, |pool| body)`: `body` with `pool` bound to the store's pool, once per
/// database (the body is compiled for each, so one SQL text serves both). Each arm must come to
/// the same type: map rows to domain types inside the body.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// `execute!(store, query)`: runs one statement (a `sqlx::query(..)` with its bindings) on the
/// store's database; the number of rows it changed.
macro_rules! execute {
    ($store:expr, $query:expr) => {
        on_pool!($store, |pool| $query.execute(pool).await?.rows_affected())
    };
}

mod admin;
mod conditions;
mod copy;
mod drains;
mod generations;
mod health;
mod history;
mod images;
mod instances;
mod journal;
mod launches;
mod leadership;
mod notices;
mod prices;
mod slots;
mod spares;
mod user_columns;
mod users;
mod webhooks;

pub use crate::model::TierOverride;
pub use admin::AuditEntry;
pub use copy::{CopyError, CopyReport, NOT_COPIED, TableCount};
pub use drains::Rollout;
pub use history::OfferingHistory;
pub use instances::{InstanceRecord, WarmRoute};
pub use journal::{JournalEntry, JournalFilter};
pub use launches::PendingLaunch;
pub use leadership::{Acquisition, Lease};
pub use notices::StoredNotice;
pub use slots::{SlotTaker, SlotWipe, Vacated};
pub use spares::StoredDecision;
pub use users::UserRecord;
pub use webhooks::{Webhook, WebhookBacklog, WebhookOutcome};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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
    pool: Pool,
    /// The reconciler's last reads of the users and the ledger (`generations.rs`).
    snapshots: std::sync::Arc<generations::Snapshots>,
}

/// The database behind a [`Store`].
#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a [`Store`] is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Store {
    /// Opens the database at `url` and runs the embedded migrations of its kind:
    /// `postgres://` or `postgresql://` a PostgreSQL database (TLS as the URL's `sslmode` says,
    /// `prefer` by default; a password from the URL, `PGPASSWORD` or `~/.pgpass`), anything else
    /// a SQLite database (created if missing; `sqlite::memory:` gives a private in-memory one).
    pub async fn open(url: &str) -> StoreResult<Store> {
        match Store::backend_of(url) {
            Backend::Postgres => Store::open_postgres(url).await,
            Backend::Sqlite => Store::open_sqlite(url).await,
        }
    }

    /// The database a URL names, by its scheme.
    pub fn backend_of(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    async fn open_sqlite(url: &str) -> StoreResult<Store> {
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
        SQLITE_MIGRATOR.run(&pool).await?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            snapshots: Default::default(),
        })
    }

    async fn open_postgres(url: &str) -> StoreResult<Store> {
        let mut options = PgConnectOptions::from_str(url)?;
        if options.get_application_name().is_none() {
            options = options.application_name("spotpool");
        }
        // Session limits, unless the URL's `options` sets them: no statement runs forever, and
        // a frozen replica's open transaction (and its locks, the lease's among them) is ended
        // by the server.
        let set = options.get_options().unwrap_or_default().to_string();
        let limits: Vec<(&str, &str)> = POSTGRES_SESSION_LIMITS
            .iter()
            .filter(|(key, _)| !set.contains(key))
            .copied()
            .collect();
        // sqlx holds an advisory lock while it migrates, so replicas starting together migrate
        // once; on a connection of its own without the limits, so a long migration (or the
        // wait for another replica's) is not cut off.
        let migrating = postgres_pool_options(1)
            .connect_with(options.clone())
            .await?;
        POSTGRES_MIGRATOR.run(&migrating).await?;
        migrating.close().await;
        if !limits.is_empty() {
            options = options.options(limits);
        }
        let pool = postgres_pool_options(8).connect_with(options).await?;
        Ok(Store {
            pool: Pool::Postgres(pool),
            snapshots: Default::default(),
        })
    }

    /// Whether a statement or transaction is in flight (a connection is checked out). SQLite
    /// runs on sqlx's worker threads, outside tokio's view: the simulated-time tests hold their
    /// paused clock while this is true, so time does not jump during a database call.
    pub fn busy(&self) -> bool {
        on_pool!(self, |pool| (pool.size() as usize) > pool.num_idle())
    }

    /// Closes the pool, waiting for statements in flight to finish.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    pub async fn ping(&self) -> StoreResult<()> {
        execute!(self, sqlx::query("SELECT 1"));
        Ok(())
    }
}

/// The session settings every PostgreSQL connection gets unless the URL's `options` names them
/// (`docs/DEPLOY.md`, "PostgreSQL").
pub const POSTGRES_SESSION_LIMITS: [(&str, &str); 3] = [
    ("statement_timeout", "30s"),
    ("lock_timeout", "10s"),
    ("idle_in_transaction_session_timeout", "5s"),
];

/// A PostgreSQL pool of at most `connections`.
fn postgres_pool_options(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .idle_timeout(Some(Duration::from_secs(600)))
        .max_lifetime(Some(Duration::from_secs(3600)))
}

/// `url` with its password, if it has one (in the user part or as a `password=` parameter),
/// replaced by `***`: for logs and errors.
pub fn redacted_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) if userinfo.contains(':') => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{host}{path}")
                }
                _ => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    match query {
        Some(query) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key == "password" => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
        None => base,
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

#[cfg(any(test, feature = "fake"))]
pub mod testing;
#[cfg(test)]
mod tests;
