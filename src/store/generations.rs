//! Snapshots of the users and of the instance ledger for the reconciler's passes, re-read only
//! when the table changed.
//!
//! Every write to `users` or `instances` bumps the table's counter in `generations` (triggers,
//! migration 0010), in the writer's transaction, whichever process or connection wrote. A
//! snapshot reads the counter and, only if it moved since the last read, the rows, both in one
//! read transaction, so the rows kept are never older than the counter they are kept under. A
//! pass with nothing to do therefore decodes no row (at 10,000 instances and 9,000 users that
//! was most of its time), and the plan still sees every row as the store has it.

use super::instances::{self, InstanceColumns};
use super::user_columns::UserColumns;
use super::{InstanceRecord, Store, StoreError, StoreResult, UserRecord, users};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use std::sync::{Arc, Mutex};

/// A table's rows as last read, under the counter they were read at.
type Cached<T> = Mutex<Option<(i64, Arc<Vec<T>>)>>;

/// The last snapshot of each table (shared by the clones of a `Store`).
#[derive(Debug, Default)]
pub(super) struct Snapshots {
    users: Cached<UserRecord>,
    instances: Cached<InstanceRecord>,
}

impl Store {
    /// Every user, in queue order (as [`Store::list_users`]), read again only if a user row
    /// was written since the last call.
    pub async fn users_snapshot(&self) -> StoreResult<Arc<Vec<UserRecord>>> {
        self.snapshot::<UserColumns, _>("users", &self.snapshots.users, users::SELECT_ALL)
            .await
    }

    /// The instance ledger (as [`Store::list_instances`]), read again only if a ledger row was
    /// written since the last call.
    pub async fn instances_snapshot(&self) -> StoreResult<Arc<Vec<InstanceRecord>>> {
        self.snapshot::<InstanceColumns, _>(
            "instances",
            &self.snapshots.instances,
            instances::SELECT_ALL,
        )
        .await
    }

    /// On PostgreSQL (read committed) the rows are read after the counter, so they are never
    /// older than it: at worst newer, and read again next time.
    async fn snapshot<C, T>(
        &self,
        table: &str,
        cache: &Cached<T>,
        select: &'static str,
    ) -> StoreResult<Arc<Vec<T>>>
    where
        C: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>,
        C: Send + Unpin,
        T: TryFrom<C, Error = StoreError>,
    {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let generation: i64 = sqlx::query_scalar("SELECT n FROM generations WHERE name = $1")
                .bind(table)
                .fetch_one(&mut *tx)
                .await?;
            let kept = lock(cache)
                .as_ref()
                .filter(|(at, _)| *at == generation)
                .map(|(_, rows)| rows.clone());
            if let Some(rows) = kept {
                tx.commit().await?;
                return Ok(rows);
            }
            // The old rows go first: the table is not held twice while it is read again.
            *lock(cache) = None;
            let rows: Vec<C> = sqlx::query_as(select).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            let rows = Arc::new(
                rows.into_iter()
                    .map(T::try_from)
                    .collect::<StoreResult<Vec<T>>>()?,
            );
            *lock(cache) = Some((generation, rows.clone()));
            Ok(rows)
        })
    }
}

fn lock<T>(cache: &Cached<T>) -> std::sync::MutexGuard<'_, Option<(i64, Arc<Vec<T>>)>> {
    // Nothing panics while holding it; a poisoned lock still holds a whole snapshot.
    cache.lock().unwrap_or_else(|e| e.into_inner())
}
