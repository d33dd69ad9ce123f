//! The instance ledger: what this daemon launched or adopted, merged each pass with
//! DescribeInstances. Which user holds an instance is `users.instance_id` (one place only).

use super::{Store, StoreError, StoreResult};
use crate::model::{InstanceId, InstanceStatus, Millis};
use sqlx::Row;

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
    /// When it was first asked to recycle (on-call, a drain, a failed wipe, a move off a shared
    /// instance). Written only by [`Store::request_recycle`], [`Store::recycle_again`] and
    /// [`Store::clear_recycle`] (`put_instance` leaves it alone, so a pass cannot overwrite a
    /// request it never read).
    pub recycle_requested_at: Option<Millis>,
    /// When its readiness probe passed: a pre-wired spare is wired from then on. Written only
    /// by [`Store::mark_probed`].
    pub probed_at: Option<Millis>,
    /// A pre-wired spare's route, each part recorded as soon as it exists (ARCHITECTURE.md,
    /// "Pre-wired spares"). Written only by [`Store::set_warm_route`] and
    /// [`Store::clear_warm_route`]; a claim moves it to the user's row.
    pub warm: WarmRoute,
    /// The blank workspace DescribeInstances last reported attached (ARCHITECTURE.md, "Blank
    /// workspaces"): a first claim takes it, unless a user's workspace already is that volume.
    pub blank_volume_id: Option<String>,
    /// `<template id>:<version>` it was launched from, as the launch asked: written when a
    /// row is first inserted or by [`Store::note_launch_template`], never replaced. None is
    /// unknown (launched before spotpool recorded it).
    pub launch_template: Option<String>,
    /// The image reference its probe or its users' containers pulled. Written only by
    /// [`Store::set_instance_image`] (a probe) and [`Store::set_start_image`]; None until the
    /// first pull.
    pub image: Option<String>,
    /// When a start command (a claim's or a move's) was first about to reach it; never cleared.
    /// Written only by [`Store::set_start_image`]: a shared instance that never had one goes
    /// back to the pool when its last user leaves ([`Store::vacate`]).
    pub started_at: Option<Millis>,
}

/// A spare's own route on its shard: a target group with the instance registered, and a warm
/// rule (a condition no client matches) forwarding to it, so the load balancer health-checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmRoute {
    pub shard: Option<String>,
    pub listener_arn: Option<String>,
    pub priority: Option<u32>,
    pub target_group_arn: Option<String>,
    pub rule_arn: Option<String>,
}

impl WarmRoute {
    /// Whether anything of it was recorded (then something may exist in AWS).
    pub fn is_empty(&self) -> bool {
        *self == WarmRoute::default()
    }

    /// Whether the target group and the rule both exist: a claim can take it.
    pub fn is_complete(&self) -> bool {
        self.shard.is_some()
            && self.listener_arn.is_some()
            && self.priority.is_some()
            && self.target_group_arn.is_some()
            && self.rule_arn.is_some()
    }
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
            probed_at: None,
            warm: WarmRoute::default(),
            blank_volume_id: None,
            launch_template: None,
            image: None,
            started_at: None,
        }
    }
}

/// The whole ledger, oldest first (also the reconciler's snapshot, `generations.rs`).
pub(super) const SELECT_ALL: &str = "SELECT * FROM instances ORDER BY launched_at, instance_id";

