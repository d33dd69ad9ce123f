//! The lease: which replica leads (runs the reconciler), since when, and its fencing epoch.
//!
//! Owns: the `leadership` row (migration 0011) and the fenced pool a leader's reconciler writes
//! through. Times are the database's clock in milliseconds, so replicas' clocks never matter.
//! Must not: decide when to renew or what a replica does when it loses the lease (`leader`).
//!
//! PostgreSQL: a replica leads while its lease is unexpired; it renews it well before it ends,
//! and another takes it over (the epoch grows by one) only once it has expired. Every write of
//! the leader's reconciler goes through [`Store::fenced`] connections, which the database
//! checks against the current epoch (migration 0011's trigger): a deposed leader's late write
//! is refused, never applied. SQLite: the file lock beside the database decides, and
//! [`Store::acquire_leadership`] is called with `force` to record the new holder and epoch.

use super::{Pool, Store, StoreError, StoreResult};
use sqlx::Row;
use std::time::Duration;

/// The lease row: who leads, at which address, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub address: Option<String>,
    pub epoch: i64,
    /// Milliseconds of the database's clock.
    pub expires_at: i64,
    pub since: i64,
    /// The replica that led before this one (None: the first leader of the database).
    pub previous: Option<String>,
    /// The database's clock when the row was read, in milliseconds.
    pub read_at: i64,
}

impl Lease {
    /// Whether the lease was unexpired when it was read.
    pub fn live(&self) -> bool {
        self.expires_at > self.read_at
    }
}

/// What an attempt to lead came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    /// This replica leads now, with this lease.
    Acquired(Lease),
    /// Another replica holds an unexpired lease.
    Held(Lease),
}

