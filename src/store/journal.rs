//! The journal: an append-only record of every event (`model::Event`), which on-call reads and
//! the event stream is built on.

use super::{Store, StoreResult};
use crate::model::{Event, InstanceId, Millis, UserId};

/// One journal entry (also an event).
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct JournalEntry {
    pub id: i64,
    pub at: Millis,
    pub kind: String,
    pub user_id: Option<String>,
    pub instance_id: Option<String>,
    pub message: String,
}

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
        execute!(
            self,
            sqlx::query(
                "INSERT INTO journal (at, kind, user_id, instance_id, message)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(at)
            .bind(event.kind())
            .bind(user.map(UserId::as_str))
            .bind(instance.map(|i| i.0.as_str()))
            .bind(&message)
        );
        Ok(())
    }

    /// Journal entries after `after_id`, oldest first, at most `limit`.
    pub async fn journal_since(&self, after_id: i64, limit: i64) -> StoreResult<Vec<JournalEntry>> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, JournalEntry>(
            "SELECT id, at, kind, user_id, instance_id, message FROM journal
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }
}