/// An upsert of a whole ledger row that, for an existing row, sets `$update` (the columns
/// after `DO UPDATE SET`).
macro_rules! instance_row {
    ($update:literal, $instance:expr) => {
        sqlx::query(concat!(
            "INSERT INTO instances (instance_id, tier, status, arn, instance_type,
                availability_zone, private_ip, launched_at, status_since, probe_command_id,
                probe_sent_at, probe_failed_at, probe_failures, last_error, missed_observations,
                blank_volume_id, launch_template)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (instance_id) DO UPDATE SET ",
            $update
        ))
        .bind(&$instance.instance_id.0)
        .bind(&$instance.tier)
        .bind($instance.status.as_str())
        .bind(&$instance.arn)
        .bind(&$instance.instance_type)
        .bind(&$instance.availability_zone)
        .bind(&$instance.private_ip)
        .bind($instance.launched_at)
        .bind($instance.status_since)
        .bind(&$instance.probe_command_id)
        .bind($instance.probe_sent_at)
        .bind($instance.probe_failed_at)
        .bind(i64::from($instance.probe_failures))
        .bind(&$instance.last_error)
        .bind(i64::from($instance.missed_observations))
        .bind(&$instance.blank_volume_id)
        .bind(&$instance.launch_template)
    };
}

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
            instance_row!(
                "tier = excluded.tier, status = excluded.status,
                arn = excluded.arn, instance_type = excluded.instance_type,
                availability_zone = excluded.availability_zone, private_ip = excluded.private_ip,
                launched_at = excluded.launched_at, status_since = excluded.status_since,
                probe_command_id = excluded.probe_command_id, probe_sent_at = excluded.probe_sent_at,
                probe_failed_at = excluded.probe_failed_at, probe_failures = excluded.probe_failures,
                last_error = excluded.last_error,
                missed_observations = excluded.missed_observations,
                blank_volume_id = excluded.blank_volume_id",
                instance
            )
        );
        Ok(())
    }

    /// Merges what a listing says of an instance into the ledger: a new row whole, an existing
    /// one only in the columns the listing reports (an action in flight may be changing the
    /// rest, `reconcile::execute`).
    pub async fn observe_instance(&self, instance: &InstanceRecord) -> StoreResult<()> {
        execute!(
            self,
            instance_row!(
                "arn = excluded.arn, instance_type = excluded.instance_type,
                availability_zone = excluded.availability_zone, private_ip = excluded.private_ip,
                missed_observations = excluded.missed_observations,
                blank_volume_id = excluded.blank_volume_id",
                instance
            )
        );
        Ok(())
    }

    /// Changes an instance's status only if it is still `from`. Returns whether it applied.
    /// An instance that goes back to `initializing` loses its probe mark: it is probed afresh.
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
                "UPDATE instances SET status = $1, status_since = $2, probe_command_id = NULL,
                    probed_at = CASE WHEN $1 = 'initializing' THEN NULL ELSE probed_at END
                 WHERE instance_id = $3 AND status = $4",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(&instance.0)
            .bind(from.as_str())
        );
        Ok(changed == 1)
    }

    pub async fn delete_instance(&self, instance: &InstanceId) -> StoreResult<bool> {
        // Never the row of an instance a user holds or moves to: a plan from an older snapshot
        // (a quick claim took the instance since) must not forget it.
        let done = execute!(
            self,
            sqlx::query(
                "DELETE FROM instances WHERE instance_id = $1
                 AND NOT EXISTS (SELECT 1 FROM users
                                 WHERE instance_id = $1 OR move_instance_id = $1)"
            )
            .bind(&instance.0)
        );
        if done > 0 {
            // Its slots' wipes went with it.
            execute!(
                self,
                sqlx::query("DELETE FROM slot_wipes WHERE instance_id = $1").bind(&instance.0)
            );
        }
        Ok(done > 0)
    }

    /// Records that the instance passed its readiness probe (it stays `initializing` until it
    /// is wired). False if it is no longer `initializing`.
    pub async fn mark_probed(&self, instance: &InstanceId, now: Millis) -> StoreResult<bool> {
        let done = execute!(
            self,
            sqlx::query(
                "UPDATE instances SET probed_at = $2, probe_command_id = NULL
                 WHERE instance_id = $1 AND status = 'initializing'",
            )
            .bind(&instance.0)
            .bind(now)
        );
        Ok(done == 1)
    }

    /// Records a spare's warm route as it is built. Only while the instance is a spare
    /// (`initializing` or `available`): false once a claim took it or it is retiring, and then
    /// the caller removes what it has just created.
    pub async fn set_warm_route(
        &self,
        instance: &InstanceId,
        warm: &WarmRoute,
    ) -> StoreResult<bool> {
        let result = on_pool!(self, |pool| sqlx::query(
            "UPDATE instances SET warm_shard = $2, warm_listener_arn = $3, warm_priority = $4,
                warm_target_group_arn = $5, warm_rule_arn = $6
             WHERE instance_id = $1 AND status IN ('initializing', 'available')",
        )
        .bind(&instance.0)
        .bind(&warm.shard)
        .bind(&warm.listener_arn)
        .bind(warm.priority.map(i64::from))
        .bind(&warm.target_group_arn)
        .bind(&warm.rule_arn)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        match result {
            Ok(done) => Ok(done == 1),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("the warm priority of {instance} is taken"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets a spare's warm route once its rule and target group are deleted.
    pub async fn clear_warm_route(&self, instance: &InstanceId) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
                "UPDATE instances SET warm_shard = NULL, warm_listener_arn = NULL,
                    warm_priority = NULL, warm_target_group_arn = NULL, warm_rule_arn = NULL
                 WHERE instance_id = $1",
            )
            .bind(&instance.0)
        );
        Ok(())
    }

    /// The spares wired on each shard (their warm routes count against its capacity).
    pub async fn warm_routes_per_shard(&self) -> StoreResult<Vec<(String, i64)>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT warm_shard, COUNT(*) AS n FROM instances
                 WHERE warm_shard IS NOT NULL GROUP BY warm_shard",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>("warm_shard")?, r.try_get("n")?)))
                .collect()
        })
    }

    /// Records the launch template an instance came from, unless one is recorded (a launch's
    /// instances that a listing adopted before the launch was recorded).
    pub async fn note_launch_template(
        &self,
        instance: &InstanceId,
        launch_template: &str,
    ) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
                "UPDATE instances SET launch_template = $2
                 WHERE instance_id = $1 AND launch_template IS NULL"
            )
            .bind(&instance.0)
            .bind(launch_template)
        );
        Ok(())
    }

    /// Records the image reference an instance's probe or container is pulling.
    pub async fn set_instance_image(&self, instance: &InstanceId, image: &str) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query("UPDATE instances SET image = $2 WHERE instance_id = $1")
                .bind(&instance.0)
                .bind(image)
        );
        Ok(())
    }

    /// Records that `user`'s start, pulling `image`, is about to reach `instance` (its
    /// `started_at`, once), and the image, unless an earlier start reached it while another
    /// user still holds it (a shared instance): the instance then keeps the image its earlier
    /// users run, so an `outdated` drain still finds them (a move empties the whole instance).
    /// One statement, so of two starts at once the first to lock the row is the earlier.
    pub async fn set_start_image(
        &self,
        instance: &InstanceId,
        image: &str,
        user: &crate::model::UserId,
        now: Millis,
    ) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
                "UPDATE instances SET started_at = COALESCE(started_at, $4),
                    image = CASE WHEN started_at IS NULL OR image IS NULL THEN $2
                                 WHEN EXISTS (SELECT 1 FROM users WHERE user_id <> $3
                                     AND (instance_id = $1 OR move_instance_id = $1)) THEN image
                                 ELSE $2 END
                 WHERE instance_id = $1",
            )
            .bind(&instance.0)
            .bind(image)
            .bind(user.as_str())
            .bind(now)
        );
        Ok(())
    }

    /// Marks an instance for recycling; a request already standing keeps its time (a user who
    /// gave up its move since is not asked again by a repeat: a failed wipe asks every pass).
    /// False if it is unknown or already terminating.
    pub async fn request_recycle(&self, instance: &InstanceId, now: Millis) -> StoreResult<bool> {
        let done = execute!(
            self,
            sqlx::query(
                "UPDATE instances SET recycle_requested_at = COALESCE(recycle_requested_at, $2)
                 WHERE instance_id = $1 AND status <> 'terminating'",
            )
            .bind(&instance.0)
            .bind(now)
        );
        Ok(done > 0)
    }

    /// On-call's recycle: a new request, which asks again the users there who gave up a move
    /// (their `move_abandoned_at` is cleared in the same transaction, so no two clocks are
    /// compared). False if the instance is unknown or already terminating.
    pub async fn recycle_again(&self, instance: &InstanceId, now: Millis) -> StoreResult<bool> {
        macro_rules! recycle {
            ($tx:ident) => {{
                let done = sqlx::query(
                    "UPDATE instances SET recycle_requested_at = $2
                     WHERE instance_id = $1 AND status <> 'terminating'",
                )
                .bind(&instance.0)
                .bind(now)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "UPDATE users SET move_abandoned_at = NULL, version = version + 1
                     WHERE instance_id = $1 AND move_abandoned_at IS NOT NULL",
                )
                .bind(&instance.0)
                .execute(&mut *$tx)
                .await?;
                $tx.commit().await?;
                done
            }};
        }
        let done = match &self.pool {
            super::Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                recycle!(tx)
            }
            super::Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                recycle!(tx)
            }
        };
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

