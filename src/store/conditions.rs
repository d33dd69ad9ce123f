//! Why a tier's launches are held back (`tier_conditions`): written by the reconciler, read by
//! every API replica.

use super::{Store, StoreResult};
use crate::model::TierCondition;
use sqlx::Row;

impl Store {
    /// Records `condition`; a tier already held back for the same cause keeps its `since`.
    pub async fn put_tier_condition(&self, condition: &TierCondition) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO tier_conditions (tier, cause, detail, since, until)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tier) DO UPDATE SET detail = excluded.detail, until = excluded.until,
                since = CASE WHEN tier_conditions.cause = excluded.cause
                        THEN tier_conditions.since ELSE excluded.since END,
                cause = excluded.cause",
            )
            .bind(&condition.tier)
            .bind(&condition.cause)
            .bind(&condition.detail)
            .bind(condition.since)
            .bind(condition.until)
        );
        Ok(())
    }

    /// Forgets `tier`'s condition; whether there was one.
    pub async fn clear_tier_condition(&self, tier: &str) -> StoreResult<bool> {
        let done = execute!(
            self,
            sqlx::query("DELETE FROM tier_conditions WHERE tier = $1").bind(tier)
        );
        Ok(done > 0)
    }

    pub async fn tier_conditions(&self) -> StoreResult<Vec<TierCondition>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT tier, cause, detail, since, until FROM tier_conditions ORDER BY tier",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(TierCondition {
                        tier: r.try_get("tier")?,
                        cause: r.try_get("cause")?,
                        detail: r.try_get("detail")?,
                        since: r.try_get("since")?,
                        until: r.try_get("until")?,
                    })
                })
                .collect()
        })
    }
}
