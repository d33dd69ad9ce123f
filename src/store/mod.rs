//! The store: desired state (users), the instance ledger, the journal and the interruption
//! notices, in SQLite via sqlx.
//!
//! Owns: all SQL. Plain async functions returning domain types. Must not: call the cloud or
//! hold a secret value (only secret ARNs are stored).
//!
//! Concurrency: the API and the reconciler both write user rows. Every row carries a `version`;
//! the reconciler writes with `update_user`, which only applies if nobody changed the row since it
//! was read, so a DELETE that lands mid-claim is never overwritten. The one cross-row invariant
//! (an instance serves at most one user) is enforced by `assign`'s transaction and by the unique
//! index on `users.instance_id`.

use crate::interruptions::{InterruptionNotice, NoticeKind};
use crate::model::{ClaimStep, InstanceId, InstanceStatus, Millis, MoveStep, UserId, UserState};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("running migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A user's row: desired state plus the claim's journal state.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user_id: UserId,
    pub tier: String,
    pub route: String,
    pub state: UserState,
    pub secret_arn: Option<String>,
    pub instance_id: Option<InstanceId>,
    pub claim_step: Option<ClaimStep>,
    pub command_id: Option<String>,
    pub command_sent_at: Option<Millis>,
    pub target_group_arn: Option<String>,
    pub listener_arn: Option<String>,
    pub rule_priority: Option<u32>,
    pub rule_arn: Option<String>,
    /// An undo in progress: "rollback" or "recover".
    pub teardown: Option<String>,
    /// A move in progress (state `migrating`): the new instance, once assigned, and its step.
    pub move_instance_id: Option<InstanceId>,
    pub move_step: Option<MoveStep>,
    pub move_command_id: Option<String>,
    pub move_command_sent_at: Option<Millis>,
    /// Why: `interruption`, `state_change`, `rebalance` or `recycle`.
    pub move_reason: Option<String>,
    /// When the cause happened (an interruption warning's event time, a recycle request).
    pub move_started_at: Option<Millis>,
    /// Moves abandoned for this cause (each on a fresh instance).
    pub move_attempts: u32,
    pub attempts: u32,
    pub error: Option<String>,
    pub requested_at: Millis,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub claimed_at: Option<Millis>,
    pub ready_at: Option<Millis>,
    pub version: i64,
}

impl UserRecord {
    /// A freshly requested user, queued.
    pub fn queued(
        user_id: UserId,
        tier: String,
        route: String,
        secret_arn: String,
        now: Millis,
    ) -> UserRecord {
        UserRecord {
            user_id,
            tier,
            route,
            state: UserState::Queued,
            secret_arn: Some(secret_arn),
            instance_id: None,
            claim_step: None,
            command_id: None,
            command_sent_at: None,
            target_group_arn: None,
            listener_arn: None,
            rule_priority: None,
            rule_arn: None,
            teardown: None,
            move_instance_id: None,
            move_step: None,
            move_command_id: None,
            move_command_sent_at: None,
            move_reason: None,
            move_started_at: None,
            move_attempts: 0,
            attempts: 0,
            error: None,
            requested_at: now,
            created_at: now,
            updated_at: now,
            claimed_at: None,
            ready_at: None,
            version: 0,
        }
    }
}

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

/// One journal entry (also an event).
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct JournalEntry {
    pub id: i64,
    pub at: Millis,
    pub kind: String,
    pub user_id: Option<String>,
    pub instance_id: Option<String>,
    pub message: String,
}

/// On-call's sizing of a tier; `None` keeps the configured value.
#[derive(Debug, Clone, PartialEq)]
pub struct TierOverride {
    pub tier: String,
    pub spare_count: Option<u32>,
    pub max_instances: Option<u32>,
    /// No launches while paused; claims go on from the spares there are.
    pub paused: bool,
    pub updated_at: Millis,
    pub updated_by: String,
}

/// One admin action: who did what to which target, when, and how it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub outcome: String,
}

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

