//! The journal: an append-only record of every event (`model::Event`), which on-call reads and
//! the event stream (`GET /v1/events`, `crate::api::events`) is built on.
//!
//! Owns: the entries' ids, which commit in id order (PostgreSQL: each insert takes the
//! journal's advisory lock before its identity value and keeps it to its commit; SQLite has one
//! writer), so a reader that has seen id N has seen every entry below N that will ever commit,
//! and a stream resumed after N misses nothing; the retention (`prune_journal`) and its horizon.
//! Must not: reuse an id, or let an entry commit below one already visible.

use super::{Pool, Store, StoreResult};
use crate::model::{Event, InstanceId, Millis, UserId};

/// One journal entry (also an event).
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct JournalEntry {
    pub id: i64,
    pub at: Millis,
    pub kind: String,
    pub user_id: Option<String>,
    pub instance_id: Option<String>,
    /// The tier of its user, or else of its instance, when it was written.
    pub tier: Option<String>,
    pub message: String,
}

/// Which entries a reader wants (each given field must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalFilter {
    pub user: Option<String>,
    pub tier: Option<String>,
    /// Only entries about a user (the service token's view).
    pub users_only: bool,
}

/// Entries one pruning transaction deletes at most.
const PRUNE_BATCH: i64 = 10_000;

/// The key of the advisory lock that orders the journal's commits (PostgreSQL).
const JOURNAL_LOCK: i64 = 0x5350_4A52; // "SPJR"

/// The row (`$1`-`$5`), its tier its user's or else its instance's.
const INSERT: &str = "INSERT INTO journal (at, kind, user_id, instance_id, message, tier)
     SELECT $1, $2, $3, $4, $5, COALESCE(
         (SELECT tier FROM users WHERE user_id = $3),
         (SELECT tier FROM instances WHERE instance_id = $4))";

/// PostgreSQL: the same, from a row that exists only once the lock (`$6`) is held, so the
/// identity value is taken under it; one statement, its own transaction, holds the lock to its
/// commit.
const INSERT_ORDERED: &str = "INSERT INTO journal (at, kind, user_id, instance_id, message, tier)
     SELECT $1, $2, $3, $4, $5, COALESCE(
         (SELECT tier FROM users WHERE user_id = $3),
         (SELECT tier FROM instances WHERE instance_id = $4))
     FROM (SELECT pg_advisory_xact_lock($6)) AS ordered";

impl Store {
    /// Appends `event` about `user` and `instance` (either may be absent).
    pub async fn record(
        &self,
        at: Millis,
        event: &Event,
        user: Option<&UserId>,
        instance: Option<&InstanceId>,
    ) -> StoreResult<()> {
        let message = event.message();
        macro_rules! insert {
            ($sql:expr) => {
                sqlx::query($sql)
                    .bind(at)
                    .bind(event.kind())
                    .bind(user.map(UserId::as_str))
                    .bind(instance.map(|i| i.0.as_str()))
                    .bind(&message)
            };
        }
        match &self.pool {
            Pool::Sqlite(pool) => {
                insert!(INSERT).execute(pool).await?;
            }
            Pool::Postgres(pool) => {
                // Identity values are taken at insert and commit in any order; under the lock,
                // held to the commit, they commit in order. One round trip.
                insert!(INSERT_ORDERED)
                    .bind(JOURNAL_LOCK)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Journal entries after `after_id`, oldest first, at most `limit`.
    pub async fn journal_since(&self, after_id: i64, limit: i64) -> StoreResult<Vec<JournalEntry>> {
        self.journal_page(after_id, &JournalFilter::default(), limit)
            .await
    }

    /// The entries after `after_id` that `filter` lets through, oldest first, at most `limit`.
    pub async fn journal_page(
        &self,
        after_id: i64,
        filter: &JournalFilter,
        limit: i64,
    ) -> StoreResult<Vec<JournalEntry>> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, JournalEntry>(
            "SELECT id, at, kind, user_id, instance_id, tier, message FROM journal
             WHERE id > $1 AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR tier = $3)
               AND ($4 = 0 OR user_id IS NOT NULL)
             ORDER BY id LIMIT $5"
        )
        .bind(after_id)
        .bind(filter.user.as_deref())
        .bind(filter.tier.as_deref())
        .bind(i64::from(filter.users_only))
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// The newest entry's id (0 for an empty journal).
    pub async fn journal_head(&self) -> StoreResult<i64> {
        let head: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(id) FROM journal"
        )
        .fetch_one(pool)
        .await?);
        Ok(head.unwrap_or(0))
    }

    /// Every id up to this one was pruned (0: none was).
    pub async fn journal_horizon(&self) -> StoreResult<i64> {
        let horizon: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT pruned_through FROM journal_horizon WHERE only_row = 1"
        )
        .fetch_optional(pool)
        .await?);
        Ok(horizon.unwrap_or(0))
    }

    /// Deletes the entries written before `before`, oldest first, a batch per transaction (so
    /// other writers go on between them: the first prune after an upgrade may delete months),
    /// and moves the horizon past each batch; how many went.
    pub async fn prune_journal(&self, before: Millis) -> StoreResult<u64> {
        // The cut is by id, at the newest entry written before `before`: everything older by
        // id goes with it. (Ids follow commits; `at` follows the writer's clock, and a replica
        // whose clock runs ahead must not hold the journal's pruning back.)
        let through: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(id) FROM journal WHERE at < $1"
        )
        .bind(before)
        .fetch_one(pool)
        .await?);
        let Some(through) = through else {
            return Ok(0);
        };
        let mut deleted = 0;
        loop {
            // This batch's last id: the PRUNE_BATCH-th oldest, or `through`.
            let end: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
                "SELECT id FROM journal WHERE id <= $1 ORDER BY id LIMIT 1 OFFSET $2"
            )
            .bind(through)
            .bind(PRUNE_BATCH - 1)
            .fetch_optional(pool)
            .await?);
            let end = end.unwrap_or(through).min(through);
            deleted += self.prune_through(end).await?;
            if end >= through {
                return Ok(deleted);
            }
        }
    }

    /// Deletes the entries up to `end` and moves the horizon there, in one transaction whose
    /// first statement writes (SQLite takes its write lock there, with no read before it).
    async fn prune_through(&self, end: i64) -> StoreResult<u64> {
        macro_rules! prune {
            ($tx:ident) => {{
                let deleted = sqlx::query("DELETE FROM journal WHERE id <= $1")
                    .bind(end)
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected();
                sqlx::query(
                    "INSERT INTO journal_horizon (only_row, pruned_through) VALUES (1, $1)
                     ON CONFLICT (only_row) DO UPDATE SET pruned_through = $1
                     WHERE journal_horizon.pruned_through < $1",
                )
                .bind(end)
                .execute(&mut *$tx)
                .await?;
                $tx.commit().await?;
                Ok(deleted)
            }};
        }
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                prune!(tx)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                prune!(tx)
            }
        }
    }
}
