//! The auto tiers' spare decisions (`spare_decisions`): written by the leader when a decision
//! changes, read by every replica's `GET /v1/pool` and by a new term, which goes on from them.

use super::{Store, StoreResult};
use crate::model::Millis;
use crate::plan::AutoSpares;
use sqlx::Row;

/// A tier's last decision as stored, with whether its lead time was measured and when it was
/// made.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDecision {
    pub tier: String,
    pub decision: AutoSpares,
    pub lead_time_measured: bool,
    pub decided_at: Millis,
}

impl Store {
    /// Records `tier`'s decision, replacing its last one.
    pub async fn put_spare_decision(&self, stored: &StoredDecision) -> StoreResult<()> {
        let d = &stored.decision;
        execute!(
            self,
            sqlx::query(
                "INSERT INTO spare_decisions (tier, target, wanted, lower_since, held, demanded,
                    rate_per_hour, lead_time, lead_time_measured, decided_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (tier) DO UPDATE SET target = excluded.target,
                    wanted = excluded.wanted, lower_since = excluded.lower_since,
                    held = excluded.held, demanded = excluded.demanded,
                    rate_per_hour = excluded.rate_per_hour, lead_time = excluded.lead_time,
                    lead_time_measured = excluded.lead_time_measured,
                    decided_at = excluded.decided_at",
            )
            .bind(&stored.tier)
            .bind(i64::from(d.target))
            .bind(i64::from(d.wanted))
            .bind(d.lower_since)
            .bind(i64::from(d.held))
            .bind(i64::try_from(d.demanded).unwrap_or(i64::MAX))
            .bind(d.rate_per_hour)
            .bind(d.lead_time)
            .bind(stored.lead_time_measured)
            .bind(stored.decided_at)
        );
        Ok(())
    }

    /// Every tier's last decision, by tier.
    pub async fn spare_decisions(&self) -> StoreResult<Vec<StoredDecision>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT tier, target, wanted, lower_since, held, demanded, rate_per_hour,
                    lead_time, lead_time_measured, decided_at
                 FROM spare_decisions ORDER BY tier",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let count = |column: &str| -> StoreResult<u32> {
                        let value: i64 = r.try_get(column)?;
                        Ok(u32::try_from(value).unwrap_or(u32::MAX))
                    };
                    let demanded: i64 = r.try_get("demanded")?;
                    Ok(StoredDecision {
                        tier: r.try_get("tier")?,
                        decision: AutoSpares {
                            target: count("target")?,
                            wanted: count("wanted")?,
                            lower_since: r.try_get("lower_since")?,
                            held: count("held")?,
                            demanded: u64::try_from(demanded).unwrap_or(0),
                            rate_per_hour: r.try_get("rate_per_hour")?,
                            lead_time: r.try_get("lead_time")?,
                        },
                        lead_time_measured: r.try_get("lead_time_measured")?,
                        decided_at: r.try_get("decided_at")?,
                    })
                })
                .collect()
        })
    }
}