impl InstanceRecord {
    /// What a drain's selector matches this instance by; `versions` is what its tier runs now
    /// (None for a tier no longer configured: nothing to be outdated against).
    pub fn drain_candidate(
        &self,
        versions: Option<&crate::model::TierVersions>,
    ) -> crate::model::DrainCandidate<'_> {
        crate::model::DrainCandidate {
            id: &self.instance_id,
            tier: &self.tier,
            instance_type: self.instance_type.as_deref(),
            zone: self.availability_zone.as_deref(),
            launched_at: self.launched_at,
            outdated: versions.is_some_and(|v| {
                v.outdated(self.launch_template.as_deref(), self.image.as_deref())
            }),
        }
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
    probed_at: Option<Millis>,
    warm_shard: Option<String>,
    warm_listener_arn: Option<String>,
    warm_priority: Option<i64>,
    warm_target_group_arn: Option<String>,
    warm_rule_arn: Option<String>,
    blank_volume_id: Option<String>,
    launch_template: Option<String>,
    image: Option<String>,
    started_at: Option<Millis>,
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
            probed_at: row.probed_at,
            warm: WarmRoute {
                shard: row.warm_shard,
                listener_arn: row.warm_listener_arn,
                priority: row.warm_priority.map(|p| p as u32),
                target_group_arn: row.warm_target_group_arn,
                rule_arn: row.warm_rule_arn,
            },
            blank_volume_id: row.blank_volume_id,
            launch_template: row.launch_template,
            image: row.image,
            started_at: row.started_at,
        })
    }
}