/// An interruption notice as stored: the event, when it arrived, and whether the reconciler has
/// acted on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotice {
    pub notice: InterruptionNotice,
    pub received_at: Millis,
    pub handled_at: Option<Millis>,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the database at `url` and runs the embedded migrations.
    /// `sqlite::memory:` gives a private in-memory database (one connection).
    pub async fn open(url: &str) -> StoreResult<Store> {
        let in_memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if in_memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists per connection, so it must be exactly one.
            .max_connections(if in_memory { 1 } else { 8 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Whether a statement or transaction is in flight (a connection is checked out). SQLite
    /// runs on sqlx's worker threads, outside tokio's view: the simulated-time tests hold their
    /// paused clock while this is true, so time does not jump during a database call.
    pub fn busy(&self) -> bool {
        (self.pool.size() as usize) > self.pool.num_idle()
    }

    /// Closes the pool, waiting for statements in flight to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // --- users -----------------------------------------------------------------------------

    pub async fn get_user(&self, user: &UserId) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY requested_at, user_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Inserts a new user. An existing user id is a `Conflict` (the caller re-reads it).
    pub async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO users (user_id, tier, route, state, secret_arn, attempts, requested_at,
                                created_at, updated_at, version)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, 0)",
        )
        .bind(user.user_id.as_str())
        .bind(&user.tier)
        .bind(&user.route)
        .bind(user.state.as_str())
        .bind(&user.secret_arn)
        .bind(user.requested_at)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("user {} already exists", user.user_id),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes every mutable column of `user` if the row still has `user.version`; bumps the
    /// version in `user` on success. Returns false (and writes nothing) if the row changed.
    pub async fn update_user(&self, user: &mut UserRecord) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE users SET state = $1, secret_arn = $2, instance_id = $3, claim_step = $4,
                command_id = $5, command_sent_at = $6, target_group_arn = $7, listener_arn = $8,
                rule_priority = $9, rule_arn = $10, attempts = $11, error = $12,
                requested_at = $13, updated_at = $14, claimed_at = $15, ready_at = $16,
                teardown = $17, move_instance_id = $20, move_step = $21, move_command_id = $22,
                move_command_sent_at = $23, move_reason = $24, move_started_at = $25,
                move_attempts = $26, version = version + 1
             WHERE user_id = $18 AND version = $19",
        )
        .bind(user.state.as_str())
        .bind(&user.secret_arn)
        .bind(user.instance_id.as_ref().map(|i| i.0.as_str()))
        .bind(user.claim_step.map(ClaimStep::as_str))
        .bind(&user.command_id)
        .bind(user.command_sent_at)
        .bind(&user.target_group_arn)
        .bind(&user.listener_arn)
        .bind(user.rule_priority.map(i64::from))
        .bind(&user.rule_arn)
        .bind(i64::from(user.attempts))
        .bind(&user.error)
        .bind(user.requested_at)
        .bind(user.updated_at)
        .bind(user.claimed_at)
        .bind(user.ready_at)
        .bind(&user.teardown)
        .bind(user.user_id.as_str())
        .bind(user.version)
        .bind(user.move_instance_id.as_ref().map(|i| i.0.as_str()))
        .bind(user.move_step.map(MoveStep::as_str))
        .bind(&user.move_command_id)
        .bind(user.move_command_sent_at)
        .bind(&user.move_reason)
        .bind(user.move_started_at)
        .bind(i64::from(user.move_attempts))
        .execute(&self.pool)
        .await;
        let result = match result {
            Ok(result) => result,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "user {}: {}",
                    user.user_id,
                    e.message()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let applied = result.rows_affected() == 1;
        if applied {
            user.version += 1;
        }
        Ok(applied)
    }

    /// Marks a user deleting, whatever it was doing. Returns the updated row, or None if there is
    /// no such user.
    pub async fn mark_deleting(
        &self,
        user: &UserId,
        now: Millis,
    ) -> StoreResult<Option<UserRecord>> {
        sqlx::query(
            "UPDATE users SET state = 'deleting', updated_at = $1, version = version + 1
             WHERE user_id = $2 AND state <> 'deleting'",
        )
        .bind(now)
        .bind(user.as_str())
        .execute(&self.pool)
        .await?;
        self.get_user(user).await
    }

    /// Puts a failed user back in the queue (a new PUT retries). Returns whether it applied.
    pub async fn requeue_failed(&self, user: &UserId, now: Millis) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE users SET state = 'queued', attempts = 0, error = NULL, requested_at = $1,
                updated_at = $1, version = version + 1
             WHERE user_id = $2 AND state = 'failed'",
        )
        .bind(now)
        .bind(user.as_str())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Deletes a user row if it still has `version`.
    pub async fn delete_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM users WHERE user_id = $1 AND version = $2")
            .bind(user.user_id.as_str())
            .bind(user.version)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Atomically gives an `available` instance to a `queued` user: both change or neither does.
    /// Returns false if either has moved on (another pass, a DELETE) in the meantime.
    pub async fn assign(
        &self,
        user: &UserId,
        instance: &InstanceId,
        now: Millis,
    ) -> StoreResult<bool> {
        self.take_spare(
            "UPDATE users SET state = 'provisioning', instance_id = $1, claim_step = 'assigned',
                command_id = NULL, command_sent_at = NULL, error = NULL, claimed_at = $2,
                updated_at = $2, version = version + 1
             WHERE user_id = $3 AND state = 'queued' AND instance_id IS NULL",
            user,
            instance,
            now,
        )
        .await
    }

    /// Gives a migrating user `instance` (a spare) as its move target, guarded like `assign`.
    pub async fn assign_move(
        &self,
        user: &UserId,
        instance: &InstanceId,
        now: Millis,
    ) -> StoreResult<bool> {
        self.take_spare(
            "UPDATE users SET move_instance_id = $1, move_step = 'assigned',
                move_command_id = NULL, move_command_sent_at = NULL, updated_at = $2,
                version = version + 1
             WHERE user_id = $3 AND state = 'migrating' AND move_instance_id IS NULL",
            user,
            instance,
            now,
        )
        .await
    }

    /// One transaction: the spare goes `available` → `assigned` and `user_update` ($1 the
    /// instance, $2 now, $3 the user) hands it to the user; false, with nothing changed, if
    /// either row was not in the expected state.
    async fn take_spare(
        &self,
        user_update: &'static str,
        user: &UserId,
        instance: &InstanceId,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query(
            "UPDATE instances SET status = 'assigned', status_since = $1
             WHERE instance_id = $2 AND status = 'available'",
        )
        .bind(now)
        .bind(&instance.0)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let claimed = sqlx::query(user_update)
            .bind(&instance.0)
            .bind(now)
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Rule priorities in use on a listener, as recorded in the store.
    pub async fn used_priorities(&self, listener_arn: &str) -> StoreResult<Vec<u32>> {
        let rows = sqlx::query(
            "SELECT rule_priority FROM users WHERE listener_arn = $1 AND rule_priority IS NOT NULL",
        )
        .bind(listener_arn)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("rule_priority")? as u32))
            .collect()
    }

    /// How many users each listener carries, to shard new users onto the least loaded.
    pub async fn users_per_listener(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT listener_arn, COUNT(*) AS n FROM users WHERE listener_arn IS NOT NULL
             GROUP BY listener_arn",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("listener_arn")?, r.try_get("n")?)))
            .collect()
    }

    // --- instances -------------------------------------------------------------------------

    pub async fn list_instances(&self) -> StoreResult<Vec<InstanceRecord>> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY launched_at, instance_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(instance_from_row).collect()
    }

    pub async fn get_instance(&self, instance: &InstanceId) -> StoreResult<Option<InstanceRecord>> {
        let row = sqlx::query("SELECT * FROM instances WHERE instance_id = $1")
            .bind(&instance.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(instance_from_row).transpose()
    }

    /// Inserts or replaces a ledger row.
    pub async fn put_instance(&self, instance: &InstanceRecord) -> StoreResult<()> {
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
        .execute(&self.pool)
        .await?;
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
        let result = sqlx::query(
            "UPDATE instances SET status = $1, status_since = $2, probe_command_id = NULL
             WHERE instance_id = $3 AND status = $4",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(&instance.0)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn delete_instance(&self, instance: &InstanceId) -> StoreResult<()> {
        sqlx::query("DELETE FROM instances WHERE instance_id = $1")
            .bind(&instance.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks an instance for recycling. False if it is unknown or already terminating.
    pub async fn request_recycle(&self, instance: &InstanceId, now: Millis) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE instances SET recycle_requested_at = $2
             WHERE instance_id = $1 AND status <> 'terminating'",
        )
        .bind(&instance.0)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Clears a recycle request once a move has taken it on (so an abandoned move is not
    /// started again by the same request).
    pub async fn clear_recycle(&self, instance: &InstanceId) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET recycle_requested_at = NULL WHERE instance_id = $1")
            .bind(&instance.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- admin: tier overrides and the audit log -------------------------------------------

    pub async fn tier_overrides(&self) -> StoreResult<Vec<TierOverride>> {
        let rows = sqlx::query(
            "SELECT tier, spare_count, max_instances, paused, updated_at, updated_by
             FROM tier_overrides ORDER BY tier",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TierOverride {
                    tier: r.try_get("tier")?,
                    spare_count: r
                        .try_get::<Option<i64>, _>("spare_count")?
                        .map(|n| n as u32),
                    max_instances: r
                        .try_get::<Option<i64>, _>("max_instances")?
                        .map(|n| n as u32),
                    paused: r.try_get("paused")?,
                    updated_at: r.try_get("updated_at")?,
                    updated_by: r.try_get("updated_by")?,
                })
            })
            .collect()
    }

    pub async fn put_tier_override(&self, o: &TierOverride) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tier_overrides (tier, spare_count, max_instances, paused, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tier) DO UPDATE SET spare_count = excluded.spare_count,
                max_instances = excluded.max_instances, paused = excluded.paused,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(&o.tier)
        .bind(o.spare_count.map(i64::from))
        .bind(o.max_instances.map(i64::from))
        .bind(o.paused)
        .bind(o.updated_at)
        .bind(&o.updated_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Appends one admin action to the audit log.
    pub async fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail, outcome)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry.at)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.detail)
        .bind(&entry.outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        Ok(sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at, actor, action, target, detail, outcome FROM audit_log
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    // --- launches in flight ----------------------------------------------------------------

    /// Records a launch before RunInstances is called (see `migrations/sqlite/0002_launches.sql`).
    pub async fn insert_launch(&self, launch: &PendingLaunch) -> StoreResult<()> {
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Launches whose outcome is not in the ledger yet, oldest first.
    pub async fn list_launches(&self) -> StoreResult<Vec<PendingLaunch>> {
        let rows = sqlx::query(
            "SELECT client_token, tier, instance_type, subnet_id, count, spot, created_at, attempts, last_error
             FROM launches ORDER BY created_at, client_token",
        )
        .fetch_all(&self.pool)
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
    }

    /// Notes a failed attempt of a launch that will be redone.
    pub async fn launch_failed(&self, client_token: &str, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE launches SET attempts = attempts + 1, last_error = $2 WHERE client_token = $1",
        )
        .bind(client_token)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_launch(&self, client_token: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM launches WHERE client_token = $1")
            .bind(client_token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- interruption notices (see `interruptions.rs` and migration 0004) -------------------

    /// Records a notice unless one with the same event id exists. Returns whether it was new: a
    /// redelivered message is a duplicate and changes nothing (the first copy's `received_at`
    /// and `handled_at` stay).
    pub async fn insert_notice(
        &self,
        notice: &InterruptionNotice,
        received_at: Millis,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO interruption_notices (event_id, instance_id, kind, state, event_time, received_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&notice.event_id)
        .bind(&notice.instance_id.0)
        .bind(notice.kind.as_str())
        .bind(notice.kind.state().map(|state| state.as_str()))
        .bind(notice.event_time)
        .bind(received_at)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Notices the reconciler has not acted on, oldest event first (by the event's own time, not
    /// by arrival: delivery may be out of order).
    pub async fn list_unhandled_notices(&self) -> StoreResult<Vec<StoredNotice>> {
        let rows = sqlx::query(
            "SELECT event_id, instance_id, kind, state, event_time, received_at, handled_at
             FROM interruption_notices WHERE handled_at IS NULL
             ORDER BY event_time, received_at, event_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notice_from_row).collect()
    }

    /// Marks a notice handled. Returns false if it is unknown or was handled already (the first
    /// `handled_at` stays).
    pub async fn mark_notice_handled(&self, event_id: &str, now: Millis) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE interruption_notices SET handled_at = $2
             WHERE event_id = $1 AND handled_at IS NULL",
        )
        .bind(event_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Deletes the notices received before `received_before`, handled or not. Returns how many.
    /// Only safe once the queue can no longer redeliver them (its retention is shorter).
    pub async fn prune_notices(&self, received_before: Millis) -> StoreResult<u64> {
        let result = sqlx::query("DELETE FROM interruption_notices WHERE received_at < $1")
            .bind(received_before)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    // --- journal ---------------------------------------------------------------------------

    pub async fn record(
        &self,
        at: Millis,
        kind: &str,
        user: Option<&UserId>,
        instance: Option<&InstanceId>,
        message: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO journal (at, kind, user_id, instance_id, message) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(at)
        .bind(kind)
        .bind(user.map(UserId::as_str))
        .bind(instance.map(|i| i.0.as_str()))
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Journal entries after `after_id`, oldest first, at most `limit`.
    pub async fn journal_since(&self, after_id: i64, limit: i64) -> StoreResult<Vec<JournalEntry>> {
        Ok(sqlx::query_as::<_, JournalEntry>(
            "SELECT id, at, kind, user_id, instance_id, message FROM journal
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

fn user_from_row(row: &SqliteRow) -> StoreResult<UserRecord> {
    let user_raw: String = row.try_get("user_id")?;
    let user_id = UserId::parse(&user_raw)
        .map_err(|e| StoreError::Corrupt(format!("user {user_raw:?}: {e}")))?;
    let state_raw: String = row.try_get("state")?;
    let state = UserState::parse(&state_raw)
        .ok_or_else(|| StoreError::Corrupt(format!("user {user_raw}: state {state_raw:?}")))?;
    let step_raw: Option<String> = row.try_get("claim_step")?;
    let claim_step =
        match step_raw {
            None => None,
            Some(raw) => Some(ClaimStep::parse(&raw).ok_or_else(|| {
                StoreError::Corrupt(format!("user {user_raw}: claim step {raw:?}"))
            })?),
        };
    Ok(UserRecord {
        user_id,
        tier: row.try_get("tier")?,
        route: row.try_get("route")?,
        state,
        secret_arn: row.try_get("secret_arn")?,
        instance_id: row
            .try_get::<Option<String>, _>("instance_id")?
            .map(InstanceId),
        claim_step,
        command_id: row.try_get("command_id")?,
        command_sent_at: row.try_get("command_sent_at")?,
        target_group_arn: row.try_get("target_group_arn")?,
        listener_arn: row.try_get("listener_arn")?,
        rule_priority: row
            .try_get::<Option<i64>, _>("rule_priority")?
            .map(|p| p as u32),
        rule_arn: row.try_get("rule_arn")?,
        teardown: row.try_get("teardown")?,
        move_instance_id: row
            .try_get::<Option<String>, _>("move_instance_id")?
            .map(InstanceId),
        move_step: match row.try_get::<Option<String>, _>("move_step")? {
            None => None,
            Some(raw) => Some(MoveStep::parse(&raw).ok_or_else(|| {
                StoreError::Corrupt(format!("user {user_raw}: move step {raw:?}"))
            })?),
        },
        move_command_id: row.try_get("move_command_id")?,
        move_command_sent_at: row.try_get("move_command_sent_at")?,
        move_reason: row.try_get("move_reason")?,
        move_started_at: row.try_get("move_started_at")?,
        move_attempts: row.try_get::<i64, _>("move_attempts")? as u32,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        error: row.try_get("error")?,
        requested_at: row.try_get("requested_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        claimed_at: row.try_get("claimed_at")?,
        ready_at: row.try_get("ready_at")?,
        version: row.try_get("version")?,
    })
}

fn notice_from_row(row: &SqliteRow) -> StoreResult<StoredNotice> {
    let event_id: String = row.try_get("event_id")?;
    let kind_raw: String = row.try_get("kind")?;
    let state_raw: Option<String> = row.try_get("state")?;
    let kind = NoticeKind::from_parts(&kind_raw, state_raw.as_deref()).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "interruption notice {event_id}: kind {kind_raw:?} with state {state_raw:?}"
        ))
    })?;
    Ok(StoredNotice {
        notice: InterruptionNotice {
            event_id,
            kind,
            instance_id: InstanceId(row.try_get("instance_id")?),
            event_time: row.try_get("event_time")?,
        },
        received_at: row.try_get("received_at")?,
        handled_at: row.try_get("handled_at")?,
    })
}

fn instance_from_row(row: &SqliteRow) -> StoreResult<InstanceRecord> {
    let id: String = row.try_get("instance_id")?;
    let status_raw: String = row.try_get("status")?;
    let status = InstanceStatus::parse(&status_raw)
        .ok_or_else(|| StoreError::Corrupt(format!("instance {id}: status {status_raw:?}")))?;
    Ok(InstanceRecord {
        instance_id: InstanceId(id),
        tier: row.try_get("tier")?,
        status,
        arn: row.try_get("arn")?,
        instance_type: row.try_get("instance_type")?,
        availability_zone: row.try_get("availability_zone")?,
        private_ip: row.try_get("private_ip")?,
        launched_at: row.try_get("launched_at")?,
        status_since: row.try_get("status_since")?,
        probe_command_id: row.try_get("probe_command_id")?,
        probe_sent_at: row.try_get("probe_sent_at")?,
        probe_failed_at: row.try_get("probe_failed_at")?,
        probe_failures: row.try_get::<i64, _>("probe_failures")? as u32,
        last_error: row.try_get("last_error")?,
        missed_observations: row.try_get::<i64, _>("missed_observations")? as u32,
        recycle_requested_at: row.try_get("recycle_requested_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Store {
        Store::open("sqlite::memory:").await.unwrap()
    }

    fn user(id: &str, route: &str) -> UserRecord {
        UserRecord::queued(
            UserId::parse(id).unwrap(),
            "default".into(),
            route.into(),
            "arn:secret".into(),
            10,
        )
    }

    fn available(id: &str) -> InstanceRecord {
        InstanceRecord {
            instance_id: InstanceId(id.into()),
            tier: "default".into(),
            status: InstanceStatus::Available,
            arn: None,
            instance_type: Some("t3.small".into()),
            availability_zone: None,
            private_ip: None,
            launched_at: 1,
            status_since: 1,
            probe_command_id: None,
            probe_sent_at: None,
            probe_failed_at: None,
            probe_failures: 0,
            last_error: None,
            missed_observations: 0,
            recycle_requested_at: None,
        }
    }

    #[tokio::test]
    async fn users_round_trip_and_conflict_on_a_second_insert() {
        let store = store().await;
        let alice = user("alice", "r1");
        store.insert_user(&alice).await.unwrap();
        assert_eq!(
            store.get_user(&alice.user_id).await.unwrap(),
            Some(alice.clone())
        );
        assert!(matches!(
            store.insert_user(&alice).await,
            Err(StoreError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn an_instance_is_assigned_to_exactly_one_user() {
        let store = store().await;
        store.insert_user(&user("alice", "r1")).await.unwrap();
        store.insert_user(&user("bob", "r2")).await.unwrap();
        store.put_instance(&available("i-1")).await.unwrap();
        let instance = InstanceId("i-1".into());
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        assert!(store.assign(&alice, &instance, 20).await.unwrap());
        assert!(!store.assign(&bob, &instance, 20).await.unwrap());
        let bob_row = store.get_user(&bob).await.unwrap().unwrap();
        assert_eq!(bob_row.state, UserState::Queued);
        assert_eq!(bob_row.instance_id, None);
        let alice_row = store.get_user(&alice).await.unwrap().unwrap();
        assert_eq!(alice_row.state, UserState::Provisioning);
        assert_eq!(alice_row.claim_step, Some(ClaimStep::Assigned));
        let ledger = store.get_instance(&instance).await.unwrap().unwrap();
        assert_eq!(ledger.status, InstanceStatus::Assigned);
    }

    #[tokio::test]
    async fn a_stale_update_never_overwrites_a_delete() {
        let store = store().await;
        store.insert_user(&user("alice", "r1")).await.unwrap();
        let alice = UserId::parse("alice").unwrap();
        let mut read_by_reconciler = store.get_user(&alice).await.unwrap().unwrap();
        store.mark_deleting(&alice, 30).await.unwrap();
        read_by_reconciler.state = UserState::Ready;
        assert!(!store.update_user(&mut read_by_reconciler).await.unwrap());
        let now = store.get_user(&alice).await.unwrap().unwrap();
        assert_eq!(now.state, UserState::Deleting);
    }

    #[tokio::test]
    async fn rule_priorities_are_unique_per_listener() {
        let store = store().await;
        for (id, route) in [("alice", "r1"), ("bob", "r2")] {
            store.insert_user(&user(id, route)).await.unwrap();
        }
        let mut alice = store
            .get_user(&UserId::parse("alice").unwrap())
            .await
            .unwrap()
            .unwrap();
        alice.listener_arn = Some("arn:l".into());
        alice.rule_priority = Some(7);
        assert!(store.update_user(&mut alice).await.unwrap());
        let mut bob = store
            .get_user(&UserId::parse("bob").unwrap())
            .await
            .unwrap()
            .unwrap();
        bob.listener_arn = Some("arn:l".into());
        bob.rule_priority = Some(7);
        assert!(store.update_user(&mut bob).await.is_err());
        assert_eq!(store.used_priorities("arn:l").await.unwrap(), vec![7]);
    }

    fn notice(event_id: &str, kind: NoticeKind, event_time: Millis) -> InterruptionNotice {
        InterruptionNotice {
            event_id: event_id.into(),
            kind,
            instance_id: InstanceId("i-0123456789abcdef0".into()),
            event_time,
        }
    }

    #[tokio::test]
    async fn a_notice_with_a_known_event_id_is_a_duplicate_and_changes_nothing() {
        let store = store().await;
        let warning = notice("ev-1", NoticeKind::SpotInterruptionWarning, 100);
        assert!(store.insert_notice(&warning, 1_000).await.unwrap());
        // A redelivery, even one that reads differently, keeps the first copy.
        let mut again = warning.clone();
        again.event_time = 999;
        assert!(!store.insert_notice(&again, 2_000).await.unwrap());
        let stored = store.list_unhandled_notices().await.unwrap();
        assert_eq!(
            stored,
            vec![StoredNotice {
                notice: warning.clone(),
                received_at: 1_000,
                handled_at: None,
            }]
        );
        // Still a duplicate once handled: it never comes back as work.
        assert!(store.mark_notice_handled("ev-1", 3_000).await.unwrap());
        assert!(!store.insert_notice(&warning, 4_000).await.unwrap());
        assert!(store.list_unhandled_notices().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unhandled_notices_are_listed_by_event_time_until_handled() {
        let store = store().await;
        let terminated = notice(
            "ev-3",
            NoticeKind::StateChange(crate::cloud::Lifecycle::Terminated),
            300,
        );
        let warning = notice("ev-2", NoticeKind::SpotInterruptionWarning, 200);
        let rebalance = notice("ev-1", NoticeKind::RebalanceRecommendation, 100);
        // Arrival order is not event order.
        for (n, arrived) in [(&terminated, 10), (&warning, 20), (&rebalance, 30)] {
            assert!(store.insert_notice(n, arrived).await.unwrap());
        }
        let ids = |list: Vec<StoredNotice>| {
            list.into_iter()
                .map(|s| s.notice.event_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(store.list_unhandled_notices().await.unwrap()),
            ["ev-1", "ev-2", "ev-3"]
        );
        assert!(store.mark_notice_handled("ev-2", 40).await.unwrap());
        assert!(!store.mark_notice_handled("ev-2", 50).await.unwrap());
        assert!(!store.mark_notice_handled("ev-unknown", 50).await.unwrap());
        let left = store.list_unhandled_notices().await.unwrap();
        assert_eq!(left[1].notice, terminated);
        assert_eq!(ids(left), ["ev-1", "ev-3"]);
    }

    #[tokio::test]
    async fn pruning_deletes_the_notices_received_before_the_cutoff() {
        let store = store().await;
        for (id, arrived) in [("ev-old", 10), ("ev-new", 100)] {
            let n = notice(id, NoticeKind::RebalanceRecommendation, arrived);
            store.insert_notice(&n, arrived).await.unwrap();
        }
        assert_eq!(store.prune_notices(50).await.unwrap(), 1);
        let left = store.list_unhandled_notices().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].notice.event_id, "ev-new");
    }

    #[tokio::test]
    async fn the_journal_lists_entries_in_order() {
        let store = store().await;
        let alice = UserId::parse("alice").unwrap();
        store
            .record(1, "claim.assigned", Some(&alice), None, "a")
            .await
            .unwrap();
        store
            .record(2, "claim.tagged", Some(&alice), None, "b")
            .await
            .unwrap();
        let entries = store.journal_since(0, 10).await.unwrap();
        assert_eq!(
            entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["claim.assigned", "claim.tagged"]
        );
        assert_eq!(
            store.journal_since(entries[0].id, 10).await.unwrap().len(),
            1
        );
    }
}
