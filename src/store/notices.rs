//! Interruption notices, keyed by EventBridge's event id, as the interruption feed stored them;
//! the reconciler lists the unhandled ones and marks what it acted on (migration 0004).

use super::{Store, StoreError, StoreResult};
use crate::model::{InstanceId, InterruptionNotice, Millis, NoticeKind};

/// An interruption notice as stored: the event, when it arrived, and whether the reconciler has
/// acted on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotice {
    pub notice: InterruptionNotice,
    pub received_at: Millis,
    pub handled_at: Option<Millis>,
}

impl Store {
    /// Records a notice unless one with the same event id exists. Returns whether it was new: a
    /// redelivered message is a duplicate and changes nothing (the first copy's `received_at`
    /// and `handled_at` stay).
    pub async fn insert_notice(
        &self,
        notice: &InterruptionNotice,
        received_at: Millis,
    ) -> StoreResult<bool> {
        let inserted = execute!(
            self,
            sqlx::query(
                "INSERT INTO interruption_notices
                    (event_id, instance_id, kind, state, event_time, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&notice.event_id)
            .bind(&notice.instance_id.0)
            .bind(notice.kind.as_str())
            .bind(notice.kind.state().map(|state| state.as_str()))
            .bind(notice.event_time)
            .bind(received_at)
        );
        Ok(inserted == 1)
    }

    /// Notices the reconciler has not acted on, oldest event first (by the event's own time, not
    /// by arrival: delivery may be out of order).
    pub async fn list_unhandled_notices(&self) -> StoreResult<Vec<StoredNotice>> {
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, NoticeColumns>(
            "SELECT event_id, instance_id, kind, state, event_time, received_at, handled_at
             FROM interruption_notices WHERE handled_at IS NULL
             ORDER BY event_time, received_at, event_id",
        )
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(StoredNotice::try_from).collect()
    }

    /// Marks a notice handled. Returns false if it is unknown or was handled already (the first
    /// `handled_at` stays).
    pub async fn mark_notice_handled(&self, event_id: &str, now: Millis) -> StoreResult<bool> {
        let marked = execute!(
            self,
            sqlx::query(
                "UPDATE interruption_notices SET handled_at = $2
                 WHERE event_id = $1 AND handled_at IS NULL",
            )
            .bind(event_id)
            .bind(now)
        );
        Ok(marked == 1)
    }

    /// Deletes the notices received before `received_before`, handled or not. Returns how many.
    /// Only safe once the queue can no longer redeliver them (its retention is shorter).
    pub async fn prune_notices(&self, received_before: Millis) -> StoreResult<u64> {
        Ok(execute!(
            self,
            sqlx::query("DELETE FROM interruption_notices WHERE received_at < $1")
                .bind(received_before)
        ))
    }
}

/// The `interruption_notices` columns the reconciler reads, as sqlx reads them.
#[derive(sqlx::FromRow)]
struct NoticeColumns {
    event_id: String,
    instance_id: String,
    kind: String,
    state: Option<String>,
    event_time: Millis,
    received_at: Millis,
    handled_at: Option<Millis>,
}

impl TryFrom<NoticeColumns> for StoredNotice {
    type Error = StoreError;

    fn try_from(row: NoticeColumns) -> StoreResult<StoredNotice> {
        let kind = NoticeKind::from_parts(&row.kind, row.state.as_deref()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "interruption notice {}: kind {:?} with state {:?}",
                row.event_id, row.kind, row.state
            ))
        })?;
        Ok(StoredNotice {
            notice: InterruptionNotice {
                event_id: row.event_id,
                kind,
                instance_id: InstanceId(row.instance_id),
                event_time: row.event_time,
            },
            received_at: row.received_at,
            handled_at: row.handled_at,
        })
    }
}
