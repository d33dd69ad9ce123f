//! The webhook outbox (migration 0020, ARCHITECTURE.md "Webhooks"): a user's `callback_url`,
//! the POSTs owed to it (written by a trigger in the transaction that changes the user's state),
//! and their delivery's bookkeeping.

use super::{Store, StoreResult};
use crate::model::{InstanceId, Millis, UserId, UserState};

/// A POST owed to a user's callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The `Spotpool-Event-Id`.
    pub id: i64,
    pub user_id: UserId,
    /// The state the user entered.
    pub state: UserState,
    /// The user's instance when it entered it.
    pub instance_id: Option<InstanceId>,
    pub url: String,
    pub created_at: Millis,
    /// Attempts that failed so far.
    pub attempts: u32,
    pub next_attempt_at: Millis,
}

/// How a webhook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// A day of failed attempts.
    Abandoned,
    /// The user was deleted before it could be delivered.
    Gone,
    /// The user's callback was removed before it could be delivered.
    Cancelled,
}

crate::model::string_enum!(WebhookOutcome {
    Delivered => "delivered",
    Abandoned => "abandoned",
    Gone => "gone",
    Cancelled => "cancelled",
});

/// The outbox at a glance, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebhookBacklog {
    pub pending: u64,
    /// When the oldest pending one was owed.
    pub oldest: Option<Millis>,
}

#[derive(sqlx::FromRow)]
struct WebhookColumns {
    id: i64,
    user_id: String,
    state: String,
    instance_id: Option<String>,
    url: String,
    created_at: Millis,
    attempts: i64,
    next_attempt_at: Millis,
}

impl TryFrom<WebhookColumns> for Webhook {
    type Error = super::StoreError;

    fn try_from(row: WebhookColumns) -> StoreResult<Webhook> {
        let corrupt = |what: &str, raw: &str| {
            super::StoreError::Corrupt(format!("webhook {}: {what}: {raw:?}", row.id))
        };
        Ok(Webhook {
            id: row.id,
            user_id: UserId::parse(&row.user_id).map_err(|_| corrupt("user_id", &row.user_id))?,
            state: UserState::parse(&row.state).ok_or_else(|| corrupt("state", &row.state))?,
            instance_id: row.instance_id.map(InstanceId),
            url: row.url,
            created_at: row.created_at,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            next_attempt_at: row.next_attempt_at,
        })
    }
}

impl Store {
    /// Sets (or, with `None`, clears) the user's callback, and in the same transaction moves the
    /// POSTs still owed to it there (a backend that moved its receiver gets them at the new
    /// one), or, when cleared, ends them `cancelled`. Returns false if the user is unknown. The
    /// row's version stays (the reconciler never writes the column, so no write of its is lost
    /// to this one).
    pub async fn set_callback_url(
        &self,
        user: &UserId,
        url: Option<&str>,
        now: Millis,
    ) -> StoreResult<bool> {
        macro_rules! set {
            ($tx:ident) => {{
                let changed = sqlx::query("UPDATE users SET callback_url = $1 WHERE user_id = $2")
                    .bind(url)
                    .bind(user.as_str())
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected();
                match url {
                    Some(url) => sqlx::query(
                        "UPDATE webhooks SET url = $1 WHERE user_id = $2 AND finished_at IS NULL",
                    )
                    .bind(url)
                    .bind(user.as_str()),
                    None => sqlx::query(
                        "UPDATE webhooks SET outcome = 'cancelled', finished_at = $1
                         WHERE user_id = $2 AND finished_at IS NULL",
                    )
                    .bind(now)
                    .bind(user.as_str()),
                }
                .execute(&mut *$tx)
                .await?;
                $tx.commit().await?;
                Ok(changed == 1)
            }};
        }
        match &self.pool {
            super::Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                set!(tx)
            }
            super::Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                set!(tx)
            }
        }
    }

    /// The webhooks to attempt at `now`: each user's oldest pending one (a user's receiver gets
    /// its states in order), if it is due; oldest first, at most `limit`.
    pub async fn due_webhooks(&self, now: Millis, limit: i64) -> StoreResult<Vec<Webhook>> {
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, WebhookColumns>(
            "SELECT id, user_id, state, instance_id, url, created_at, attempts, next_attempt_at
             FROM webhooks
             WHERE id IN (SELECT MIN(id) FROM webhooks WHERE finished_at IS NULL GROUP BY user_id)
               AND next_attempt_at <= $1
             ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(Webhook::try_from).collect()
    }

    /// Ends a webhook. Returns false if it had ended already.
    pub async fn finish_webhook(
        &self,
        id: i64,
        outcome: WebhookOutcome,
        error: Option<&str>,
        now: Millis,
    ) -> StoreResult<bool> {
        let changed = execute!(
            self,
            sqlx::query(
                "UPDATE webhooks SET outcome = $1, finished_at = $2,
                        last_error = COALESCE($3, last_error)
                 WHERE id = $4 AND finished_at IS NULL",
            )
            .bind(outcome.as_str())
            .bind(now)
            .bind(error)
            .bind(id)
        );
        Ok(changed == 1)
    }

    /// Records a failed attempt and when to try again.
    pub async fn retry_webhook(&self, id: i64, error: &str, next: Millis) -> StoreResult<bool> {
        let changed = execute!(
            self,
            sqlx::query(
                "UPDATE webhooks SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2
                 WHERE id = $3 AND finished_at IS NULL",
            )
            .bind(error)
            .bind(next)
            .bind(id)
        );
        Ok(changed == 1)
    }

    /// Why the webhook's last attempt failed, if it did.
    pub async fn webhook_error(&self, id: i64) -> StoreResult<Option<String>> {
        let error: Option<Option<String>> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT last_error FROM webhooks WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await?);
        Ok(error.flatten())
    }

    /// The pending webhooks: how many, and since when the oldest is owed.
    pub async fn webhook_backlog(&self) -> StoreResult<WebhookBacklog> {
        let (pending, oldest): (i64, Option<Millis>) = on_pool!(self, |pool| sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM webhooks WHERE finished_at IS NULL"
        )
        .fetch_one(pool)
        .await?);
        Ok(WebhookBacklog {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest,
        })
    }

    /// Deletes the webhooks that ended before `before`; how many went.
    pub async fn prune_webhooks(&self, before: Millis) -> StoreResult<u64> {
        Ok(execute!(
            self,
            sqlx::query("DELETE FROM webhooks WHERE finished_at < $1").bind(before)
        ))
    }
}
