//! The health watch's record of each ready user (migration 0021, ARCHITECTURE.md "Health
//! watch"): its own columns of `users`, written by the watch alone.

use super::{Store, StoreResult};
use crate::model::UserId;

impl Store {
    /// Writes the health watch's record of `user` (its own columns: no row version, so no write
    /// of the reconciler's is lost to it). Returns false if the user is gone.
    pub async fn set_health(
        &self,
        user: &UserId,
        watch: &crate::model::HealthWatch,
    ) -> StoreResult<bool> {
        let changed = execute!(
            self,
            sqlx::query(
                "UPDATE users SET health = $1, health_instance_id = $2, health_since = $3,
                        health_restarted_at = $4, health_recycled_at = $5, health_cause = $6
                 WHERE user_id = $7",
            )
            .bind(watch.health.map(|h| h.as_str()))
            .bind(watch.instance.as_ref().map(|i| i.0.as_str()))
            .bind(watch.since)
            .bind(watch.restarted_at)
            .bind(watch.recycled_at)
            .bind(&watch.cause)
            .bind(user.as_str())
        );
        Ok(changed == 1)
    }
}