impl Store {
    /// The database's clock in milliseconds, as a SQL expression.
    fn now_ms_sql(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Pool::Postgres(_) => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
        }
    }

    /// Takes the lease for `holder` (at `address`) for `ttl` if it is free or expired, or in any
    /// case with `force` (the caller holds an exclusive lock that decides instead); the epoch
    /// grows by one. Two replicas racing: the row lock serialises them and the second finds the
    /// lease held.
    pub async fn acquire_leadership(
        &self,
        holder: &str,
        address: Option<&str>,
        ttl: Duration,
        force: bool,
    ) -> StoreResult<Acquisition> {
        // A live lease is read without a lock: a standby's try every second must not queue
        // behind (nor hold up) the leader's fenced writes, which the upsert's row lock would.
        if !force
            && let Some(lease) = self.leadership().await?
            && lease.live()
        {
            return Ok(Acquisition::Held(lease));
        }
        let now = self.now_ms_sql();
        let sql = format!(
            "INSERT INTO leadership (id, holder, address, epoch, expires_at, since, previous)
             VALUES (1, $1, $2, 1, {now} + $3, {now}, NULL)
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,
                address = excluded.address, epoch = leadership.epoch + 1,
                expires_at = excluded.expires_at, since = excluded.since,
                previous = leadership.holder
             WHERE leadership.expires_at <= {now} OR $4
             RETURNING holder, address, epoch, expires_at, since, previous, {now} AS read_at"
        );
        let ttl_ms = ttl.as_millis() as i64;
        // The same statement on either database.
        macro_rules! upsert {
            () => {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(holder)
                    .bind(address)
                    .bind(ttl_ms)
                    .bind(force)
            };
        }
        let acquired = match &self.pool {
            Pool::Sqlite(pool) => upsert!()
                .fetch_optional(pool)
                .await?
                .map(|row| lease_of(&row)),
            Pool::Postgres(pool) => {
                // FOR UPDATE first: it waits for the fenced writes in flight (their key-share
                // locks), which the upsert's own lock would not; a renewal takes no such lock
                // and never waits for them.
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT 1 FROM leadership WHERE id = 1 FOR UPDATE")
                    .execute(&mut *tx)
                    .await?;
                let row = upsert!().fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                row.map(|row| lease_of(&row))
            }
        }
        .transpose()?;
        match acquired {
            Some(lease) => Ok(Acquisition::Acquired(lease)),
            None => match self.leadership().await? {
                Some(lease) => Ok(Acquisition::Held(lease)),
                // Deleted between the two statements (only by hand): try again next time.
                None => Err(StoreError::Conflict("the lease row vanished".into())),
            },
        }
    }

    /// Extends `holder`'s lease of `epoch` to `ttl` from now, if it is still theirs and
    /// unexpired; false if it is lost (taken over, or expired: take it again with a new epoch).
    pub async fn renew_leadership(
        &self,
        holder: &str,
        epoch: i64,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let now = self.now_ms_sql();
        let sql = format!(
            "UPDATE leadership SET expires_at = {now} + $3
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > {now}"
        );
        let ttl_ms = ttl.as_millis() as i64;
        let changed = execute!(
            self,
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(holder)
                .bind(epoch)
                .bind(ttl_ms)
        );
        Ok(changed == 1)
    }

    /// Ends `holder`'s lease of `epoch` now (a clean shutdown), so a standby takes over at its
    /// next try instead of after the lease's time; false if it was not theirs any more.
    pub async fn release_leadership(&self, holder: &str, epoch: i64) -> StoreResult<bool> {
        let now = self.now_ms_sql();
        let sql = format!(
            "UPDATE leadership SET expires_at = {now}
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > {now}"
        );
        let changed = execute!(
            self,
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(holder)
                .bind(epoch)
        );
        Ok(changed == 1)
    }

    /// The lease row as it is now (None before any replica led).
    pub async fn leadership(&self) -> StoreResult<Option<Lease>> {
        let now = self.now_ms_sql();
        let sql = format!(
            "SELECT holder, address, epoch, expires_at, since, previous, {now} AS read_at
             FROM leadership WHERE id = 1"
        );
        on_pool!(self, |pool| sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(pool)
            .await?
            .map(|row| lease_of(&row))
            .transpose())
    }

    /// A store on its own pool of at most `connections`, over the same database. With
    /// `fence = Some(epoch)` every write through it is refused once `epoch` is no longer the
    /// current, unexpired lease (PostgreSQL; SQLite's writers are fenced by its file lock, and
    /// this is the same store). The new pool has its own snapshots: it reads everything afresh.
    pub async fn sibling(&self, connections: u32, fence: Option<i64>) -> StoreResult<Store> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(self.clone()),
            Pool::Postgres(pool) => {
                let mut options = (*pool.connect_options()).clone();
                if let Some(epoch) = fence {
                    options = options.options([("spotpool.fence", epoch.to_string())]);
                }
                let pool = super::postgres_pool_options(connections)
                    .connect_with(options)
                    .await?;
                Ok(Store {
                    pool: Pool::Postgres(pool),
                    snapshots: Default::default(),
                })
            }
        }
    }
}

impl Store {
    /// Wakes `wake` each time a transaction of any replica's API writes what the reconciler
    /// acts on (a PUT, a DELETE, a resize, a recycle: PostgreSQL's `spotpool_wake` channel,
    /// migration 0012), so a claim sent to a standby starts at once rather than at the
    /// leader's next interval. Runs until cancelled, listening again after a lost connection.
    /// SQLite has no such channel (one process serves its API and leads): never returns.
    pub async fn forward_api_writes(&self, wake: &tokio::sync::Notify) {
        let Pool::Postgres(pool) = &self.pool else {
            return std::future::pending().await;
        };
        loop {
            let listening = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen("spotpool_wake").await?;
                loop {
                    listener.recv().await?;
                    wake.notify_one();
                }
            };
            let error: sqlx::Error = match listening.await {
                Ok(()) => unreachable!("the listening loop only ends with an error"),
                Err(error) => error,
            };
            tracing::warn!(%error, "listening for the API's writes failed; listening again");
            // Meanwhile the reconciler's own interval still runs it.
            wake.notify_one();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn lease_of<R: Row>(row: &R) -> StoreResult<Lease>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Lease {
        holder: row.try_get("holder")?,
        address: row.try_get("address")?,
        epoch: row.try_get("epoch")?,
        expires_at: row.try_get("expires_at")?,
        since: row.try_get("since")?,
        previous: row.try_get("previous")?,
        read_at: row.try_get("read_at")?,
    })
}
