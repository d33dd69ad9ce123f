//! The instance ledger: what this daemon launched or adopted, merged each pass with
//! DescribeInstances. Which user holds an instance is `users.instance_id` (one place only).

use super::{Store, StoreError, StoreResult};
use crate::model::{InstanceId, InstanceStatus, Millis};

/// A row of the instance ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub instance_id: InstanceId,
    pub tier: String,
    pub status: InstanceStatus,
    pub arn: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    pub launched_at: Millis,
    pub status_since: Millis,
    pub probe_command_id: Option<String>,
    pub probe_sent_at: Option<Millis>,
    pub probe_failed_at: Option<Millis>,
    pub probe_failures: u32,
    pub last_error: Option<String>,
    /// Consecutive passes in which DescribeInstances did not list it.
    pub missed_observations: u32,
    /// When on-call asked for it to be recycled. Written only by [`Store::request_recycle`]
    /// (`put_instance` leaves it alone, so a pass cannot overwrite a request it never read).
    pub recycle_requested_at: Option<Millis>,
}

impl InstanceRecord {
    /// A fresh ledger row with nothing known but its identity and status.
    pub fn new(
        instance_id: InstanceId,
        tier: String,
        status: InstanceStatus,
        launched_at: Millis,
        now: Millis,
    ) -> InstanceRecord {
        InstanceRecord {
            instance_id,
            tier,
            status,
            arn: None,
            instance_type: None,
            availability_zone: None,
            private_ip: None,
            launched_at,
            status_since: now,
            probe_command_id: None,
            probe_sent_at: None,
            probe_failed_at: None,
            probe_failures: 0,
            last_error: None,
            missed_observations: 0,
            recycle_requested_at: None,
        }
    }
}

/// The whole ledger, oldest first (also the reconciler's snapshot, `generations.rs`).
pub(super) const SELECT_ALL: &str = "SELECT * FROM instances ORDER BY launched_at, instance_id";

impl Store {
    pub async fn list_instances(&self) -> StoreResult<Vec<InstanceRecord>> {
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, InstanceColumns>(
            SELECT_ALL
        )
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(InstanceRecord::try_from).collect()
    }

    pub async fn get_instance(&self, instance: &InstanceId) -> StoreResult<Option<InstanceRecord>> {
        let row = on_pool!(self, |pool| sqlx::query_as::<_, InstanceColumns>(
            "SELECT * FROM instances WHERE instance_id = $1"
        )
        .bind(&instance.0)
        .fetch_optional(pool)
        .await?);
        row.map(InstanceRecord::try_from).transpose()
    }

    /// Inserts or replaces a ledger row.
    pub async fn put_instance(&self, instance: &InstanceRecord) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
            "INSERT INTO instances (instance_id, tier, status, arn, instance_type, availability_zone,
                private_ip, launched_at, status_since, probe_command_id, probe_sent_at,
                probe_failed_at, probe_failures, last_error, missed_observations)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (instance_id) DO UPDATE SET tier = excluded.tier, status = excluded.status,
                arn = excluded.arn, instance_type = excluded.instance_type,
                availability_zone = excluded.availability_zone, private_ip = excluded.private_ip,
                launched_at = excluded.launched_at, status_since = excluded.status_since,
                probe_command_id = excluded.probe_command_id, probe_sent_at = excluded.probe_sent_at,
                probe_failed_at = excluded.probe_failed_at, probe_failures = excluded.probe_failures,
                last_error = excluded.last_error,
                missed_observations = excluded.missed_observations",
        )
        .bind(&instance.instance_id.0)
        .bind(&instance.tier)
        .bind(instance.status.as_str())
        .bind(&instance.arn)
        .bind(&instance.instance_type)
        .bind(&instance.availability_zone)
        .bind(&instance.private_ip)
        .bind(instance.launched_at)
        .bind(instance.status_since)
        .bind(&instance.probe_command_id)
        .bind(instance.probe_sent_at)
        .bind(instance.probe_failed_at)
        .bind(i64::from(instance.probe_failures))
        .bind(&instance.last_error)
        .bind(i64::from(instance.missed_observations))
        );
        Ok(())
    }

    /// Changes an instance's status only if it is still `from`. Returns whether it applied.
    pub async fn transition_instance(
        &self,
        instance: &InstanceId,
        from: InstanceStatus,
        to: InstanceStatus,
        now: Millis,
    ) -> StoreResult<bool> {
        let changed = execute!(
            self,
            sqlx::query(
                "UPDATE instances SET status = $1, status_since = $2, probe_command_id = NULL
                 WHERE instance_id = $3 AND status = $4",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(&instance.0)
            .bind(from.as_str())
        );
        Ok(changed == 1)
    }

    pub async fn delete_instance(&self, instance: &InstanceId) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query("DELETE FROM instances WHERE instance_id = $1").bind(&instance.0)
        );
        Ok(())
    }

    /// Marks an instance for recycling. False if it is unknown or already terminating.
    pub async fn request_recycle(&self, instance: &InstanceId, now: Millis) -> StoreResult<bool> {
        let done = execute!(
            self,
            sqlx::query(
                "UPDATE instances SET recycle_requested_at = $2
                 WHERE instance_id = $1 AND status <> 'terminating'",
            )
            .bind(&instance.0)
            .bind(now)
        );
        Ok(done > 0)
    }

    /// Clears a recycle request once a move has taken it on (so an abandoned move is not
    /// started again by the same request).
    pub async fn clear_recycle(&self, instance: &InstanceId) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query("UPDATE instances SET recycle_requested_at = NULL WHERE instance_id = $1")
                .bind(&instance.0)
        );
        Ok(())
    }
}

/// The `instances` table's columns, as sqlx reads them.
#[derive(sqlx::FromRow)]
pub(super) struct InstanceColumns {
    instance_id: String,
    tier: String,
    status: String,
    arn: Option<String>,
    instance_type: Option<String>,
    availability_zone: Option<String>,
    private_ip: Option<String>,
    launched_at: Millis,
    status_since: Millis,
    probe_command_id: Option<String>,
    probe_sent_at: Option<Millis>,
    probe_failed_at: Option<Millis>,
    probe_failures: i64,
    last_error: Option<String>,
    missed_observations: i64,
    recycle_requested_at: Option<Millis>,
}

impl TryFrom<InstanceColumns> for InstanceRecord {
    type Error = StoreError;

    fn try_from(row: InstanceColumns) -> StoreResult<InstanceRecord> {
        let id = row.instance_id;
        let status = InstanceStatus::parse(&row.status).ok_or_else(|| {
            StoreError::Corrupt(format!("instance {id}: status {:?}", row.status))
        })?;
        Ok(InstanceRecord {
            instance_id: InstanceId(id),
            tier: row.tier,
            status,
            arn: row.arn,
            instance_type: row.instance_type,
            availability_zone: row.availability_zone,
            private_ip: row.private_ip,
            launched_at: row.launched_at,
            status_since: row.status_since,
            probe_command_id: row.probe_command_id,
            probe_sent_at: row.probe_sent_at,
            probe_failed_at: row.probe_failed_at,
            probe_failures: row.probe_failures as u32,
            last_error: row.last_error,
            missed_observations: row.missed_observations as u32,
            recycle_requested_at: row.recycle_requested_at,
        })
    }
}
