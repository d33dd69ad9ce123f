//! The spot prices of the tiers' offerings (`spot_prices`): written by the leader at most
//! hourly, read by every replica for the cost (`model::cost`).

use super::{Store, StoreResult};
use crate::model::Millis;
use crate::model::cost::SpotPrice;
use sqlx::Row;

impl Store {
    /// Records `prices` as read at `read_at`, each replacing its offering's last one, in one
    /// transaction; offerings not in it keep theirs.
    pub async fn put_spot_prices(&self, prices: &[SpotPrice], read_at: Millis) -> StoreResult<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for price in prices {
                sqlx::query(
                    "INSERT INTO spot_prices (instance_type, zone, dollars_per_hour, since, read_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (instance_type, zone) DO UPDATE SET
                        dollars_per_hour = excluded.dollars_per_hour,
                        since = excluded.since, read_at = excluded.read_at",
                )
                .bind(&price.instance_type)
                .bind(&price.zone)
                .bind(price.dollars_per_hour)
                .bind(price.since)
                .bind(read_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every offering's last price, by type then zone, and when the newest was read (None:
    /// never).
    pub async fn spot_prices(&self) -> StoreResult<(Vec<SpotPrice>, Option<Millis>)> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT instance_type, zone, dollars_per_hour, since, read_at FROM spot_prices
                 ORDER BY instance_type, zone",
            )
            .fetch_all(pool)
            .await?;
            let mut newest: Option<Millis> = None;
            let prices = rows
                .iter()
                .map(|r| {
                    let read_at: Millis = r.try_get("read_at")?;
                    newest = newest.max(Some(read_at));
                    Ok(SpotPrice {
                        instance_type: r.try_get("instance_type")?,
                        zone: r.try_get("zone")?,
                        dollars_per_hour: r.try_get("dollars_per_hour")?,
                        since: r.try_get("since")?,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok((prices, newest))
        })
    }
}
