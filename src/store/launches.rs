//! Launches in flight: written before RunInstances is called, so a lost response is redone with
//! the same EC2 ClientToken (see `migrations/*/0002_launches.sql`).

use super::{Store, StoreResult};
use crate::model::Millis;
use sqlx::Row;

/// A RunInstances call that may have happened: redone with the same ClientToken until its
/// instances are in the ledger or EC2 refuses it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingLaunch {
    pub client_token: String,
    pub tier: String,
    pub instance_type: String,
    pub subnet_id: String,
    pub count: u32,
    pub spot: bool,
    pub created_at: Millis,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl Store {
    /// Records a launch before RunInstances is called (see `migrations/*/0002_launches.sql`).
    pub async fn insert_launch(&self, launch: &PendingLaunch) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
            "INSERT INTO launches (client_token, tier, instance_type, subnet_id, count, spot, created_at, attempts, last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&launch.client_token)
        .bind(&launch.tier)
        .bind(&launch.instance_type)
        .bind(&launch.subnet_id)
        .bind(i64::from(launch.count))
        .bind(launch.spot)
        .bind(launch.created_at)
        .bind(i64::from(launch.attempts))
        .bind(&launch.last_error)
        );
        Ok(())
    }

    /// Launches whose outcome is not in the ledger yet, oldest first.
    pub async fn list_launches(&self) -> StoreResult<Vec<PendingLaunch>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT client_token, tier, instance_type, subnet_id, count, spot, created_at,
                    attempts, last_error
                 FROM launches ORDER BY created_at, client_token",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(PendingLaunch {
                        client_token: r.try_get("client_token")?,
                        tier: r.try_get("tier")?,
                        instance_type: r.try_get("instance_type")?,
                        subnet_id: r.try_get("subnet_id")?,
                        count: r.try_get::<i64, _>("count")? as u32,
                        spot: r.try_get("spot")?,
                        created_at: r.try_get("created_at")?,
                        attempts: r.try_get::<i64, _>("attempts")? as u32,
                        last_error: r.try_get("last_error")?,
                    })
                })
                .collect()
        })
    }

    /// Notes a failed attempt of a launch that will be redone.
    pub async fn launch_failed(&self, client_token: &str, error: &str) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
                "UPDATE launches SET attempts = attempts + 1, last_error = $2
                 WHERE client_token = $1",
            )
            .bind(client_token)
            .bind(error)
        );
        Ok(())
    }

    pub async fn delete_launch(&self, client_token: &str) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query("DELETE FROM launches WHERE client_token = $1").bind(client_token)
        );
        Ok(())
    }
}
