//! The offerings' interruption history (`offering_history`), for `placement = "cheapest"`:
//! written by the leader (`reconcile/placement.rs`), read by a new term, which goes on from it.

use super::{Store, StoreResult};
use crate::model::Millis;
use sqlx::Row;

/// One offering's history as stored: instance-hours and interruption warnings, both decayed to
/// `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferingHistory {
    pub instance_type: String,
    pub zone: String,
    pub instance_hours: f64,
    pub interruptions: f64,
    pub at: Millis,
}

impl Store {
    /// Records `histories`, each replacing its offering's last one, in one transaction;
    /// offerings not in it keep theirs.
    pub async fn put_offering_history(&self, histories: &[OfferingHistory]) -> StoreResult<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for history in histories {
                sqlx::query(
                    "INSERT INTO offering_history
                        (instance_type, zone, instance_hours, interruptions, at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (instance_type, zone) DO UPDATE SET
                        instance_hours = excluded.instance_hours,
                        interruptions = excluded.interruptions, at = excluded.at",
                )
                .bind(&history.instance_type)
                .bind(&history.zone)
                .bind(history.instance_hours)
                .bind(history.interruptions)
                .bind(history.at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every offering's history, by type then zone.
    pub async fn offering_history(&self) -> StoreResult<Vec<OfferingHistory>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT instance_type, zone, instance_hours, interruptions, at
                 FROM offering_history ORDER BY instance_type, zone",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(OfferingHistory {
                        instance_type: r.try_get("instance_type")?,
                        zone: r.try_get("zone")?,
                        instance_hours: r.try_get("instance_hours")?,
                        interruptions: r.try_get("interruptions")?,
                        at: r.try_get("at")?,
                    })
                })
                .collect()
        })
    }
}
